"""``%%workflow --backend NAME`` runs on the notebook's own ``distributed.Client`` held in
the variable ``NAME``: its results stay on the cluster between cells (a run given ``dask``
or an address opens a client of its own and brings what it holds here before closing it),
and a name that is no backend and no Client is one line of usage error."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "notebooks"))
import nbharness as h

pytest.importorskip("distributed")
pytestmark = pytest.mark.timeout(600)

SETUP = """\
import numpy as np
import nbflow as nf
from distributed import Client, LocalCluster

cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
client = Client(cluster)
not_a_client = 42

@nf.task
def make(n):
    return np.ones(n)

@nf.task
def total(a):
    return float(a.sum())
"""


def test_a_run_on_a_notebook_client_keeps_results_on_its_cluster(tmp_path: Path) -> None:
    nb = h.notebook([
        SETUP,
        "%%workflow big --backend client --quiet\narr = make(500_000)\ns = total(arr)",
        "run = nf.last_run()\n"
        "print('client', run.backends['dask'].client is client)\n"
        "print('brought at close', run.backends['dask'].closing_bytes)\n"
        "print('total', s)",
        "%%workflow after --backend client --quiet\nt = total(make(10))",
        "print('second', t, 'open', client.status)",
        "%%workflow w --backend nosuch\nu = total(make(3))",
        "%%workflow w --backend not_a_client\nu = total(make(3))",
        "print('u bound', 'u' in dir())",
        "client.close(); cluster.close()",
    ])
    h.execute(nb, tmp_path, timeout=300)
    printed = h.text(nb.cells[2])
    assert "client True" in printed  # the run used the notebook's Client, not one of its own
    assert "brought at close 0" in printed  # nothing came here as the run ended
    assert "total 500000.0" in printed
    assert "second 10.0 open running" in h.text(nb.cells[4])  # the Client outlives the runs
    nosuch = h.text(nb.cells[5])
    assert "UsageError" in nosuch and "unknown backend 'nosuch'" in nosuch
    assert "variable holding a distributed.Client" in nosuch
    wrong = h.text(nb.cells[6])
    assert "UsageError" in wrong and "'not_a_client' is of type int, not a distributed.Client" in wrong
    assert "u bound False" in h.text(nb.cells[7])
    assert not h.errors(nb.cells[8])
