"""``import nbflow`` stays light: the Dask backend's heavy libraries load with a Dask run.

Every notebook imports nbflow, every ``nbflow`` command and every batch kernel does too;
importing ``distributed`` costs about 0.8 s of CPU, which a run on threads or processes never
needs.  A plain subprocess, so nothing else of the test session has imported them already.
"""

from __future__ import annotations

import subprocess
import sys


def test_import_nbflow_does_not_import_distributed_or_dask() -> None:
    code = ("import sys, nbflow, nbflow.cli\n"
            "from nbflow.engine.backends import dask_recovery\n"
            "print(sorted(m for m in ('distributed', 'dask') if m in sys.modules))\n"
            "print(dask_recovery.LooseRestrictions.__module__)\n"
            "print('distributed' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    loaded, module, after = out.stdout.split("\n")[:3]
    assert loaded == "[]"
    # the plugin class is still there by its old name, and loads distributed when asked for
    assert module == "nbflow.engine.backends.dask_plugin" and after == "True"
