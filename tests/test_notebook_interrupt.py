"""Interrupting the kernel while a ``%%workflow`` cell starts its run cancels the run.

In a notebook, "Interrupt kernel" is how a run is stopped; the KeyboardInterrupt may land
anywhere in the cell, not only while it follows the run.  Wherever it lands, the run is
cancelled, nothing it started is still running when the cell ends, the store shows it
cancelled, and the cell ends with the one-line ``WorkflowCancelled`` error.  Each case
raises the KeyboardInterrupt at one exact point (a patched step that first waits until the
run's tasks have started: no timing), in an IPython shell of its own process.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from pathlib import Path

import anyio
import pytest
from conftest import nbflow_threads_left

import nbflow as nf
from nbflow import workflow

sys.path.insert(0, str(Path(__file__).resolve().parent / "notebooks"))
import nbharness as h

pytestmark = pytest.mark.timeout(240)

SCRIPT = r'''
import json, sys, threading, time
from IPython.core.interactiveshell import InteractiveShell
import anyio
import nbflow as nf
from nbflow.core import events as ev
from nbflow.engine.run import Run
from nbflow.notebook.live import LiveView
from nbflow.notebook import magics
from nbflow.notebook.magics import load_ipython_extension
from nbflow.store.history import runs

where, flags = sys.argv[1], sys.argv[2]
started = threading.Event()

def interrupt_once(original, after_start):
    fired = []
    def patched(*a, **k):
        if fired:
            return original(*a, **k)
        fired.append(True)
        if after_start:
            original(*a, **k)
            assert started.wait(60), "the run's tasks never started"
        raise KeyboardInterrupt  # (what Python's SIGINT handler raises at that point)
    return patched

if where == "prepare":  # before the run exists
    magics.prepare = interrupt_once(magics.prepare, False)
elif where == "prepare-late":  # inside prepare, the run made and given its journal and cache
    import nbflow.locality
    nbflow.locality.attach = interrupt_once(nbflow.locality.attach, False)
elif where == "before-start":  # the run is prepared, its thread not started
    Run.start_in_thread = interrupt_once(Run.start_in_thread, False)
elif where == "thread-start":  # its thread started; launch() has not returned the run
    Run.start_in_thread = interrupt_once(Run.start_in_thread, True)
elif where == "view-open":  # launch() returned, the live view opens
    LiveView.open = interrupt_once(LiveView.open, True)

shell = InteractiveShell.instance()
load_ipython_extension(shell)  # (nbflow was imported before the shell existed)
shell.user_ns["started"] = started
shell.run_cell("import anyio, nbflow as nf")
shell.run_cell("@nf.task\nasync def forever(i):\n    started.set()\n    await anyio.sleep(60)\n"
               "    return i\n")
r = shell.run_cell(f"%%workflow interrupted --quiet {flags}\nout = [forever(1), forever(2)]\n")
err = r.error_in_exec
run = nf.last_run()
deadline = time.monotonic() + 30  # (a pool's idle threads end just after the run)
while time.monotonic() < deadline and any(t.name.startswith("nbflow-") for t in threading.enumerate()):
    time.sleep(0.05)
stored = runs("interrupted")
print(json.dumps({
    "error": type(err).__name__, "message": str(err),
    "status": run.status if run is not None and run.workflow.name == "interrupted" else None,
    "done": run is not None and run.done,
    "states": sorted(set(run.tasks["state"])) if run is not None else [],
    "threads": [t.name for t in threading.enumerate() if t.name.startswith("nbflow-")],
    "stored": list(stored["status"]), "stored_cancelled": [int(c) for c in stored["cancelled"]],
    "out": [type(x).__name__ for x in shell.user_ns.get("out", [])],
    "attached": sum(type(f).__name__ == "_Attach" for f in ev._global_subscribers),
}))
'''


def _interrupted_cell(where: str, flags: str = "") -> dict:
    res = subprocess.run([sys.executable, "-c", SCRIPT, where, flags], capture_output=True,
                         text=True, timeout=200)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(("where", "flags"), [
    ("prepare-late", ""),  # inside prepare once the run exists: it starts cancelled
    ("before-start", ""),  # the run is prepared, its thread not started: it starts cancelled
    ("thread-start", ""),  # as the run's thread starts, before launch() returns the run
    ("view-open", ""),  # the cell holds the run; before it follows it
    ("view-open", "--background"),  # before a background cell returns
])
def test_an_interrupt_as_the_cell_starts_its_run_cancels_it(where: str, flags: str) -> None:
    got = _interrupted_cell(where, flags)
    assert got["error"] == "WorkflowCancelled", got
    assert "was cancelled (kernel interrupted)" in got["message"]
    assert got["status"] == "cancelled" and got["done"]
    assert got["states"] == ["cancelled"]
    assert got["threads"] == []  # nothing it started is running
    assert got["stored"] == ["cancelled"] and got["stored_cancelled"] == [2]  # the dashboard's view
    assert got["out"] == ["Ref", "Ref"]  # names of unfinished tasks stay Refs, as after any cancelled run
    assert got["attached"] == 0


def test_an_interrupt_before_the_run_is_made_leaves_nothing() -> None:
    got = _interrupted_cell("prepare")
    assert got["error"] == "KeyboardInterrupt", got
    assert got["status"] is None and got["stored"] == []  # no run
    assert got["threads"] == []
    assert got["out"] == ["Ref", "Ref"]
    assert got["attached"] == 0  # the cell's subscribers were let go


@pytest.fixture
def python_sigint_handler():
    """Python's own SIGINT handler, whatever this process inherited (see test_scheduler)."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def test_a_ctrl_c_while_the_runs_thread_starts_is_raised_once_it_has(python_sigint_handler) -> None:
    # Thread.start waits for the new thread: a SIGINT landing there would leave a run thread
    # that nothing knows of yet.  Sent right there (before the real start, synchronously),
    # it is raised after the start, with the thread known, so the run is cancelled and
    # waited for.
    started = threading.Event()

    @nf.task
    async def forever():
        started.set()
        await anyio.sleep(60)

    with nf.Workflow("sigint-start") as wf:
        forever()
    run = workflow.prepare(wf, workflow.run_options(wf))
    real_start = run.start_in_thread

    def start_with_a_ctrl_c() -> None:
        signal.raise_signal(signal.SIGINT)  # (delivered to the handler before this returns)
        real_start()

    run.start_in_thread = start_with_a_ctrl_c  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        workflow.start_in_thread(run)
    assert run._thread is not None and run._thread.ident is not None  # started, then raised
    workflow.cancel_interrupted(run, lambda r: r.wait(raise_on_error=False))
    assert run.done and run.status == "cancelled"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # given back
    assert nbflow_threads_left() == []


