"""Running notebooks in a real kernel for the notebook tests (nbclient).

``import nbflow`` registers the ``%%workflow`` magic (``nbflow/__init__.py`` calls
``nbflow.notebook.register_if_ipython()``); ``test_import_registers_magics`` checks it.

A kernel that hangs must say what it was doing.  Every kernel started by :func:`client`
registers :mod:`faulthandler` on ``SIGUSR1`` (its only start-up line, which imports nothing
of nbflow), writing every thread's stack to a file in the test's folder.  When a cell times
out, or anything else (the test's own timeout included) ends the execution with an error
while the kernel lives, the harness signals the kernel, and the failure carries that dump
(:func:`kernel_threads`, :func:`evidence`), then kills the kernel.

A cell's last messages may come late.  Once the kernel has replied that a cell ran, its
remaining IOPub messages (outputs still in flight, then "idle") can lag the reply by seconds
on a busy machine.  nbclient waits only ``iopub_timeout`` (4 s by default) for them; then it
cancels its IOPub reader, and a plain NotebookClient goes on with a warning while the late
outputs are dropped (the next cell's reader skips messages of other cells), so a test would
fail on a missing output; papermill raises "Timeout waiting for IOPub output" instead, and
nbval's own wait (5 s between messages) fails the cell.  Every driver here waits up to
:data:`IOPUB_TIMEOUT` s (:func:`client`, :func:`papermill_kwargs`, ``nbval_iopub.py``) and
fails loudly past that: the wait ends as soon as the idle comes, so it costs nothing.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def papermill_kwargs() -> dict[str, Any]:
    """Keyword arguments for every ``papermill.execute_notebook`` call of the tests
    (papermill hands them to nbclient): wait :data:`IOPUB_TIMEOUT` s for a cell's last
    messages, not 4."""
    return {"iopub_timeout": IOPUB_TIMEOUT}


def nbval_command(env: dict[str, str]) -> list[str]:
    """``python -m pytest --nbval-lax`` (the notebooks to add), with nbval's 5 s wait for a
    cell's last messages raised to :data:`IOPUB_TIMEOUT` by the plugin ``nbval_iopub`` of
    this folder, which this adds to ``env``'s PYTHONPATH (``env``: the run's environment)."""
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), env.get("PYTHONPATH")) if p)
    return [sys.executable, "-m", "pytest", "--nbval-lax", "-q", "-p", "no:cacheprovider",
            "-p", "nbval_iopub"]


def kernel_args() -> list[str]:
    """Extra kernel arguments nbflow needs: none (``import nbflow`` registers the magics);
    kept for the papermill calls that pass them."""
    return []


def notebook(cells: list[str]) -> Any:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def load(name: str) -> Any:
    return nbformat.read(HERE / name, as_version=4)


THREADS_FILE = "kernel-threads.txt"  # (in the test's folder, the kernel's working directory)
IOPUB_TIMEOUT = 60  # seconds a cell's last messages may lag its reply (see the module)
DUMP_WAIT_S = 30.0  # the longest wait for a signalled kernel's dump (written in its signal handler)


def dump_args(path: Path) -> list[str]:
    """Kernel arguments: on ``SIGUSR1`` the kernel writes every thread's stack to ``path``
    (one start-up line; it creates ``path``, which says the handler is in place)."""
    line = (f"__import__('faulthandler').register(__import__('signal').SIGUSR1, "
            f"file=open({str(path)!r}, 'w'), all_threads=True)")
    return [f"--IPKernelApp.exec_lines=[{line!r}]"]


class Client(NotebookClient):
    """A NotebookClient that takes the kernel's thread dump before a cell timeout shuts
    the kernel down (nbclient stops it on the way out of the timeout)."""

    threads_file: Path
    kernel_dump: str | None = None
    client_dump: str | None = None

    async def _async_handle_timeout(self, timeout: int, cell: Any = None) -> Any:
        self.client_dump = client_tasks()
        self.kernel_dump = kernel_threads(self)
        return await super()._async_handle_timeout(timeout, cell)


def client(nb: Any, cwd: Path, timeout: int = 120) -> Client:
    threads = cwd / THREADS_FILE
    c = Client(nb, kernel_name="python3", timeout=timeout, allow_errors=True,
               iopub_timeout=IOPUB_TIMEOUT, raise_on_iopub_timeout=True,
               resources={"metadata": {"path": str(cwd)}},
               extra_arguments=dump_args(threads))
    c.threads_file = threads
    return c


def kernel_threads(c: Client) -> str | None:
    """The stacks of every thread of ``c``'s kernel, now (None: no kernel, or it never got
    to register its handler); the kernel is killed afterwards (it is hung, or its test is
    ending with an error)."""
    provisioner = getattr(c.km, "provisioner", None) if c.km is not None else None
    proc = getattr(provisioner, "process", None)
    if proc is None or proc.poll() is not None or not c.threads_file.exists():
        return None
    os.kill(proc.pid, signal.SIGUSR1)
    deadline = time.monotonic() + DUMP_WAIT_S
    text, last = "", None
    while time.monotonic() < deadline:  # until written and no longer growing
        text = c.threads_file.read_text(errors="replace")
        if text and text == last:
            break
        last = text
        time.sleep(0.2)
    proc.kill()
    return text or f"(the kernel, pid {proc.pid}, wrote no thread dump within {DUMP_WAIT_S:.0f} s)"


@contextlib.contextmanager
def evidence(c: Client) -> Iterator[None]:
    """Run the block; if it fails while ``c``'s kernel lives (a hang ended by the test's
    timeout, a cell timeout, an assertion), fail with the kernel's thread dump added."""
    try:
        yield
    except BaseException as e:
        tasks = c.client_dump or client_tasks()
        dump = c.kernel_dump or kernel_threads(c)
        if dump is None:
            raise
        raise AssertionError(f"{type(e).__name__}: {e}\n--- what each cell got, when ---\n"
                             f"{timeline(c.nb)}\n--- what the client was waiting for ---\n{tasks}\n"
                             f"--- the kernel's threads at the failure ({c.code_cells_executed} "
                             f"code cell(s) sent to it) ---\n{dump}") from e


