"""A script that ends right after a Dask run on its own client still journals the run's
transfers: the end-of-run read, deferred until the result brought with the run's end
arrives and is taken, is done at the interpreter's exit when neither happened first.

The script runs in a subprocess (its exit is what is tested); its gather of the brought
result is held back (a slow network), so that the process reaches its exit first, every
time: the read then has no thread yet."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from nbflow.store.hooks import stored_transfers

pytest.importorskip("distributed")
pytestmark = pytest.mark.timeout(300)

SCRIPT = textwrap.dedent('''
    import asyncio

    import distributed
    import numpy as np

    import nbflow as nf
    from nbflow import locality
    from nbflow.engine.backends import dask as dask_backend

    gather = dask_backend.DaskBackend._gather_here

    async def slow(self, r):  # (the brought result arrives after the script has ended)
        await asyncio.sleep(1.0)
        return await gather(self, r)

    dask_backend.DaskBackend._gather_here = slow


    @nf.task
    def make(n):
        return np.ones(n // 8)


    @nf.task
    def inc(a):
        return a + 1


    @nf.task
    def total(a):
        return float(a.sum())


    if __name__ == "__main__":
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                           dashboard_address=None)
        client = distributed.Client(cluster, set_as_default=False)
        with nf.Workflow("read-at-exit") as wf:
            x = make(2_000_000)
            out = total(inc(x))
        with locality.placement("round-robin"):  # (every link moves its input)
            run = wf.run(backend=client, cache=False)
        print(run.id, flush=True)
        # the end: no run[out], no run.transfers, no client.close()
''')


def test_a_script_that_ends_right_after_the_run_still_journals_its_transfers(tmp_path):
    script = tmp_path / "ends_at_once.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    run_id = done.stdout.split()[0]
    rows = stored_transfers(run_id)
    assert len(rows) == 2 and all(r[4] >= 2_000_000 for r in rows), (rows, done.stderr[-3000:])
