"""Killing the process that runs a process-backend workflow leaves nothing behind.

A driver script runs two long tasks on the process backend; once both have started (each
writes a marker), the test SIGKILLs the driver and then checks, with psutil, that every
process it had started -- the workers, the forkserver, the resource tracker -- is gone
within a bounded wait.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from .helpers import REPO

pytestmark = pytest.mark.timeout(180)

DRIVER = r"""
import os, sys, time
import nbflow as nf

@nf.task
def slow(i, markers):
    with open(os.path.join(markers, f"started-{i}"), "w"):
        pass
    time.sleep(300)
    return i

if __name__ == "__main__":
    markers = sys.argv[1]
    with nf.Workflow("orphans") as wf:
        rs = [slow(i, markers) for i in range(int(sys.argv[2]))]
    wf.run(backend="process", cache=False, workers=int(sys.argv[3]))
"""


def _gone(procs: list[psutil.Process], wait: float) -> list[psutil.Process]:
    deadline = time.monotonic() + wait
    alive = procs
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        time.sleep(0.2)
    return alive


@pytest.mark.parametrize("tasks,workers", [(2, 2), (1, 2)])  # busy workers; and one idle
def test_sigkill_of_the_parent_leaves_no_process(tmp_path, tasks, workers):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    markers = tmp_path / "markers"
    markers.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO), "NBFLOW_HOME": str(tmp_path / "store")}
    p = subprocess.Popen([sys.executable, str(script), str(markers), str(tasks), str(workers)], env=env)
    try:
        deadline = time.monotonic() + 90
        while len(os.listdir(markers)) < tasks and time.monotonic() < deadline:
            assert p.poll() is None, "the driver ended early"
            time.sleep(0.1)
        assert len(os.listdir(markers)) == tasks
        kids = psutil.Process(p.pid).children(recursive=True)
        cmdlines = [" ".join(k.cmdline()) for k in kids]
        assert any("forkserver" in c for c in cmdlines) and any("resource_tracker" in c for c in cmdlines)
        assert len(kids) >= 2 + tasks  # tracker, forkserver and the busy workers
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        left = _gone(kids, 30)
        leftover = [(k.pid, " ".join(k.cmdline())[:80]) for k in left]
        for k in left:  # (do not leave them to the next test)
            k.kill()
        assert not left, leftover
    finally:
        if p.poll() is None:
            p.kill()
