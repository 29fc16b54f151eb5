"""Several processes writing one store at once: no lost row, no corrupt file, no lock error.

Two driver processes start together (a file barrier) and each runs three workflows of
many small tasks against the same ``NBFLOW_HOME``: one of them identical in both
processes, so the two race on the very same cache keys and result files.  Afterwards
every run and every event of both processes is in the journal, SQLite's integrity check
passes, nothing reached stderr about a locked database, and a third run of the shared
workflow is served entirely from the store without a single checksum warning.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import nbflow as nf
from nbflow.store import NbflowStoreWarning, load_run, runs

N = 150  # tasks per workflow

DRIVER = r'''
import os, sys, time
import nbflow as nf

who, barrier, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
open(barrier + "." + who, "w").close()
while not all(os.path.exists(barrier + "." + w) for w in ("p1", "p2")):
    time.sleep(0.001)

@nf.task
def leaf(i, tag):
    return [i] * 50

@nf.task
def join(*parts):
    return sum(len(p) for p in parts)

def workflow(name, tag):
    with nf.Workflow(name) as wf:
        leaves = [leaf(i, tag) for i in range(n - 1)]
        join(*leaves)
    return wf

for name, tag in (("shared", "same"), (f"own-{who}", who), (f"own2-{who}", who + "2")):
    run = workflow(name, tag).run(workers=8)
    assert run.status == "completed", run
print("ok")
'''


@nf.task
def leaf(i, tag):  # the same code as the driver's (module level, so the same qualified name)
    return [i] * 50


@nf.task
def join(*parts):
    return sum(len(p) for p in parts)


def test_two_processes_write_one_store_at_once(tmp_path):
    home = tmp_path / "home"
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    env = dict(os.environ, NBFLOW_HOME=str(home))
    procs = [subprocess.Popen([sys.executable, str(script), who, str(tmp_path / "go"), str(N)],
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for who in ("p1", "p2")]
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err.decode()[-3000:]
        assert b"ok" in out
        assert b"locked" not in err and b"could not record" not in err, err.decode()[-3000:]

    df = runs(home=home)
    assert len(df) == 6
    assert set(df["status"]) == {"completed"}
    assert sorted(df["name"]) == sorted(["shared", "shared", "own-p1", "own-p2", "own2-p1", "own2-p2"])
    assert list(df["tasks"]) == [N] * 6 and list(df["completed"]) == [N] * 6
    for rid in df["id"]:
        stored = load_run(rid, home=home)
        kinds = [type(e).__name__ for e in stored.events]
        assert kinds.count("TaskCompleted") == N
        assert kinds.count("TaskStarted") == N
        assert kinds[0] == "RunStarted" and kinds[-1] == "RunFinished"
        assert len(stored.tasks) == N and set(stored.tasks["state"]) == {"completed"}
        assert stored.graph.number_of_edges() == N - 1

    db = sqlite3.connect(home / "journal.sqlite")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        seqs = db.execute("SELECT run_id, COUNT(*), MAX(seq) FROM events GROUP BY run_id").fetchall()
        assert all(count == top for _, count, top in seqs), "an event row is missing"
    finally:
        db.close()

    # The same code in this process: every result comes from what the two wrote, verified.
    os.environ["NBFLOW_HOME"] = str(home)  # (the autouse fixture restores it)
    with nf.Workflow("shared") as wf:
        total = join(*[leaf(i, "same") for i in range(N - 1)])
    with warnings.catch_warnings():
        warnings.simplefilter("error", NbflowStoreWarning)
        run = wf.run()
    assert run[total] == (N - 1) * 50
    assert all(run.tasks["cached"]), run.tasks["reason"].value_counts()

def test_threads_of_one_process_share_the_writer(tmp_path):
    """Runs in several threads at once, all journaled, and the writer thread ends with them."""

    @nf.task
    def work(i, k):
        return i * k

    def one(k: int) -> None:
        with nf.Workflow(f"t{k}") as wf:
            for i in range(200):
                work(i, k)
        assert wf.run(workers=4).status == "completed"

    with warnings.catch_warnings():
        warnings.simplefilter("error", NbflowStoreWarning)
        threads = [threading.Thread(target=one, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    df = runs()
    assert len(df) == 4 and list(df["completed"]) == [200] * 4
    deadline = time.monotonic() + 10
    while any(t.name == "nbflow-journal" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not [t.name for t in threading.enumerate() if t.name == "nbflow-journal"]
    assert Path(os.environ["NBFLOW_HOME"]).stat().st_mode & 0o777 == 0o700
