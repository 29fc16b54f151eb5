"""%%workflow in a real kernel: notebooks executed with nbclient (and papermill).

Each notebook in tests/notebooks/ asserts its own behaviour in its cells; these tests run
them and check what they printed, displayed and raised.  The interrupt test drives a kernel
by hand: it interrupts it while a run executes and then uses it again.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "notebooks"))
import nbharness as h

pytestmark = pytest.mark.timeout(240)


def test_names_bound_redefinition_maps_plan_runs(tmp_path: Path) -> None:
    nb = h.execute(h.load("binding.ipynb"), tmp_path)
    h.assert_no_errors(nb)
    out = "".join(h.text(c) for c in nb.cells)
    for marker in ("binding ok", "redefinition ok", "maps ok", "plan ok"):
        assert marker in out
    (plan,) = [c for c in nb.cells if c.source.startswith("%%workflow planned --plan")]
    assert "Plan for workflow 'planned': 2 tasks. Nothing was run." in h.text(plan)
    assert "Cache hits and misses" in h.text(plan) or "Cache" in h.html(plan)
    assert 'class="nbflow-graph"' in h.html(plan)


def test_headless_progress_is_compact_and_ends_with_a_summary(tmp_path: Path) -> None:
    nb = h.execute(h.load("headless.ipynb"), tmp_path)
    h.assert_no_errors(nb)
    cell = nb.cells[2]
    lines = h.stream(cell).splitlines()
    assert lines[0] == "[nbflow] many: running 602 tasks"
    assert lines[-1].startswith("[nbflow] completed: many: 602/602 completed in ")
    assert len(lines) <= 12, lines  # bounded: never one line per task
    assert all(line.startswith("[nbflow]") for line in lines)
    # The final summary: a text table and the static HTML view with the drawn graph.
    summary = [o for o in cell.outputs if o.output_type == "display_data"]
    assert len(summary) == 1
    data = summary[0]["data"]
    assert "item" in data["text/plain"] and "600" in data["text/plain"]
    assert '<svg xmlns="http://www.w3.org/2000/svg" class="nbflow-graph"' in data["text/html"]
    assert 'data-level="maps"' in data["text/html"]  # 602 tasks: the map is one group node
    assert "item ×600" in data["text/html"]
    assert "application/vnd.jupyter.widget-view+json" not in data  # nobody renders widgets here


def test_failed_run_fails_the_cell_with_the_original_traceback(tmp_path: Path) -> None:
    nb = h.execute(h.load("failure.ipynb"), tmp_path)
    cell = nb.cells[2]
    (err,) = h.errors(cell)
    assert err.ename == "WorkflowFailed"
    assert "task 'parse-2' raised ValueError: bad row 3: cannot parse" in err.evalue
    tb = h.ANSI.sub("", "\n".join(err.traceback))
    assert 'raise ValueError(f"bad row {row}: cannot parse")' in tb  # the task's own line
    assert "in parse" in tb
    assert "scheduler.py" not in tb and "anyio" not in tb  # engine frames trimmed
    assert "[nbflow]   ✗ parse-2 failed: ValueError: bad row 3: cannot parse" in h.stream(cell)
    # The next cells ran (allow_errors) and checked the partial results.
    assert not h.errors(nb.cells[3]), h.text(nb.cells[3])
    assert "failure ok" in h.text(nb.cells[3])


def test_failed_run_fails_papermill_with_the_original_error(tmp_path: Path) -> None:
    papermill = pytest.importorskip("papermill")
    out = tmp_path / "out.ipynb"
    with pytest.raises(papermill.PapermillExecutionError) as info:
        papermill.execute_notebook(str(h.HERE / "failure.ipynb"), str(out), kernel_name="python3",
                                   cwd=str(tmp_path), progress_bar=False,
                                   extra_arguments=h.kernel_args(), **h.papermill_kwargs())
    e = info.value
    assert e.ename == "WorkflowFailed" and "bad row 3" in e.evalue
    assert any('raise ValueError(f"bad row {row}: cannot parse")' in h.ANSI.sub("", line)
               for line in e.traceback)


def test_background_run_stopped_by_its_button(tmp_path: Path) -> None:
    nb = h.execute(h.load("background.ipynb"), tmp_path)
    h.assert_no_errors(nb)
    start = nb.cells[3]
    # The cell returned at once with the live widget (the run went on without it).
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in start.outputs)
    assert "status: cancelled" in h.text(nb.cells[4])
    assert "background ok" in h.text(nb.cells[5])


def test_interrupt_cancels_the_run_and_the_kernel_stays_usable(tmp_path: Path) -> None:
    marker = tmp_path / "started"
    nb = h.notebook([
        "import nbflow as nf, time, pathlib",
        f"""@nf.task
