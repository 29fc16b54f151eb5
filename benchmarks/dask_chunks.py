"""Batched map items on Dask: bytes through the client, chunk results gathered or left remote.

A ``LocalCluster`` with 4 single-thread worker processes runs a map of ``--items`` (200)
items, each returning a ``--mb`` (1) MB numpy array, then a task on the cluster that sums
them; only the sum (a float) is asked for.  Three systems, alternated ``--repeat`` times in
one process:

- ``gathered``: adaptive batching (``batch=True``), each chunk's list of results brought to the client and
  the items' values sent out again to the sum (how batched chunks ran before
  ``engine/backends/dask_chunks.py``);
- ``remote``: adaptive batching (``batch=True``), each item's result left on its worker (today);
- ``unbatched``: ``batch=False``, one Dask task per item (results remote, the reference).

Bytes through the client are the run's own counts (``run.locality_report()``: results
brought here plus local values sent out) minus the one result asked for, and
independently Dask's outgoing transfer logs of the run's keys to anything that is not a
worker.  Worker-to-worker bytes come from the workers' incoming transfer logs.  Target:
``remote`` brings ~0 bytes of items nobody asked for to the client (< 1 % of the items'
bytes), and its makespan is no worse than ``gathered``'s.

Usage::

    .venv/bin/python benchmarks/dask_chunks.py --repeat 3 --json benchmarks/dask_chunks.json
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

if __package__:
    from . import _harness
else:
    import _harness

MB = 1_000_000
SYSTEMS = ("gathered", "remote", "unbatched")


def block(i: int, nbytes: int) -> Any:
    import numpy as np

    return np.full(max(1, nbytes // 8), float(i))


def total(parts: list[Any]) -> float:
    return float(sum(float(p[0]) for p in parts))


@contextlib.contextmanager
def gathered_chunks() -> Iterator[None]:
    """Chunks as before: no split on the worker, the chunk's outcomes fetched here."""
    from nbflow.engine.backends.dask import DaskBackend

    split = DaskBackend.split_chunk
    del DaskBackend.split_chunk
    try:
        yield
    finally:
        DaskBackend.split_chunk = split  # type: ignore[method-assign]


def _outgoing(client: Any) -> dict[str, int]:
    return client.run(lambda dask_worker: len(dask_worker.transfer_outgoing_log))


def _incoming(client: Any) -> dict[str, int]:
    return client.run(lambda dask_worker: len(dask_worker.transfer_incoming_log))


def _since(client: Any, before_in: dict[str, int], before_out: dict[str, int]) -> tuple[int, int]:
    """(bytes between workers, bytes from workers to anything else) since the marks."""
    workers = set(client.scheduler_info()["workers"])

    def tail(start_in: dict[str, int], start_out: dict[str, int], dask_worker: Any = None) -> Any:
        a = dask_worker.address
        inc = list(dask_worker.transfer_incoming_log)[start_in.get(a, 0):]
        out = list(dask_worker.transfer_outgoing_log)[start_out.get(a, 0):]
        return (sum(e["total"] for e in inc), [(e["who"], e["total"]) for e in out])

    between = outside = 0
    for inc, out in client.run(tail, before_in, before_out).values():
        between += int(inc)
        outside += int(sum(n for who, n in out if who not in workers))
    return between, outside


def sample(nf: Any, client: Any, system: str, items: int, nbytes: int) -> dict[str, Any]:
    blk = nf.task(name="block")(block)
    tot = nf.task(name="total")(total)
    with nf.Workflow(f"dask-chunks-{system}") as wf:
        parts = blk.map(range(items), nbytes=nbytes,
                        batch=system != "unbatched")
        s = tot(parts)
    before_in, before_out = _incoming(client), _outgoing(client)
    ctx = gathered_chunks() if system == "gathered" else contextlib.nullcontext()
    with ctx:
        t0 = time.perf_counter()
        run = wf.run(backend=client, cache=False)
        value = run[s]
        makespan = time.perf_counter() - t0
    between, outside = _since(client, before_in, before_out)
    rep = run.locality_report()
    calls = int(run.tasks["key"].str.startswith("block").sum())
    out = {"makespan_s": makespan, "value": value, "items": calls,
           "client_bytes": int(rep.bytes_to_client + rep.bytes_from_client),
           "dask_bytes_to_outside": outside, "worker_bytes": between}
    del run, wf, parts, s
    gc.collect()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=200)
    ap.add_argument("--mb", type=float, default=1.0, help="MB per item's result")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    log: Callable[[str], None] = _harness.progress("dask_chunks")
    nf = _harness.import_nbflow()

    nbytes = int(args.mb * MB)
    with _harness.local_cluster() as client, _harness.nbflow_home(replace=True):
        samplers = {sy: (lambda sy=sy: sample(nf, client, sy, args.items, nbytes))
                    for sy in SYSTEMS}
        _harness.alternate({sy: (lambda sy=sy: sample(nf, client, sy, 8, 1000))
                            for sy in SYSTEMS}, 1)  # warm-up: imports on the workers
        got = _harness.alternate(samplers, args.repeat, log=log)
    expected = float(sum(range(args.items)))
    per: dict[str, Any] = {}
    for sy, xs in got.items():
        per[sy] = {k: statistics.median(x[k] for x in xs)
                   for k in ("makespan_s", "client_bytes", "dask_bytes_to_outside", "worker_bytes")}
        per[sy]["client_bytes_max"] = max(x["client_bytes"] for x in xs)
        per[sy]["samples_makespan_s"] = [x["makespan_s"] for x in xs]
        per[sy]["correct"] = all(x["value"] == expected for x in xs)
    items_bytes = args.items * nbytes
    targets = {
        "remote: client bytes / items' bytes": _harness.target(
            per["remote"]["client_bytes_max"] / items_bytes, 0.01, "<"),
        "remote: Dask's bytes to the client / items' bytes": _harness.target(
            per["remote"]["dask_bytes_to_outside"] / items_bytes, 0.01, "<"),
        "remote / gathered makespan": _harness.target(
            _harness.ratio(per["remote"]["makespan_s"], per["gathered"]["makespan_s"]), 1.0, "<="),
    }
    for sy, p in per.items():
        log(f"{sy}: {p['makespan_s']:.2f} s, client {p['client_bytes'] / MB:.1f} MB, "
            f"dask to outside {p['dask_bytes_to_outside'] / MB:.1f} MB, "
            f"between workers {p['worker_bytes'] / MB:.1f} MB")
    import os

    doc = {"benchmark": "dask_chunks", "machine": _harness.machine_info(),
           "load_average_at_end": os.getloadavg(),
           "config": {"items": args.items, "mb_per_item": args.mb, "repeat": args.repeat,
                      "workers": 4},
           "statistic": "median over repeats; systems alternated round-robin in one process",
           "systems": per, "targets": targets,
           "all_met": all(t["met"] for t in targets.values())}
    _harness.emit_json(doc, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
