"""Mistakes in a %%workflow line are one line of usage error, not a traceback of nbflow
internals, and leave the namespace as it was; ``nbflow --version`` exists."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = r'''
import json
from IPython.core.interactiveshell import InteractiveShell

shell = InteractiveShell.instance()
out = {}
shell.run_cell("import nbflow as nf")
shell.run_cell("@nf.task\ndef clean(x):\n    return x + 1\n")
for label, line in [("rerun", "%%workflow w --rerun cleen"), ("backend", "%%workflow w --backend threads"),
                    ("workers", "%%workflow w --workers 0"), ("flag", "%%workflow w --bogus")]:
    r = shell.run_cell(line + "\ny = clean(1)\n")
    err = r.error_in_exec or r.error_before_exec
    out[label] = [type(err).__name__, str(err), "y" in shell.user_ns]
r = shell.run_cell("%%workflow w --rerun clean\ny = clean(1)\n")
out["ok"] = [r.success, shell.user_ns.get("y")]
print(json.dumps(out))
'''


def test_workflow_magic_usage_errors_are_one_line() -> None:
    res = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    kind, msg, bound = out["rerun"]
    assert kind == "UsageError" and "'cleen'" in msg and "did you mean 'clean'" in msg and not bound
    kind, msg, _ = out["backend"]
    assert kind == "UsageError" and "unknown backend 'threads'" in msg and "\n" not in msg
    kind, msg, _ = out["workers"]
    assert kind == "UsageError" and "workers" in msg
    assert out["flag"][0] == "UsageError" and "--bogus" in out["flag"][1]
    assert out["ok"] == [True, 2]


def test_nbflow_version() -> None:
    res = subprocess.run([sys.executable, "-m", "nbflow.cli", "--version"], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0 and res.stdout.startswith("nbflow ")
