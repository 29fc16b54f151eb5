"""Shared fixtures.  Each test gets its own store directory (NBFLOW_HOME) so runs never mix."""

from __future__ import annotations

import os
import threading

import pytest

# Every state change of every run in the tests is checked against the transition table
# (off by default for speed).  Set before nbflow is imported, and inherited by the kernels
# and subprocesses the tests start.
os.environ["NBFLOW_CHECK_TRANSITIONS"] = "1"

from nbflow.engine import taskstate

taskstate.check_transitions(True)  # in case a plugin imported nbflow first


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    monkeypatch.setenv("NBFLOW_HOME", str(tmp_path / ".nbflow"))
    monkeypatch.setenv("NBFLOW_KEY_FILE", str(tmp_path / ".nbflow-key"))  # never the user's own key
    yield


def nbflow_threads() -> list[str]:
    """Names of live threads nbflow started (runner loops and task pools)."""
    return [t.name for t in threading.enumerate() if t.name.startswith("nbflow-")]


def child_pids() -> set[int]:
    import psutil

    return {p.pid for p in psutil.Process(os.getpid()).children(recursive=True)}


@pytest.fixture(scope="session")
def dask_cluster():
    """A real multi-process Dask cluster for the tests that connect by address."""
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    try:
        yield cluster
    finally:
        cluster.close()
