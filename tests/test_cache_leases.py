"""Identical runs at once: a task another live process is computing is waited for, not
computed twice (leases in the journal, nbflow.store.lease).

Real processes: two scripts start the same workflow on the same store at the same moment
(they wait for a start file), every task appends ``pid key`` to a shared log when it
executes, and each key must appear exactly once across both.  Then a holder is killed with
SIGKILL in the middle of its task: the waiting process notices its death, takes the lease
over and completes the run.  An expired lease of a holder on another machine is taken over
once it expires.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import nbflow as nf
from nbflow.store import lease
from nbflow.store.cache import RunCache
from nbflow.store.store import get_store

pytestmark = pytest.mark.timeout(240)

SCRIPT = '''\
import logging, os, sys, time
from pathlib import Path
import nbflow as nf

logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
LOG = Path(os.environ["EXEC_LOG"])

@nf.task
def work(i):
    with open(LOG, "a") as f:
        f.write(f"{os.getpid()} work-{i}\\n")
    time.sleep(float(os.environ.get("HOLD", "0")))
    release = os.environ.get("RELEASE_FILE")
    while release and not Path(release).exists():  # held until the test lets it go
        time.sleep(0.02)
    return i * i

@nf.task
def total(xs):
    with open(LOG, "a") as f:
        f.write(f"{os.getpid()} total\\n")
    return sum(xs)

go = Path(os.environ["GO_FILE"])
while not go.exists():  # both processes start the run together
    time.sleep(0.01)
with nf.Workflow("same") as wf:
    t = total([work(i) for i in range(int(os.environ.get("N", "6")))])
run = wf.run(workers=2)
print("RESULT", run[t], run.id, os.getpid())
for key in [*(f"work-{i}" for i in range(int(os.environ.get("N", "6")))), "total-0"]:
    print("REASON", key, "|", run.explain(key).reason)
'''


def _start(script: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(EXEC_LOG=str(tmp_path / "executions.log"), GO_FILE=str(tmp_path / "go"), **extra)
    return env


def _wait_for(pred, what: str, limit: float = 120.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + limit
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


def test_two_processes_compute_each_task_once(tmp_path: Path) -> None:
    script = tmp_path / "pipeline.py"
    script.write_text(SCRIPT)
    env = _env(tmp_path, HOLD="1")
    procs = [_start(script, env) for _ in range(2)]
    time.sleep(1.0)  # (both importing nbflow; the go file releases them together)
    (tmp_path / "go").touch()
    outs = [p.communicate(timeout=200) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
        assert "RESULT 55" in out, out + err
    executed = (tmp_path / "executions.log").read_text().split()[1::2]
    keys = [f"work-{i}" for i in range(6)] + ["total"]
    assert sorted(executed) == sorted(keys), executed  # every task exactly once, across both
    text = "".join(out for out, _ in outs)
    assert "waited for run" in text and "which computed it" in text  # the reason says so
    reasons = [ln for ln in text.splitlines() if ln.startswith("REASON") and "waited for run" in ln]
    pids = {str(p.pid) for p in procs}
    assert all(any(f"in process {pid}" in ln for pid in pids) for ln in reasons)
    db = sqlite3.connect(tmp_path / ".nbflow" / "journal.sqlite")
    assert db.execute("SELECT count(*) FROM leases").fetchone()[0] == 0  # all released


def test_a_killed_holder_is_taken_over_and_the_run_completes(tmp_path: Path) -> None:
    script = tmp_path / "pipeline.py"
    script.write_text(SCRIPT)
    (tmp_path / "go").touch()
    holder = _start(script, _env(tmp_path, N="1", HOLD="600"))  # would hold its lease for 10 min
    log = tmp_path / "executions.log"
    _wait_for(lambda: log.exists() and "work-0" in log.read_text(), "the holder to start work-0")
    waiter_err = tmp_path / "waiter.err"
    with open(waiter_err, "w") as err:
        waiter = subprocess.Popen([sys.executable, str(script)], env=_env(tmp_path, N="1", HOLD="0"),
                                  stdout=subprocess.PIPE, stderr=err, text=True)
        _wait_for(lambda: "waits for run" in waiter_err.read_text(), "the waiter to wait")
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
        out, _ = waiter.communicate(timeout=200)
    assert waiter.returncode == 0, waiter_err.read_text()
    assert "RESULT 0" in out
    lines = log.read_text().split("\n")
    assert f"{holder.pid} work-0" in lines and f"{waiter.pid} work-0" in lines  # taken over
    reason = next(ln for ln in out.splitlines() if ln.startswith("REASON work-0"))
    assert "waited for run" in reason and f"in process {holder.pid}" in reason
    assert "stopped without storing it" in reason


def test_a_heartbeat_keeps_a_long_tasks_lease_past_its_time_to_live(tmp_path: Path) -> None:
    script = tmp_path / "pipeline.py"
    script.write_text(SCRIPT)
    (tmp_path / "go").touch()
    release = tmp_path / "release"
    # The task runs until the test releases it: long enough for the waiter to start, register
    # and wait, and several times its 1 s lease, however slowly the machine starts processes.
    env = _env(tmp_path, N="1", NBFLOW_LEASE_TTL="1", RELEASE_FILE=str(release))
    holder = _start(script, env)
    log = tmp_path / "executions.log"
    _wait_for(lambda: log.exists() and "work-0" in log.read_text(), "the holder to start work-0")
    waiter = _start(script, env)
    journal = Path(env["NBFLOW_HOME"]) / "journal.sqlite"

    def registered() -> bool:
        db = sqlite3.connect(journal)
        try:
            return bool(db.execute("SELECT 1 FROM lease_processes WHERE pid=?", (waiter.pid,)).fetchall())
        finally:
            db.close()

    _wait_for(registered, "the waiter to register as a leasing process")
    time.sleep(4.0)  # the holder's 1 s lease must be renewed by its heartbeat meanwhile
    release.touch()
    (out, err) = waiter.communicate(timeout=200)
    holder.communicate(timeout=200)
    assert waiter.returncode == 0 and holder.returncode == 0, err
    assert log.read_text().split().count("work-0") == 1, log.read_text()  # not taken over
    reason = next(ln for ln in out.splitlines() if ln.startswith("REASON work-0"))
    assert "waited for run" in reason and f"in process {holder.pid}, which computed it" in reason


@nf.task
def square(x: int) -> int:
    return x * x


def _lease_row(home: Path, key: str, *, host: str, pid: int, expires: float) -> None:
    """A lease on ``key`` held by ``(host, pid)``, a process that is leasing."""
    db = sqlite3.connect(home / "journal.sqlite")
    db.execute("INSERT OR REPLACE INTO leases(key, run_id, pid, host, task, heartbeat, expires) "
               "VALUES(?,?,?,?,?,?,?)", (key, "run-elsewhere", pid, host, "square-0", time.time(), expires))
    db.execute("INSERT OR REPLACE INTO lease_processes(host, pid, started, heartbeat, expires, leasing) "
               "VALUES(?,?,?,?,?,1)", (host, pid, time.time(), time.time(), expires))
    db.commit()
    db.close()


def _key_of(run: nf.Run, key: str) -> str:
    return run.explain(key).text.split("cache key ")[1].split()[0].rstrip("…")


def test_a_lease_from_another_host_is_waited_for_until_it_expires(tmp_path: Path) -> None:
    with nf.Workflow("remote-holder") as wf:
        r = square(7)
    first = wf.run(rerun=[square])  # to learn the key; then forget the stored result
    home = Path(os.environ["NBFLOW_HOME"])
    db = sqlite3.connect(home / "journal.sqlite")
    (key,) = [k for (k,) in db.execute("SELECT key FROM cache").fetchall()]
    assert key.startswith(_key_of(first, "square-0"))
    db.execute("DELETE FROM cache")
    db.commit()
    get_store().forget_pending()  # type: ignore[union-attr]  # (what this process believes is stored)
    _lease_row(home, key, host="another-machine", pid=1, expires=time.time() + 1.5)
    run = wf.run()
    assert run[r] == 49
    reason = run.explain("square-0").reason
    assert "waited for run run-elsewhere in process 1 on another-machine" in reason
    assert "stopped without storing it" in reason


def test_a_dead_local_holder_is_not_waited_for(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with nf.Workflow("dead-holder") as wf:
        r = square(8)
    wf.run()
    home = Path(os.environ["NBFLOW_HOME"])
    db = sqlite3.connect(home / "journal.sqlite")
    (key,) = [k for (k,) in db.execute("SELECT key FROM cache").fetchall()]
    db.execute("DELETE FROM cache")
    db.commit()
    get_store().forget_pending()  # type: ignore[union-attr]
    _lease_row(home, key, host=lease.HOST, pid=dead.pid, expires=time.time() + 3600)
    run = wf.run()
    assert run[r] == 64 and "waited" not in run.explain("square-0").reason


def test_a_failed_task_releases_its_lease_at_once(tmp_path: Path) -> None:
    home = Path(os.environ["NBFLOW_HOME"])
    get_store()  # (creates the journal)
    db = sqlite3.connect(home / "journal.sqlite")
    db.execute("INSERT INTO lease_processes VALUES('another-machine', 1, 0, 0, ?, 1)", (time.time() + 3600,))
    db.commit()  # another process is there: this one leases

    @nf.task
    def broken(x: int) -> int:
        raise ValueError("no")

    @nf.task(cache=True)
    def probe(x: int) -> int:  # runs after broken failed (one worker), in the same run
        conn = sqlite3.connect(home / "journal.sqlite")
        deadline = time.monotonic() + 60
        while conn.execute("SELECT count(*) FROM leases").fetchone()[0] > 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        return int(conn.execute("SELECT count(*) FROM leases").fetchone()[0])

    with nf.Workflow("fails") as wf:
        broken(1)
        left = probe(2)
    run = wf.run(workers=1, raise_on_error=False, continue_on_error=True)
    assert run[left] == 1  # probe's own lease; broken's was released when it failed
    assert db.execute("SELECT count(*) FROM leases").fetchone()[0] == 0  # and probe's at the end


def test_leases_can_be_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NBFLOW_LEASE", "off")
    assert not lease.enabled()
    with nf.Workflow("off") as wf:
        square(2)
    cache = RunCache(get_store(), run_id="r", workflow=wf)  # type: ignore[arg-type]
    assert cache.leases is None
    monkeypatch.setenv("NBFLOW_LEASE", "on")
    assert RunCache(get_store(), run_id="r", workflow=wf).leases is not None  # type: ignore[arg-type]
