"""``nbflow run --no-lease`` and ``--lease-ttl S``: the CLI in a subprocess, a real kernel.

Leases are taken only while another live process uses the store, so the test registers one
(a sleeping subprocess, entered in ``lease_processes`` as leasing).  The notebook's task
reads the ``leases`` table while it executes and records what it saw with ``nf.output``:
one lease with the default life (30 s) without flags, one whose life is ``--lease-ttl``,
none with ``--no-lease``.  A bad ``--lease-ttl`` is refused before any kernel starts.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from batch_helpers import cli, db, write_notebook

import nbflow as nf
from nbflow.store.lease import HOST
from nbflow.store.store import get_store

pytestmark = pytest.mark.timeout(300)

CELLS = [
    "import os, sqlite3, time\nimport nbflow as nf",
    "@nf.task\n"
    "def look(stamp):\n"
    "    path = os.path.join(os.environ['NBFLOW_HOME'], 'journal.sqlite')\n"
    "    with sqlite3.connect(path) as db:\n"
    "        return [round(t, 6) for (t,) in db.execute('SELECT expires - heartbeat FROM leases')]",
    # a new argument each time: a cache miss, so the run decides whether to take a lease
    "with nf.Workflow('leased') as wf:\n    seen = look(time.time_ns())\n"
    "run = wf.run()\nnf.output('seen', run[seen])",
]


@pytest.fixture
def other_process() -> Iterator[None]:
    """Another live process on the store, already leasing (so the notebook's runs lease too)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    try:
        get_store()  # (the store and its tables exist)
        now = time.time()
        conn = db()
        with conn:
            conn.execute("INSERT OR REPLACE INTO lease_processes(host, pid, started, heartbeat, expires, "
                         "leasing) VALUES(?,?,?,?,?,1)", (HOST, proc.pid, now, now, now + 900))
        conn.close()
        yield
    finally:
        proc.kill()
        proc.wait()


def _seen(tmp: Path, *flags: str) -> list[float]:
    nb = write_notebook(tmp / "leases.ipynb", CELLS)
    res = cli("run", str(nb), "-o", str(tmp / "out.ipynb"), "-q", *flags, cwd=tmp)
    assert res.returncode == 0, res.stderr
    return list(nf.outputs(res.stdout.split()[-1])["seen"])


def test_run_lease_flags_reach_the_notebooks_runs(tmp_path: Path, other_process: None,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NBFLOW_LEASE", "NBFLOW_LEASE_TTL"):
        monkeypatch.delenv(name, raising=False)
    assert _seen(tmp_path) == [30.0]  # leases on, the default life
    assert _seen(tmp_path, "--lease-ttl", "7") == [7.0]
    assert _seen(tmp_path, "--no-lease") == []


@pytest.mark.parametrize("value", ["0", "-1", "inf", "nan"])
def test_a_bad_lease_ttl_is_refused_before_the_kernel_starts(tmp_path: Path, value: str) -> None:
    nb = write_notebook(tmp_path / "leases.ipynb", CELLS)
    for command in ("run", "sweep"):
        res = cli(command, str(nb), f"--lease-ttl={value}", cwd=tmp_path)
        assert res.returncode == 2
        said = f"nbflow {command}: --lease-ttl {float(value)}: give a finite number of seconds > 0"
        assert said in res.stderr
        assert not (tmp_path / "leases.out.ipynb").exists()


def test_help_documents_the_lease_flags(tmp_path: Path) -> None:
    for command in ("run", "sweep"):
        out = cli(command, "--help", cwd=tmp_path).stdout
        assert "--no-lease" in out and "--lease-ttl S" in out and "NBFLOW_LEASE" in " ".join(out.split())


def test_sweep_passes_the_lease_flags_to_each_point(tmp_path: Path, other_process: None,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NBFLOW_LEASE", raising=False)
    nb = write_notebook(tmp_path / "leases.ipynb", CELLS, parameters="k = 0")
    res = cli("sweep", str(nb), "-p", "k", "1", "--lease-ttl", "9", "--out-dir", str(tmp_path / "sw"),
              cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    conn = db()
    points = [b for (b,) in conn.execute("SELECT id FROM batches WHERE kind = 'sweep-point'")]
    conn.close()
    assert len(points) == 1
    assert list(nf.outputs(points[0])["seen"]) == [9.0]
