"""``nbflow explain RUN TASK`` prints exactly what ``nf.load_run(RUN).explain(TASK)`` says.

Three runs of one script, each its own process: the first computes everything, the second
is served from the cache, and before the third the script's ``clean`` task is edited and the
``nf.File`` that ``load`` reads is rewritten.  For a cache hit, a miss because code changed
and a miss because a file changed, the command's output is the stored run's explanation
text, word for word.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from batch_helpers import cli

import nbflow as nf

pytestmark = pytest.mark.timeout(300)

SCRIPT = '''
import nbflow as nf

@nf.task
def load(path):
    with open(path) as f:
        return f.read().split()

@nf.task
def clean(words):
    return [w.upper() for w in words]{EDIT}

with nf.Workflow("explained") as wf:
    clean(load(nf.File("words.txt")))
print(wf.run().id)
'''


def _run(tmp_path: Path, edit: str = "") -> str:
    script = tmp_path / "flow.py"
    script.write_text(SCRIPT.replace("{EDIT}", edit))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=240,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def _cli_explain(tmp_path: Path, run_id: str, key: str) -> str:
    got = cli("explain", run_id, key, cwd=tmp_path)
    assert got.returncode == 0, got.stderr
    return got.stdout


def test_cli_explain_is_the_stored_explanation(tmp_path: Path) -> None:
    (tmp_path / "words.txt").write_text("a b c")
    _run(tmp_path)
    hit = _run(tmp_path)
    (tmp_path / "words.txt").write_text("a b c d")
    missed = _run(tmp_path, edit=" + ['!']")

    cases = {
        (hit, "clean-0"): "cache hit",
        (missed, "clean-0"): "code of clean changed",
        (missed, "load-0"): "words.txt",
    }
    for (run_id, key), expected in cases.items():
        stored = nf.load_run(run_id).explain(key)
        assert expected in stored.reason or expected in stored.text, (key, stored.text)
        assert _cli_explain(tmp_path, run_id, key) == stored.text + "\n"
    assert nf.load_run(hit).explain("clean-0").cached
    assert not nf.load_run(missed).explain("load-0").cached
    assert "changed" in nf.load_run(missed).explain("load-0").reason
    # a task name matching one node answers the same as its key
    assert _cli_explain(tmp_path, missed, "load") == _cli_explain(tmp_path, missed, "load-0")
    # a typo is told which tasks the run has, and the close match
    typo = cli("explain", missed, "clen", cwd=tmp_path)
    assert typo.returncode == 1
    assert "no task or task key 'clen'" in typo.stderr
    assert "(its tasks: clean, load); did you mean 'clean'?" in typo.stderr
