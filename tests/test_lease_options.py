"""The ``lease=`` and ``lease_ttl=`` run options (and ``%%workflow --no-lease --lease-ttl``).

Leases are taken only while another live process uses the store, so each test registers one:
a real sleeping subprocess, entered in ``lease_processes`` as leasing.  While a task of the
run is executing (it waits on an event) the ``leases`` table shows what the run took: a
lease whose life is the run's ``lease_ttl`` (else ``NBFLOW_LEASE_TTL``), or none with
``lease=False`` even though ``NBFLOW_LEASE`` is on.  Bad values are refused before the run.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import nbflow as nf
from nbflow.store.lease import HOST
from nbflow.store.store import get_store

pytestmark = pytest.mark.timeout(120)

STARTED = threading.Event()
GO = threading.Event()


@nf.task
def held(x):
    STARTED.set()
    GO.wait(30)
    return x + 1


def _db() -> sqlite3.Connection:
    return sqlite3.connect(get_store().journal.path)


@pytest.fixture
def other_process() -> Iterator[None]:
    """Another live process on the store, already leasing (so this one leases too)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        get_store()  # (the store and its tables exist)
        now = time.time()
        with _db() as db:
            db.execute("INSERT OR REPLACE INTO lease_processes(host, pid, started, heartbeat, expires, "
                       "leasing) VALUES(?,?,?,?,?,1)", (HOST, proc.pid, now, now, now + 600))
        yield
    finally:
        proc.kill()
        proc.wait()


def _leases_while_running(**options: Any) -> list[tuple[str, float]]:
    """Run ``held`` with ``options``; the (run id, expires - heartbeat) of every lease row
    seen while the task executes."""
    STARTED.clear()
    GO.clear()
    with nf.Workflow("leased") as wf:
        held(int(time.time() * 1e6))  # a new argument each time: a miss, so a lease decision
    run = wf.start(**options)
    try:
        assert STARTED.wait(60), "the task did not start"
        with _db() as db:
            rows = db.execute("SELECT run_id, expires - heartbeat FROM leases").fetchall()
    finally:
        GO.set()
        run.wait()
    assert run.status == "completed"
    return [(r, round(t, 6)) for r, t in rows]


def test_lease_ttl_option_sets_the_life_of_the_runs_leases(other_process: None,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NBFLOW_LEASE_TTL", "11")
    assert [t for _, t in _leases_while_running()] == [11.0]  # the environment's default
    assert [t for _, t in _leases_while_running(lease_ttl=7)] == [7.0]  # the option wins
    assert [t for _, t in _leases_while_running(lease_ttl=2.5, lease=True)] == [2.5]


def test_lease_false_takes_no_lease_although_the_environment_says_on(
        other_process: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NBFLOW_LEASE", "on")
    assert len(_leases_while_running()) == 1
    assert _leases_while_running(lease=False) == []


def test_lease_true_takes_leases_although_the_environment_says_off(
        other_process: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NBFLOW_LEASE", "off")
    assert _leases_while_running() == []
    assert len(_leases_while_running(lease=True)) == 1


@pytest.mark.parametrize("options, words", [
    ({"lease": "no"}, "lease='no' is not allowed; lease must be True"),
    ({"lease": 0}, "lease=0 is not allowed"),
    ({"lease_ttl": -1}, "lease_ttl=-1 is not allowed; lease_ttl must be a finite number of seconds > 0"),
    ({"lease_ttl": 0}, "lease_ttl=0 is not allowed"),
    ({"lease_ttl": float("inf")}, "lease_ttl=inf is not allowed"),
    ({"lease_ttl": True}, "lease_ttl=True is not allowed"),
    ({"lease_ttl": "30"}, "lease_ttl='30' is not allowed"),
])
def test_bad_lease_options_are_refused_before_the_run(options: dict[str, Any], words: str) -> None:
    with nf.Workflow("bad") as wf:
        held(1)
    with pytest.raises(nf.InvalidOptionError, match=words.replace("(", r"\(")) as got:
        wf.run(**options)
    assert isinstance(got.value, nf.NbflowError)
    assert nf.last_run() is None or nf.last_run().name != "bad"  # nothing ran


def test_a_bad_nbflow_lease_value_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NBFLOW_LEASE", "maybe")
    with nf.Workflow("bad-env") as wf:
        held(1)
    with pytest.raises(nf.WorkflowDefinitionError, match=r"\$NBFLOW_LEASE='maybe' is neither on nor off"):
        wf.run()


def test_workflow_magic_flags(tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent / "notebooks"))
    import nbharness as h

    nb = h.notebook([
        "import nbflow as nf\n@nf.task\ndef one():\n    return 1",
        "%%workflow flagged --no-lease --lease-ttl 7\nx = one()",
        "print(nf.last_run().options.lease, nf.last_run().options.lease_ttl, x)",
        "%%workflow flagged --lease-ttl -3\nx = one()",
    ])
    h.execute(nb, tmp_path, timeout=120)
    assert not h.errors(nb.cells[1]), h.text(nb.cells[1])
    assert h.stream(nb.cells[2]).strip() == "False 7.0 1"
    # (IPython prints a UsageError instead of raising it into the cell's outputs)
    assert "UsageError: %%workflow: run: lease_ttl=-3.0 is not allowed" in h.text(nb.cells[3])
