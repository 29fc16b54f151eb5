"""The tests' notebook drivers wait for a cell's late last messages instead of failing.

A busy machine can deliver a cell's last IOPub messages (outputs still in flight, then the
kernel's "idle") seconds after the kernel's reply.  nbclient waits 4 s for them (then drops
them with a warning, or, under papermill, fails the cell) and nbval 5 s (then fails the
cell).  Here the kernel itself holds one cell's "idle" back :data:`HOLD_S` seconds after
its reply, printing one more line just before it: past both defaults, far inside
``nbharness.IOPUB_TIMEOUT``.  Each driver must keep that line and run the next cell.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "notebooks"))
import nbharness as h

pytestmark = pytest.mark.timeout(300)

HOLD_S = 7  # > nbclient's 4 s and nbval's 5 s defaults; < h.IOPUB_TIMEOUT

# The kernel publishes "idle" after sending its reply (ipykernel's dispatch_shell); this
# cell makes the next such "idle" (its own) wait, then print a line first: an output that
# arrives after the reply, as a late one would.
LATE_IDLE = f"""
import sys, time
kernel = get_ipython().kernel
real = kernel._publish_status
def late(status, channel, parent=None):
    if status == "idle" and channel == "shell":
        kernel._publish_status = real
        time.sleep({HOLD_S})
        print("late output")
        sys.stdout.flush()
    return real(status, channel, parent)
kernel._publish_status = late
print("ran")
"""
CELLS = [LATE_IDLE, "print('next')"]


def said(nb: nbformat.NotebookNode) -> list[str]:
    return [h.stream(c) for c in nb.cells if c.cell_type == "code"]


def test_the_harness_keeps_a_cells_late_output_and_idle(tmp_path: Path) -> None:
    nb = h.execute(h.notebook(CELLS), tmp_path)
    assert said(nb) == ["ran\nlate output\n", "next\n"]  # (was: "late output" dropped)
    assert "iopub.status.idle" in nb.cells[0].metadata["execution"]


def test_papermill_with_the_tests_arguments_waits_for_a_late_idle(tmp_path: Path) -> None:
    papermill = pytest.importorskip("papermill")
    src, out = tmp_path / "late.ipynb", tmp_path / "late.out.ipynb"
    nbformat.write(h.notebook(CELLS), src)
    nb = papermill.execute_notebook(str(src), str(out), kernel_name="python3", cwd=str(tmp_path),
                                    progress_bar=False, **h.papermill_kwargs())
    assert said(nb) == ["ran\nlate output\n", "next\n"]  # (was: "Timeout waiting for IOPub")


def test_nbval_with_the_tests_plugin_waits_for_a_late_idle(tmp_path: Path) -> None:
    pytest.importorskip("nbval")
    src = tmp_path / "late.ipynb"
    nbformat.write(h.notebook(CELLS), src)
    env = dict(os.environ)
    proc = subprocess.run([*h.nbval_command(env), str(src)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=280)
    # (was: "Timeout of 5 seconds exceeded waiting for output", the kernel stopped)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "2 passed" in proc.stdout
