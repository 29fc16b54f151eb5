"""A full disk (simulated with a file-size limit, RLIMIT_FSIZE) while results are stored.

The driver limits the size of any file it writes to 1 MB and ignores SIGXFSZ, so writing a
bigger result file fails with EFBIG exactly as a full disk fails with ENOSPC.  The run
must complete with correct values, say which result could not be stored, and leave no
temporary file behind; a later run without the limit stores it.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .helpers import REPO

pytestmark = pytest.mark.timeout(180)

DRIVER = r"""
import resource, signal, sys, warnings
import numpy as np
import nbflow as nf

if sys.argv[1] == "limit":
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, 1_000_000))

@nf.task
def big(n):
    return np.arange(n, dtype="int64")

@nf.task
def total(a):
    return int(a.sum())

warnings.simplefilter("always")
with nf.Workflow("full") as wf:
    t = total(big(400_000))  # 3.2 MB: more than the limit
run = wf.run()
print("RESULT", run[t], run.status, "cached", list(run.tasks["cached"]))
"""


def test_disk_full_while_storing_a_result(tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    env = {**os.environ, "PYTHONPATH": str(REPO), "NBFLOW_HOME": str(tmp_path / "store")}
    expected = sum(range(400_000))
    p = subprocess.run([sys.executable, str(script), "limit"], capture_output=True, text=True, env=env,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    assert f"RESULT {expected} completed" in p.stdout
    assert "cannot be stored" in p.stderr and "big-0" in p.stderr
    assert not list((tmp_path / "store").rglob(".tmp-*"))
    p = subprocess.run([sys.executable, str(script), "free"], capture_output=True, text=True, env=env,
                       timeout=120)
    assert f"RESULT {expected} completed cached [False, True]" in p.stdout, p.stdout + p.stderr
