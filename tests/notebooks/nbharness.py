"""Running notebooks in a real kernel for the notebook tests (nbclient).

``import nbflow`` registers the ``%%workflow`` magic once ``nbflow/__init__.py`` calls
``nbflow.notebook.register_if_ipython()``.  Until that line is in, kernels started here load
the extension explicitly (``exec_lines``) so the rest of the behaviour can be tested; the
test ``test_import_registers_magics`` tracks the missing line.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient

import nbflow

HERE = Path(__file__).resolve().parent
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def kernel_args() -> list[str]:
    if hasattr(nbflow, "load_ipython_extension"):
        return []
    return ["--IPKernelApp.exec_lines=['import nbflow.notebook as _nbn; _nbn.register_if_ipython()']"]


def notebook(cells: list[str]) -> Any:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def load(name: str) -> Any:
    return nbformat.read(HERE / name, as_version=4)


def client(nb: Any, cwd: Path, timeout: int = 120) -> NotebookClient:
    return NotebookClient(nb, kernel_name="python3", timeout=timeout, allow_errors=True,
                          resources={"metadata": {"path": str(cwd)}}, extra_arguments=kernel_args())


def execute(nb: Any, cwd: Path, timeout: int = 120) -> Any:
    client(nb, cwd, timeout).execute()
    return nb


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
