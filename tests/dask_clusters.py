"""A small in-process Dask cluster and its client, for the tests that need one of their own."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def own_client(processes: bool = False, allowed_failures: int | None = None) -> Iterator[Any]:
    """Two single-threaded workers (threads of this process, or processes when a test kills
    them) and a client that is not made the default; closed on leaving.  With
    ``allowed_failures`` the scheduler gives a task up after that many worker deaths."""
    import dask
    import distributed

    config = ({"distributed.scheduler.allowed-failures": allowed_failures}
              if allowed_failures is not None else {})
    with dask.config.set(config):
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=processes,
                                           dashboard_address=None)
        try:
            with distributed.Client(cluster, set_as_default=False) as c:
                yield c
        finally:
            cluster.close()