def client_tasks() -> str:
    """The unfinished asyncio tasks of this thread's loop (the one nbclient runs on), each
    with the line it waits at: where the client was when the test failed."""
    import asyncio

    from jupyter_core.utils import ensure_event_loop

    lines = []
    for task in asyncio.all_tasks(ensure_event_loop()):
        if task.done():
            continue
        where = [f"{f.f_code.co_filename}:{f.f_lineno} in {f.f_code.co_name}" for f in task.get_stack()]
        lines.append(f"{task.get_name()}: " + " <- ".join(reversed(where)))
    return "\n".join(lines) or "(no task pending)"


def timeline(nb: Any) -> str:
    """When each executed cell's messages came (nbclient records them in the cell's
    metadata): which cell a hang stopped at, and whether its reply or its end on IOPub came."""
    lines = []
    for i, cell in enumerate(nb.cells):
        times = cell.get("metadata", {}).get("execution")
        if times:
            lines.append(f"cell {i}: " + ", ".join(f"{k} {v}" for k, v in times.items()))
    return "\n".join(lines) or "(no cell started)"


def run(c: Client) -> Any:
    """Execute every cell of ``c``'s notebook in a new kernel (see :func:`evidence`)."""
    with evidence(c):
        c.execute()
    return c.nb


def execute(nb: Any, cwd: Path, timeout: int = 120) -> Any:
    return run(client(nb, cwd, timeout))


def text(cell: Any) -> str:
    """Everything a cell printed or raised, as plain text (ANSI colours removed)."""
    parts = []
    for o in cell.get("outputs", []):
        if o.output_type == "stream":
            parts.append(o.text)
        elif o.output_type == "error":
            parts.append("\n".join(o.traceback) + f"\n{o.ename}: {o.evalue}\n")
        else:
            parts.append(str(o.get("data", {}).get("text/plain", "")) + "\n")
    return ANSI.sub("", "".join(parts))


def errors(cell: Any) -> list[Any]:
    return [o for o in cell.get("outputs", []) if o.output_type == "error"]


def html(cell: Any) -> str:
    return "".join(str(o.get("data", {}).get("text/html", "")) for o in cell.get("outputs", [])
                   if o.output_type in ("display_data", "execute_result"))


def stream(cell: Any) -> str:
    return "".join(o.text for o in cell.get("outputs", []) if o.output_type == "stream")


def assert_no_errors(nb: Any) -> None:
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and errors(cell):
            raise AssertionError(f"cell {i} failed:\n{cell.source}\n---\n{text(cell)}")


def interrupt_when(c: NotebookClient, nb: Any, index: int, marker: Path, what: str,
                   settle_s: float = 0.0) -> None:
    """Execute cell ``index`` of ``nb`` on the kernel of ``c`` (its kernel set up), and
    interrupt the kernel as the stop button does once the cell has written ``marker``
    (polled, up to 60 s; ``what`` names the moment in the failure message); returns once
    the interrupted cell has ended.  ``settle_s``: a pause between the marker and the
    interrupt."""
    import threading
    import time

    from jupyter_core.utils import run_sync

    done = threading.Event()

    def run_cell() -> None:
        try:
            c.execute_cell(nb.cells[index], index)
        finally:
            done.set()

    t = threading.Thread(target=run_cell)
    t.start()
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), f"{what} never happened"
    if settle_s:
        time.sleep(settle_s)
    run_sync(c.km.interrupt_kernel)()  # what the stop button / Ctrl-C does
    assert done.wait(60), "the interrupted cell did not end"
    t.join()
