"""Every byte a run moved between Dask workers, read from Dask's own transfer logs.

Each Dask worker keeps a log of the data it fetched from other workers
(``Worker.transfer_incoming_log``: start, stop, duration, the peer, and the size of every
key in the batch).  At the end of a run the logs are read once, with ``client.run`` or, on a
scheduler in this process, its own broadcast to the workers the run's tasks were sent to
(just after the run returns, when the client stays open: see
:meth:`.agent.LocalityAgent.closing` and ``_ask``) and the entries for this run's keys are
kept: nothing is estimated.

A fetched key is a task's result moved to the worker of one of its consumers.  The row
names the producer and the consumer it was fetched for: the first consumer (in submit
order) that ran on the receiving worker; a second consumer on the same worker finds the
data already there and moves nothing.  A batch that carried several keys has its duration
split between them in proportion to their sizes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

COLUMNS = ["producer", "consumer", "from_worker", "to_worker", "bytes", "seconds", "start",
           "dask_key"]


def read_incoming_logs(client: Any) -> dict[str, list[dict[str, Any]]]:
    """``{worker address: [log entry, ...]}`` from every worker of ``client``'s cluster."""
    return client.run(_incoming_log)


def incoming_log(dask_worker: Any, keys: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """On a worker: its incoming transfer log, as plain data; with ``keys``, only the
    entries that fetched one of them (a worker keeps up to a thousand entries over every
    run of a session; the end of a run needs its own, and sends only those back)."""
    return _incoming_log(dask_worker, keys)


def _incoming_log(dask_worker: Any, keys: Iterable[str] | None = None) -> list[dict[str, Any]]:
    wanted = None if keys is None else set(keys)
    out = []
    for e in list(dask_worker.transfer_incoming_log):
        got = {str(k): v for k, v in dict(e.get("keys") or {}).items()}
        if wanted is not None and wanted.isdisjoint(got):
            continue
        out.append({"start": e.get("start"), "duration": e.get("duration"), "who": e.get("who"),
                    "keys": got})
    return out


def edges_from_logs(
    logs: dict[str, list[dict[str, Any]]],
    node_of: dict[str, str],
    consumers_on: dict[tuple[str, str], list[str]],
) -> list[dict[str, Any]]:
    """Rows of ``run.transfers`` from the logs.

    ``node_of`` maps this run's Dask keys to task keys (keys of other runs are ignored);
    ``consumers_on[(producer task key, worker)]`` lists, in submit order, the consumers of
    that producer that ran on that worker.
    """
    rows: list[dict[str, Any]] = []
    for to_worker, entries in logs.items():
        for e in entries:
            keys = e["keys"]
            total = sum(v for v in keys.values() if v) or 1
            for dkey, nbytes in keys.items():
                producer = node_of.get(dkey)
                if producer is None:
                    continue
                consumers = consumers_on.get((producer, to_worker), [])
                rows.append({
                    "producer": producer,
                    "consumer": consumers[0] if consumers else None,
                    "from_worker": e["who"],
                    "to_worker": to_worker,
                    "bytes": int(nbytes or 0),
                    "seconds": float(e["duration"] or 0.0) * (nbytes or 0) / total,
                    "start": e["start"],
                    "dask_key": dkey,
                })
    rows.sort(key=lambda r: (r["start"] or 0.0, r["producer"]))
    return rows


def frame(rows: Iterable[dict[str, Any]]) -> Any:
    import pandas as pd

    return pd.DataFrame(list(rows), columns=COLUMNS)


class ProcessAccount:
    """The rows a process backend recorded, seen the way the report reads a Dask run's agent.

    A process task's inputs come from the run's process and its result goes back there, so
    every row has ``"main"`` on one side and ``process:<pid>`` on the other.  For the report
    the rows with a producer and a consumer are the edges moved; results coming back are
    bytes "to the notebook" and arguments written in the notebook bytes "from" it."""

    mode = "process"
    def __init__(self, process_backend: Any) -> None:
        self.backend = self  # (what the report reads its client-side byte counts from)
        self.fetched: list[tuple[str, int | None]] = []  # (nothing is fetched on request)
        self.rows = process_backend.rows
        self.client_bytes = sum(r["bytes"] for r in self.rows if r["consumer"] is None)
        self.scattered_bytes = sum(r["bytes"] for r in self.rows if r["producer"] is None)
        self._moved = process_backend.input_bytes_moved()
        self.order: list[str] = []
        self.inputs_of: dict[str, list[tuple[str, str | None, int | None]]] = {}
        self.worker_of: dict[str, str | None] = {}
        self.nbytes_of: dict[str, int | None] = {}
        for r in self.rows:
            if r["consumer"] is None:  # a result coming back
                self.worker_of[r["producer"]] = r["from_worker"]
                self.nbytes_of[r["producer"]] = r["bytes"]
                self.order.append(r["producer"])
            elif r["producer"] is not None:
                self.inputs_of.setdefault(r["consumer"], []).append(
                    (r["producer"], r["from_worker"], r["bytes"]))

    def transfers(self) -> Any:
        return frame([r for r in self.rows if r["producer"] is not None and r["consumer"] is not None])

    def input_bytes_moved(self) -> dict[str, int]:
        return dict(self._moved)
