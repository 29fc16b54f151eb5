"""The kernel process's own output goes to a log file, not to the batch's terminal.

ipykernel writes to its process's stdout and stderr: echoes of C-level writes to file
descriptors 1 and 2, its log lines, and — in a race of its own shutdown — a tornado
traceback ("Socket operation on non-socket") that once turned a quiet batch's terminal into
22 lines.  ``nbflow run`` gives those descriptors to ``<store>/batches/<batch>.kernel.log``:
its standard output stays the batch id a script reads, its standard error nbflow's own lines,
and a kernel that dies leaves its last words there, shown with the failure.

Real subprocesses of the CLI and real kernels, as in ``test_batch_run.py``.  The cells wait
(polling, 60 s at most) until ipykernel's fd watcher has passed their text on before going
on, so nothing depends on how fast that thread is.
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
from batch_helpers import cli, query, write_notebook

from nbflow.batch import runner

# Waits until ipykernel has passed ``marker`` on to the kernel's own stderr: with nbflow
# that is the batch's kernel log; without it the terminal, and the wait times out quietly.
WRITE_AND_WAIT = """
import os, time
from pathlib import Path
marker = {marker!r}
os.write({fd}, (marker + "\\n").encode())
log = Path(os.environ["NBFLOW_HOME"]) / "batches" / (os.environ["NBFLOW_BATCH_ID"] + ".kernel.log")
deadline = time.monotonic() + 60
while time.monotonic() < deadline and not (log.exists() and marker in log.read_text()):
    time.sleep(0.05)
"""


def _log_of(batch: str) -> Path:
    return runner.kernel_log_path(Path(os.environ["NBFLOW_HOME"]), batch)


def test_what_the_kernel_process_prints_is_in_its_log_not_on_the_batchs_terminal(tmp_path: Path) -> None:
    cells = [WRITE_AND_WAIT.format(marker="c-level stdout", fd=1),
             WRITE_AND_WAIT.format(marker="c-level stderr", fd=2)]
    nb = write_notebook(tmp_path / "k.ipynb", cells)
    res = cli("run", str(nb), "-q", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    batch = res.stdout.strip()
    assert batch.startswith("b") and len(res.stdout.splitlines()) == 1, res.stdout  # the id, only
    assert "c-level" not in res.stdout + res.stderr
    assert "Traceback" not in res.stderr and "ipykernel" not in res.stderr  # nothing of the kernel's
    said = _log_of(batch).read_text()
    assert "c-level stdout" in said and "c-level stderr" in said
    assert (_log_of(batch).stat().st_mode & 0o077) == 0  # private, like the rest of the store


def test_an_empty_kernel_log_is_removed_and_a_written_one_kept(tmp_path: Path) -> None:
    empty, written = tmp_path / "empty.kernel.log", tmp_path / "written.kernel.log"
    empty.write_text("")
    written.write_text("a line\n")
    assert runner._kept_log(empty) is None and not empty.exists()
    assert runner._kept_log(written) == written and written.exists()
    assert runner._kept_log(tmp_path / "never-started.kernel.log") is None
    assert runner._kept_log(None) is None


def test_a_kernel_that_dies_shows_its_last_words_with_the_failure(tmp_path: Path) -> None:
    dying = WRITE_AND_WAIT.format(marker="last words before os._exit", fd=2) + "\nos._exit(7)\n"
    nb = write_notebook(tmp_path / "d.ipynb", ["x = 1", dying])
    res = cli("run", str(nb), "-q", cwd=tmp_path)
    assert res.returncode == 1
    assert "cell 2 of" in res.stderr and "DeadKernelError" in res.stderr
    assert "the kernel's last output (" in res.stderr
    tail = res.stderr.split("the kernel's last output (", 1)[1]
    assert "last words before os._exit" in tail
    assert "the kernel's own output is in " in res.stderr and ".kernel.log" in res.stderr
    (batch,) = [r[0] for r in query("SELECT id FROM batches")]
    assert "last words before os._exit" in _log_of(batch).read_text()


# Holds the kernel's "idle" for this cell 6 s after its reply (past nbclient's default 4 s
# wait for a cell's last messages): what a busy machine can do to any cell.
LATE_IDLE = """
import time
kernel = get_ipython().kernel
real = kernel._publish_status
def late(status, channel, parent=None):
    if status == "idle" and channel == "shell":
        kernel._publish_status = real
        time.sleep(6)
    return real(status, channel, parent)
kernel._publish_status = late
print("ran")
"""


def test_a_cell_whose_last_messages_come_late_does_not_fail_the_batch(tmp_path: Path) -> None:
    nb = write_notebook(tmp_path / "late.ipynb", [LATE_IDLE, "print('next')"])
    res = cli("run", str(nb), "-q", cwd=tmp_path)
    assert res.returncode == 0, res.stderr  # (was: CellTimeoutError "Timeout waiting for IOPub")
    assert "Timeout" not in res.stderr
    out = nbformat.read(str(tmp_path / "late.out.ipynb"), as_version=4)
    said = ["".join(o.get("text", "") for o in c.outputs) for c in out.cells if c.cell_type == "code"]
    assert said == ["ran\n", "next\n"]
