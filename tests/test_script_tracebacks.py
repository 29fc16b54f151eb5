"""A plain script whose run fails prints the user's frames, not nbflow's machinery.

Without the hook a failed ``wf.run()`` in a script printed the scheduler's, the backend's
and the thread pool's frames in front of the task's own line, and nbflow's frames under the
user's ``wf.run()`` line; a bad option or a cycle ended in nbflow's validation code.  The
scripts run in their own Python process, as a user runs them.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = """
import sys
import nbflow as nf

@nf.task
def parse(rows):
    return [int(r) for r in rows]          # the task's own line

@nf.task
def a(x):
    return x

with nf.Workflow("demo") as wf:
    x = a(1)
    y = a(x)
    if sys.argv[1] == "cycle":
        x.after(y)
    else:
        parse(["1", "n/a"])
wf.run(workers=sys.argv[2] if sys.argv[1] == "option" else None)   # the user's run line
"""


def _run(tmp_path: Path, *args: str) -> str:
    path = tmp_path / "flow.py"
    path.write_text(textwrap.dedent(SCRIPT))
    proc = subprocess.run([sys.executable, str(path), *args], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1
    return proc.stderr


def _frames(text: str) -> list[str]:
    return [ln.strip() for ln in text.splitlines() if ln.strip().startswith("File ")]


def test_a_failed_run_shows_the_task_line_first_and_ends_at_the_run_line(tmp_path: Path) -> None:
    err = _run(tmp_path, "fail", "")
    cause, _, failure = err.partition("The above exception was the direct cause")
    assert failure, err
    # the task's traceback starts at the task's own line: no engine, backend or pool frame
    first = _frames(cause)
    assert first and "flow.py" in first[0] and "in parse" in first[0], cause
    assert "the task's own line" in cause and "ValueError: invalid literal" in cause
    # the failure's traceback ends at the user's wf.run() line
    frames = _frames(failure)
    assert len(frames) == 1 and "flow.py" in frames[0] and "<module>" in frames[0], failure
    assert "WorkflowFailed: workflow 'demo'" in failure
    assert "nbflow" + "/" not in "".join(_frames(err))  # no frame of nbflow's package at all


def test_a_cycle_and_a_bad_option_end_at_the_users_line(tmp_path: Path) -> None:
    for args, said in ((("cycle", ""), "CycleError: the workflow has a cycle"),
                       (("option", "4"), "InvalidOptionError: run: workers='4' is not allowed")):
        err = _run(tmp_path, *args)
        frames = _frames(err)
        assert len(frames) == 1 and "flow.py" in frames[0], err
        assert said in err
