"""``%nbflow show RUN_ID`` shows any run in the store, not only this session's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

MAKE_RUN = '''
import nbflow as nf

@nf.task
def one():
    return 1

@nf.task
def boom(x):
    raise ValueError("bad row")

with nf.Workflow("earlier") as wf:
    boom(one())
print(wf.run(raise_on_error=False).id)
'''

SHOW = r'''
import json, sys
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

shell = InteractiveShell.instance()
shell.run_cell("import nbflow as nf")
with capture_output() as cap:
    ok = shell.run_cell("%nbflow show " + sys.argv[1]).success
    missing = shell.run_cell("%nbflow show 20990101-000000-abcdef")
print(json.dumps({"ok": ok, "text": cap.stdout + "".join(o.data.get("text/plain", "") for o in cap.outputs),
                  "html": "".join(o.data.get("text/html", "") for o in cap.outputs),
                  "missing": type(missing.error_in_exec).__name__, "why": str(missing.error_in_exec)}))
'''


def test_show_a_run_of_another_process(tmp_path: Path) -> None:
    made = subprocess.run([sys.executable, "-c", MAKE_RUN], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    run_id = made.stdout.strip().splitlines()[-1]
    res = subprocess.run([sys.executable, "-c", SHOW, run_id], capture_output=True, text=True, timeout=300,
                         cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["ok"] and "earlier" in out["text"] and "failed" in out["text"]
    assert '<svg xmlns="http://www.w3.org/2000/svg" class="nbflow-graph"' in out["html"]
    assert out["missing"] == "UsageError" and "in the store" in out["why"]
