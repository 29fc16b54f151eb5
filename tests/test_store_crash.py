"""Crash safety: SIGKILL a process in the middle of a run, resume, lose nothing, redo nothing.

A driver script runs a 20-task workflow in a subprocess.  Every task appends its name to a
marker file when it starts executing, so the marker file counts executions across
processes.  The test kills the driver (SIGKILL, no chance to clean up) once a given
number of tasks has started, at a moment inside a task, then runs the driver again on the
same store and checks that

* every task the journal had recorded as committed before the kill is executed exactly
  once in total (the resume serves it from the store);
* a task that was in flight runs again (at most twice in total);
* the final results equal those of an uninterrupted run in a separate store;
* the killed run shows as ``interrupted``.

Small results live inline in SQLite; the ``big`` variant returns arrays large enough to
be stored as files, so kills also land during blob writes (temp file, fsync, rename).
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

DRIVER = r'''
import json, os, sys, time
import numpy as np
import nbflow as nf

markers, out, big, delay = sys.argv[1], sys.argv[2], sys.argv[3] == "big", float(sys.argv[4])

def mark(tag):
    fd = os.open(markers, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (tag + "\n").encode())
    finally:
        os.close(fd)
    time.sleep(delay * (5 if tag.startswith("e") else 1))  # the last tasks: room to kill in them

def value(x):
    return np.full(40_000, x, dtype="int64") if big else x

def plain(v):
    return int(v.sum()) if isinstance(v, np.ndarray) else int(v)

@nf.task
def source(tag, i):
    mark(tag)
    return value(i + 1)

@nf.task
def double(tag, a):
    mark(tag)
    return value(2 * plain(a) // (40_000 if big else 1))

@nf.task
def pair(tag, a, b):
    mark(tag)
    return value((plain(a) + 3 * plain(b)) // (40_000 if big else 1))

@nf.task
def total(tag, cs):
    mark(tag)
    return value(sum(plain(c) for c in cs) // (40_000 if big else 1))

@nf.task
def branch(tag, d, j):
    mark(tag)
    return value(plain(d) // (40_000 if big else 1) * (j + 1) + j)

with nf.Workflow("crash") as wf:
    refs = {}
    a = [source(f"a{i}", i) for i in range(5)]
    b = [double(f"b{i}", a[i]) for i in range(5)]
    c = [pair(f"c{i}", b[i], b[(i + 1) % 5]) for i in range(5)]
    d = total("d", c)
    e = [branch(f"e{j}", d, j) for j in range(4)]
    refs.update({f"a{i}": r for i, r in enumerate(a)})
    refs.update({f"b{i}": r for i, r in enumerate(b)})
    refs.update({f"c{i}": r for i, r in enumerate(c)})
    refs["d"] = d
    refs.update({f"e{j}": r for j, r in enumerate(e)})

run = wf.run(workers=3)
with open(out, "w") as f:
    json.dump({"run": run.id, "values": {k: plain(run[r]) for k, r in refs.items()},
               "cached": {k: bool(c) for k, c in zip(run.tasks["key"], run.tasks["cached"])}}, f)
'''

KEY_OF = {**{f"a{i}": f"source-{i}" for i in range(5)}, **{f"b{i}": f"double-{i}" for i in range(5)},
          **{f"c{i}": f"pair-{i}" for i in range(5)}, "d": "total-0",
          **{f"e{j}": f"branch-{j}" for j in range(4)}}
TAG_OF = {v: k for k, v in KEY_OF.items()}
DELAY = 0.08


def _run_driver(tmp: Path, home: Path, variant: str, markers: Path, out: Path) -> subprocess.Popen[bytes]:
    script = tmp / "driver.py"
    script.write_text(DRIVER)
    env = dict(os.environ, NBFLOW_HOME=str(home))
    return subprocess.Popen([sys.executable, str(script), str(markers), str(out), variant, str(DELAY)],
                            cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _finish(p: subprocess.Popen[bytes]) -> None:
    _stdout, stderr = p.communicate(timeout=240)
    assert p.returncode == 0, stderr.decode()[-3000:]
    assert b"database is locked" not in stderr


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, int]]:
    """The results of uninterrupted runs, one per variant, each in its own store."""
    out = {}
    for variant in ("small", "big"):
        tmp = tmp_path_factory.mktemp(f"ref-{variant}")
        p = _run_driver(tmp, tmp / "home", variant, tmp / "markers", tmp / "out.json")
        _finish(p)
        out[variant] = json.loads((tmp / "out.json").read_text())["values"]
        assert sorted(Counter(_lines(tmp / "markers")).values()) == [1] * 20
    return out


def _committed(home: Path, run_id: str | None) -> set[str]:
    """Tasks the journal recorded as completed (and stored) in the killed run."""
    db = sqlite3.connect(home / "journal.sqlite")
    try:
        rows = db.execute("SELECT t.key FROM task_runs t JOIN cache c ON c.key = t.cache_key "
                          "WHERE t.run_id = ? AND t.state = 'completed'", (run_id,)).fetchall()
    finally:
        db.close()
    return {TAG_OF[k] for (k,) in rows}


def _only_run(home: Path) -> str | None:
    db = sqlite3.connect(home / "journal.sqlite")
    try:
        rows = db.execute("SELECT id FROM runs").fetchall()
    finally:
        db.close()
    return rows[0][0] if rows else None


@pytest.mark.parametrize(("variant", "kill_after"), [
    ("small", 1), ("small", 6), ("small", 12), ("small", 18), ("small", 20),
    ("big", 4), ("big", 11), ("big", 19),
])
def test_sigkill_then_resume_reuses_every_committed_task(tmp_path, reference, variant, kill_after):
    home, markers = tmp_path / "home", tmp_path / "markers"
    p = _run_driver(tmp_path, home, variant, markers, tmp_path / "first.json")
    deadline = time.monotonic() + 120
    while len(_lines(markers)) < kill_after and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert p.poll() is None, "the driver ended before the kill: " + p.stderr.read().decode()[-2000:]
    time.sleep(random.Random(kill_after).uniform(0, DELAY * 0.9))  # inside the k-th task, or a commit
    p.send_signal(signal.SIGKILL)
    p.wait(30)
    p.stdout.close()  # type: ignore[union-attr]
    p.stderr.close()  # type: ignore[union-attr]
    assert not (tmp_path / "first.json").exists()
    before = Counter(_lines(markers))
    killed = _only_run(home)
    committed = _committed(home, killed)
    assert set(before) >= committed

    p = _run_driver(tmp_path, home, variant, markers, tmp_path / "second.json")
    _finish(p)
    result = json.loads((tmp_path / "second.json").read_text())
    assert result["values"] == reference[variant]

    total = Counter(_lines(markers))
    assert set(total) == set(KEY_OF), "every task ran at least once"
    for tag in committed:
        assert total[tag] == 1, f"{tag} had committed before the kill but ran {total[tag]} times"
        assert result["cached"][KEY_OF[tag]], f"{tag} had committed but was not served from the store"
    for tag, n in total.items():
        assert n <= 2, f"{tag} ran {n} times"
        if n == 2:
            assert before[tag] == 1 and tag not in committed  # it was in flight at the kill

    import nbflow.store as store

    runs = store.runs(home=home)  # newest first: the resumed run, then the killed one
    # (the killed run is missing only if it was killed within the moment before its first commit)
    assert list(runs["status"]) in (["completed", "interrupted"], ["completed"])
    assert runs["completed"].iloc[0] == 20
    assert int(runs["cached"].iloc[0]) >= len(committed)
    if killed is None:
        assert not committed
        return
    stored = store.load_run(killed, home=home)
    assert stored.status == "interrupted"
    done = set(stored.tasks.loc[stored.tasks["state"] == "completed", "key"])
    assert done >= {KEY_OF[t] for t in committed}


def test_crash_during_blob_write_leaves_no_committed_garbage(tmp_path, monkeypatch):
    """Failed, torn and stray result files are never mistaken for results."""
    import nbflow as nf
    from nbflow.store import gc, get_store

    log = str(tmp_path / "calls")  # (a list closed over would be part of the fingerprint)

    @nf.task
    def big(n):
        with open(log, "a") as f:
            f.write("x")
        return b"x" * n

    def build():
        with nf.Workflow("torn") as wf:
            r = big(100_000)
        return wf, r

    def failing_replace(src, dst):  # e.g. the disk filled up between write and rename
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", failing_replace)
        wf, r = build()
        with pytest.warns(nf.store.NbflowStoreWarning, match="result of task 'big-0' cannot be stored"):
            assert wf.run()[r] == b"x" * 100_000
    blobs = get_store().blobs
    assert not list(blobs.files()), "the failed write left a file behind"

    # A half-written file *under its real name* (as a crash mid-copy by hand would leave)
    wf, r = build()
    run = wf.run()
    (blob,) = [k for k, *_ in blobs.files() if k]
    path = blobs.path(blob)
    path.write_bytes(path.read_bytes()[: 5000])
    # and a stray temporary file from an interrupted write
    (path.parent / ".tmp-stray").write_bytes(b"partial")
    wf, r = build()
    with pytest.warns(nf.store.NbflowStoreWarning, match="task 'big-0'"):
        run = wf.run()
    assert run[r] == b"x" * 100_000 and not bool(run.tasks["cached"][0])
    assert Path(log).read_text() == "xxx"  # failed store, first stored run, recomputed after the damage
    report = gc(grace=0)
    assert report.orphan_files_removed == 1  # the stray temp file
    wf, r = build()
    assert bool(wf.run().tasks["cached"][0])