def slow(i):
    pathlib.Path({str(marker)!r}).touch()
    time.sleep(0.2)
    return i""",
        """%%workflow long --workers 2
out = slow.map(list(range(300)))""",
        """import threading
run = nf.last_run()
print("status", run.status, run.counts)
deadline = time.monotonic() + 10  # idle pool threads exit just after the run
while time.monotonic() < deadline and any(t.name.startswith("nbflow-task") for t in threading.enumerate()):
    time.sleep(0.05)
names = [t.name for t in threading.enumerate()]
print("threads left", [n for n in names if n.startswith(("nbflow-run", "nbflow-task"))])
print("out is", type(out).__name__)
print("next", 6 * 7)""",
    ])
    c = h.client(nb, tmp_path)
    with c.setup_kernel(), h.evidence(c):
        c.execute_cell(nb.cells[0], 0)
        c.execute_cell(nb.cells[1], 1)
        h.interrupt_when(c, nb, 2, marker, "the run's start", settle_s=0.3)
        c.execute_cell(nb.cells[3], 3)
    long_cell, after = nb.cells[2], nb.cells[3]
    (err,) = h.errors(long_cell)
    assert err.ename == "WorkflowCancelled"
    assert "was cancelled (kernel interrupted)" in err.evalue
    assert len(err.traceback) == 1  # a short summary, not a traceback
    out = h.stream(long_cell)
    assert "[nbflow] cancelled: long:" in out and "cancelled" in out.splitlines()[-1]
    text = h.text(after)
    assert "status cancelled" in text
    assert "threads left []" in text
    assert "out is Ref" in text
    assert "next 42" in text


def test_import_registers_magics(tmp_path: Path) -> None:
    """``import nbflow`` in a cell is all a kernel needs for ``%%workflow`` (the kernel's only
    start-up line is the harness's thread-dump handler, which imports nothing of nbflow)."""
    nb = h.notebook(["import nbflow as nf\n@nf.task\ndef one():\n    return 1",
                     "%%workflow\nx = one()", "assert x == 1",
                     "%load_ext nbflow"])
    h.run(h.client(nb, tmp_path))
    h.assert_no_errors(nb)


# A thread of the kernel that is inside ``hung_here`` by the time the cell ends (no race).
HUNG_THREAD = """import threading
entered = threading.Event()
def hung_here():
    entered.set()
    threading.Event().wait()
threading.Thread(target=hung_here, daemon=True).start()
entered.wait()"""


def test_a_hung_kernel_fails_with_its_threads(tmp_path: Path) -> None:
    """The harness's evidence: a cell that never ends fails with the stacks of the kernel's
    threads (a thread hung in ``hung_here`` among them), and so does any failure of the
    test while a kernel lives."""
    hang = "threading.Event().wait()"  # (never ends: only it gets a short timeout)
    nb = h.notebook([HUNG_THREAD, hang])
    c = h.client(nb, tmp_path)
    c.timeout_func = lambda cell: 5 if cell.source == hang else c.timeout
    with pytest.raises(AssertionError) as info:
        h.run(c)
    msg = str(info.value)
    assert msg.startswith("CellTimeoutError") and "the kernel's threads at the failure" in msg
    assert "in hung_here" in msg, msg
    # Which cell got what: cell 0's reply came before cell 1 was sent (its IOPub messages may
    # come after nbclient stopped waiting for them, 4 s, on a busy machine: not asserted).
    assert "\ncell 0: " in msg and "shell.execute_reply" in msg.split("\ncell 0: ")[1].split("\n")[0], msg
    assert "what the client was waiting for ---\n" in msg and "in _async_poll_for_reply" in msg, msg

    c = h.client(h.notebook([HUNG_THREAD]), tmp_path)
    with pytest.raises(AssertionError) as info, c.setup_kernel(), h.evidence(c):
        c.execute_cell(c.nb.cells[0], 0)
        raise RuntimeError("the test failed here")
    msg = str(info.value)
    assert msg.startswith("RuntimeError: the test failed here")
    assert "in hung_here" in msg, msg
