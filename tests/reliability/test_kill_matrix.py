"""The SIGKILL matrix: kill a run at 22 chosen points, resume in a new process, lose nothing.

A driver runs a 12-task workflow (six sources, three pairs, a total, two finals) in a
subprocess; every task appends its key to a marker file when it starts, so the file counts
executions across processes.  Kill points:

* ``task``: once the k-th task has started (thread and process backends, small results
  inline in SQLite and big ones in files);
* ``blob``: inside the k-th result-file write, after the temporary file is complete and
  before it is renamed into place (the driver pauses there and says so);
* ``commit``: inside the k-th journal transaction, after its rows are written and before
  ``COMMIT`` (same).

After the kill a second driver resumes on the same store and the test checks: every task
the journal had committed before the kill ran exactly once in total and was served from
the store; nothing ran more than twice; the results equal those of an uninterrupted run;
the journal passes ``PRAGMA integrity_check``; no temporary file survives the reopen.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from .helpers import REPO

pytestmark = pytest.mark.timeout(300)

DRIVER = r'''
import json, os, sys, time
import numpy as np
import nbflow as nf

markers, out, big, delay = sys.argv[1], sys.argv[2], sys.argv[3] == "big", float(sys.argv[4])
backend, pause = sys.argv[5], os.environ.get("PAUSE_AT", "")


def mark(tag):
    fd = os.open(markers, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (tag + "\n").encode())
    finally:
        os.close(fd)
    time.sleep(delay)


def value(x):
    return np.full(30_000, x, dtype="int64") if big else x


def plain(v):
    return int(v[0]) if isinstance(v, np.ndarray) else int(v)


@nf.task
def src(tag, i):
    mark(tag)
    return value(i + 1)


@nf.task
def mix(tag, a, b):
    mark(tag)
    return value(plain(a) * 10 + plain(b))


@nf.task
def tot(tag, parts):
    mark(tag)
    return value(sum(plain(p) for p in parts))


@nf.task
def fin(tag, t, j):
    mark(tag)
    return value(plain(t) * (j + 2))


def install_pause():
    """Stop (and say so) inside the n-th blob write or journal transaction."""
    if not pause:
        return
    kind, n = pause.split(":")
    n = int(n)
    seen = {"n": 0}
    flag = markers + ".paused"

    def stop():
        seen["n"] += 1
        if seen["n"] == n:
            open(flag, "w").close()
            time.sleep(600)  # the test kills us here

    if kind == "blob":
        from nbflow.store import blobs
        real_replace = os.replace

        class _Os:  # os for blobs.py only: pause before the rename
            def __getattr__(self, name):
                return getattr(os, name)

            def replace(self, a, b):
                stop()
                return real_replace(a, b)

        blobs.os = _Os()
    elif kind == "commit":
        from nbflow.store import journal
        real_write = journal._write_rows

        def write_rows(conn, op, rows, max_vars):
            real_write(conn, op, rows, max_vars)
            if op.sql.startswith("INSERT OR REPLACE INTO cache"):
                stop()  # rows written, transaction not committed

        journal._write_rows = write_rows


if __name__ == "__main__":
    install_pause()
    with nf.Workflow("matrix") as wf:
        s = [src(f"src-{i}", i) for i in range(6)]
        m = [mix(f"mix-{i}", s[2 * i], s[2 * i + 1]) for i in range(3)]
        t = tot("tot-0", m)
        f = [fin(f"fin-{j}", t, j) for j in range(2)]
    refs = [*s, *m, t, *f]
    run = wf.run(workers=3, backend=backend)
    with open(out, "w") as fh:
        json.dump({"values": {r.key: plain(run[r]) for r in refs},
                   "cached": dict(zip(run.tasks["key"], map(bool, run.tasks["cached"])))}, fh)
'''

KEYS = {*(f"src-{i}" for i in range(6)), *(f"mix-{i}" for i in range(3)), "tot-0", "fin-0", "fin-1"}
DELAY = 0.12

# (backend, size, kind, k): 22 kill points
MATRIX = (
    [("local", "small", "task", k) for k in (1, 3, 5, 7, 9, 11)]
    + [("local", "big", "task", k) for k in (2, 6, 10)]
    + [("process", "small", "task", k) for k in (2, 6, 10)]
    + [("process", "big", "task", k) for k in (4, 8)]
    + [("local", "big", "blob", k) for k in (1, 3, 5)]
    + [("process", "big", "blob", 2)]
    + [("local", "small", "commit", k) for k in (1, 2, 4)]
    + [("local", "big", "commit", 2)]
)


def _driver(tmp: Path, home: Path, size: str, backend: str, out: Path, pause: str = "") -> subprocess.Popen:
    script = tmp / "driver.py"
    script.write_text(DRIVER)
    env = {**os.environ, "NBFLOW_HOME": str(home), "PYTHONPATH": str(REPO), "PAUSE_AT": pause}
    return subprocess.Popen([sys.executable, str(script), str(tmp / "markers"), str(out), size, str(DELAY),
                             backend], cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def _finish(p: subprocess.Popen) -> None:
    _out, err = p.communicate(timeout=240)
    assert p.returncode == 0, err.decode()[-3000:]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = {}
    for size in ("small", "big"):
        tmp = tmp_path_factory.mktemp(f"ref-{size}")
        _finish(_driver(tmp, tmp / "home", size, "local", tmp / "out.json"))
        out[size] = json.loads((tmp / "out.json").read_text())["values"]
    return out


def _committed(home: Path) -> set[str]:
    db = sqlite3.connect(home / "journal.sqlite")
    try:
        return {k for (k,) in db.execute(
            "SELECT t.key FROM task_runs t JOIN cache c ON c.key = t.cache_key WHERE t.state = 'completed'")}
    except sqlite3.OperationalError:  # killed before the schema existed
        return set()
    finally:
        db.close()


@pytest.mark.parametrize("backend,size,kind,k", MATRIX,
                         ids=[f"{b}-{s}-{kd}{k}" for b, s, kd, k in MATRIX])
def test_kill_then_resume(tmp_path, reference, backend, size, kind, k):
    home, markers = tmp_path / "home", tmp_path / "markers"
    pause = f"{kind}:{k}" if kind != "task" else ""
    p = _driver(tmp_path, home, size, backend, tmp_path / "first.json", pause)
    flag = Path(str(markers) + ".paused")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and p.poll() is None:
        if (kind == "task" and len(_lines(markers)) >= k) or (kind != "task" and flag.exists()):
            break
        time.sleep(0.005)
    assert p.poll() is None, "the driver ended before the kill point: " + p.stderr.read().decode()[-2000:]
    if kind == "task":
        time.sleep(DELAY / 2)  # inside the k-th task
    os.kill(p.pid, signal.SIGKILL)
    p.wait(30)
    p.stdout.close()
    p.stderr.close()
    before = Counter(_lines(markers))
    committed = _committed(home)
    assert set(before) >= committed
    flag.unlink(missing_ok=True)

    p = _driver(tmp_path, home, size, "local", tmp_path / "second.json")
    _finish(p)
    result = json.loads((tmp_path / "second.json").read_text())
    assert result["values"] == reference[size]
    total = Counter(_lines(markers))
    assert set(total) == KEYS
    for key in committed:
        assert total[key] == 1, f"{key} had committed before the kill but ran {total[key]} times"
        assert result["cached"][key], f"{key} had committed but was not served from the store"
    assert max(total.values()) <= 2
    db = sqlite3.connect(home / "journal.sqlite")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        db.close()
    # the resume reopened the store: no temporary file of the killed writer is left
    assert not [q for q in (home / "blobs").rglob(".tmp-*")] if (home / "blobs").exists() else True