def test_a_kernel_interrupted_before_the_cell_follows_its_run_cancels_it(tmp_path: Path) -> None:
    # A real kernel, a real interrupt (SIGINT from the kernel manager), landing while the
    # cell opens its view: held open there (once the run's tasks run) until the interrupt.
    opening = tmp_path / "opening"
    nb = h.notebook([
        f"""import anyio, pathlib, threading, time, nbflow as nf
from nbflow.notebook.live import LiveView
task_started, real_open = threading.Event(), LiveView.open
def held_open(self):
    task_started.wait(60)
    pathlib.Path({str(opening)!r}).touch()
    threading.Event().wait()  # (until the kernel is interrupted)
LiveView.open = held_open""",
        """@nf.task
async def forever(i):
    task_started.set()
    await anyio.sleep(60)
    return i""",
        """%%workflow opening
out = [forever(1), forever(2)]""",
        """LiveView.open = real_open
from nbflow.store.history import runs
run = nf.last_run()
deadline = time.monotonic() + 30  # (a pool's idle threads end just after the run)
while time.monotonic() < deadline and any(t.name.startswith("nbflow-") for t in threading.enumerate()):
    time.sleep(0.05)
print("status", run.status, sorted(set(run.tasks["state"])))
print("threads left", [t.name for t in threading.enumerate() if t.name.startswith("nbflow-")])
print("stored", list(runs("opening")["status"]))
print("out", [type(x).__name__ for x in out])
print("next", 6 * 7)""",
    ])
    c = h.client(nb, tmp_path)
    with c.setup_kernel(), h.evidence(c):  # (a hang fails with the kernel's threads)
        c.execute_cell(nb.cells[0], 0)
        c.execute_cell(nb.cells[1], 1)
        h.interrupt_when(c, nb, 2, opening, "the cell's opening of its view")
        c.execute_cell(nb.cells[3], 3)
    (err,) = h.errors(nb.cells[2])
    assert err.ename == "WorkflowCancelled"
    assert "was cancelled (kernel interrupted)" in err.evalue
    text = h.text(nb.cells[3])
    assert "status cancelled ['cancelled']" in text
    assert "threads left []" in text
    assert "stored ['cancelled']" in text
    assert "out ['Ref', 'Ref']" in text
    assert "next 42" in text
