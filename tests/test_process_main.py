"""backend="process" in a plain script without ``if __name__ == "__main__":`` runs the
script once: worker processes never import the user's main module, and functions defined
in the script still reach them (by value)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = '''
import os
import nbflow as nf

with open({log!r}, "a") as fh:          # a side effect at top level, no main guard
    fh.write(f"{{os.getpid()}}\\n")

@nf.task
def square(x):
    return x * x

with nf.Workflow("guardless") as wf:
    r = nf.gather(*[square(i) for i in range(6)])
print("result", wf.run(backend="process", workers=2, cache=False)[r])
'''


def test_a_script_without_a_main_guard_runs_once(tmp_path: Path) -> None:
    log = tmp_path / "toplevel.log"
    script = tmp_path / "script.py"
    script.write_text(SCRIPT.format(log=str(log)))
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                         cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "result [0, 1, 4, 9, 16, 25]" in res.stdout
    assert len(log.read_text().splitlines()) == 1  # the top level ran in this process only
    assert "leaked semaphore" not in res.stderr
