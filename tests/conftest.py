"""Shared fixtures.  Each test gets its own store directory (NBFLOW_HOME) so runs never mix."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest

# Every state change of every run in the tests is checked against the transition table
# (off by default for speed).  Set before nbflow is imported, and inherited by the kernels
# and subprocesses the tests start.
os.environ["NBFLOW_CHECK_TRANSITIONS"] = "1"

from nbflow.engine import taskstate

taskstate.check_transitions(True)  # in case a plugin imported nbflow first


_SESSION_CWD = Path.cwd()


def stray_store_places(tmp_path: Path) -> list[Path]:
    """Where a store made by a test (or a process it started) without ``NBFLOW_HOME`` would
    land outside the test's own folder: above it (``/tmp/.nbflow`` when a process runs in
    ``/tmp``), in the folder pytest was started from and above (the checkout), and in ``$HOME``."""
    places = [p / ".nbflow" for p in tmp_path.parents]
    places += [p / ".nbflow" for p in (_SESSION_CWD, *_SESSION_CWD.parents)]
    places.append(Path.home() / ".nbflow")
    return list(dict.fromkeys(places))


# The store and key places given to the workers of the session's Dask cluster (see
# dask_cluster): no test uses them, so anything there was made by a worker that did not use
# the store or key the test's process passed it.
_CLUSTER_PLACES: list[Path] = []


@pytest.fixture(autouse=True)
def _no_durations_from_earlier_tests():
    """What Dask measured for a task earlier in the process is kept by workflow and task
    name (a notebook's rerun places by it), and comes first when a Dask run places its
    tasks: a test whose workflow shares a name with an earlier test's ("sums", "mixed")
    would be placed by that test's durations.  Each test starts without them."""
    agent = sys.modules.get("nbflow.locality.agent")  # (not imported here: only if in use)
    if agent is not None:
        agent._compute.clear()


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    monkeypatch.setenv("NBFLOW_HOME", str(tmp_path / ".nbflow"))
    monkeypatch.setenv("NBFLOW_KEY_FILE", str(tmp_path / ".nbflow-key"))  # never the user's own key
    # A test that searches for its store (no NBFLOW_HOME, its cwd in tmp_path) stops at its
    # own folder: a stray /tmp/.nbflow, left by anyone on a shared machine, is not found.
    monkeypatch.setenv("NBFLOW_CEILING_DIRECTORIES", str(tmp_path.parent))
    places = stray_store_places(tmp_path)
    before = {p for p in [*places, *_CLUSTER_PLACES] if p.exists()}
    yield
    # A store that appeared outside the test's folder: a process that ran without the
    # test's NBFLOW_HOME (or in another folder) recorded runs where later tests, or the
    # developer's own project, would find them.
    made = [str(p) for p in places if p.exists() and p not in before]
    if made:
        pytest.fail(f"the test made a store outside its tmp folder: {', '.join(made)}; give the "
                    "process it started NBFLOW_HOME (or a cwd under tmp_path)", pytrace=False)
    # (the session cluster's workers were started before this test's NBFLOW_HOME and key
    # were set, and serve every test: what they make must be the test's, passed to them)
    made = [str(p) for p in _CLUSTER_PLACES if p.exists() and p not in before]
    if made:
        pytest.fail(f"a worker of the session's Dask cluster used its own store or key, not the "
                    f"test's: {', '.join(made)}; pass the worker the store (or key file) of the "
                    "process that submitted the task", pytrace=False)


def nbflow_threads() -> list[str]:
    """Names of live threads nbflow started (runner loops and task pools)."""
    return [t.name for t in threading.enumerate() if t.name.startswith("nbflow-")]


def nbflow_threads_left(before: set[str] | frozenset[str] = frozenset(), timeout: float = 30.0) -> list[str]:
    """The nbflow threads (not in ``before``) still alive once they have had ``timeout``
    seconds to end: a run's end stops them, and some (a pool's threads) finish after it
    returns, which a busy machine can stretch; polled, not a fixed sleep."""
    deadline = time.monotonic() + timeout
    left = [n for n in nbflow_threads() if n not in before]
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [n for n in nbflow_threads() if n not in before]
    return left


def child_pids() -> set[int]:
    import psutil

    return {p.pid for p in psutil.Process(os.getpid()).children(recursive=True)}


def children_left(before: set[int], ignore: str | None = None, timeout: float = 30.0) -> list[int]:
    """The child processes started since ``before`` that are still alive once they have had
    ``timeout`` seconds to go (polled: how long exiting processes take to be reaped depends
    on the machine's load, a fixed sleep does not), leaving out those whose command line
    holds ``ignore``."""
    import psutil

    def left() -> list[int]:
        out = []
        for pid in child_pids() - before:
            try:
                proc = psutil.Process(pid)
                if proc.status() == psutil.STATUS_ZOMBIE:
                    continue  # (exited; its parent has not reaped it yet)
                if ignore is None or ignore not in " ".join(proc.cmdline()):
                    out.append(pid)
            except psutil.NoSuchProcess:
                pass
        return out

    deadline = time.monotonic() + timeout
    still = left()
    while still and time.monotonic() < deadline:
        time.sleep(0.1)
        still = left()
    return still


@pytest.fixture(scope="session")
def dask_cluster(tmp_path_factory):
    """A real multi-process Dask cluster for the tests that connect by address.

    It starts before the first test that uses it sets its own ``NBFLOW_HOME`` and
    ``NBFLOW_KEY_FILE``, and serves every later test, so its workers would inherit the
    environment pytest started with (the developer's own store and key).  They get places
    of their own instead, which no test uses: a worker that makes a store or key there did
    not use the test's, and :func:`_isolated_home` fails that test."""
    distributed = pytest.importorskip("distributed")
    own = tmp_path_factory.mktemp("dask-cluster-workers")
    home, key = own / ".nbflow", own / "key"
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
        env={"NBFLOW_HOME": str(home), "NBFLOW_KEY_FILE": str(key)},
    )
    _CLUSTER_PLACES.extend([home, key])
    try:
        yield cluster
    finally:
        cluster.close()
