"""Which tasks of a Dask run were short of memory, from what the cluster itself recorded.

Read once, as the run's client closes (with the transfer logs), and turned into the
locality report's "give these tasks more memory" suggestions.  Three kinds of evidence:

* **spilled** — the run's results that the worker wrote to disk because its managed
  memory passed Dask's ``target`` fraction (``Worker.data.disk``, the spill buffer's disk
  side, at the end of the run).  Each costs a write and a later read of its bytes.
* **restarted** — tasks that were running on a worker that died or was restarted (the
  scheduler's ``TaskState.suspicious`` count; a nanny restarts a worker past its memory
  ``terminate`` fraction); Dask ran them again elsewhere.
* **near the limit** — a worker whose process memory peaked at or above the fraction at
  which Dask pauses a worker (``distributed.worker.memory.pause``, 80% by default) of its
  memory limit, from the worker's own system monitor; the run's biggest results on it are
  named, since they are what filled it.

Nothing is estimated: every figure is one the workers or the scheduler kept.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

PAUSE_FRACTION = 0.8  # Dask's default pause threshold (used when the config has none)


@dataclass
class WorkerMemory:
    """What one worker recorded about memory during the run."""

    limit: int  # memory limit in bytes (0: none)
    peak: int  # peak process memory its monitor saw (bytes)
    pause_at: float  # fraction of the limit at which Dask pauses it
    spilled: dict[str, int] = field(default_factory=dict)  # dask key -> bytes on disk


@dataclass
class MemoryEvidence:
    workers: dict[str, WorkerMemory] = field(default_factory=dict)
    restarted: dict[str, int] = field(default_factory=dict)  # dask key -> times its worker died


def _peak_since(monitor: Any, since: float) -> int:
    """The highest process memory ``monitor`` (a worker's system monitor) sampled since
    ``since`` (wall clock, less one sampling interval of margin), or its latest sample.
    Only the run's window is read: the monitor keeps up to an hour of samples of a dozen
    quantities, which a copy of the whole (``range_query(0)``) would ship back every run,
    and whose peak would be the worker's since it started rather than the run's."""
    q = monitor.quantities
    times, mem = q.get("time"), q.get("memory")
    if not mem:
        return 0
    peak = None
    for t, m in zip(reversed(times), reversed(mem), strict=False):
        if t < since - 1.0:
            break
        peak = m if peak is None or m > peak else peak
    return int(peak if peak is not None else mem[-1])


def _probe(keys: list[str], dask_worker: Any = None, since: float | None = None) -> dict[str, Any]:
    """On a worker: its limit, peak memory (since ``since``, wall clock, when given) and
    which of ``keys`` are spilled to disk."""
    import dask

    data = dask_worker.data
    disk = getattr(data, "disk", None)
    spilled: dict[str, int] = {}
    if disk is not None:
        on_disk = set(disk.keys())
        for k in keys:
            if k in on_disk:
                ts = dask_worker.state.tasks.get(k)
                spilled[k] = int(ts.nbytes) if ts is not None and ts.nbytes else 0
    limit = int(getattr(dask_worker.memory_manager, "memory_limit", None) or 0)
    peak = 0
    try:
        if since is not None:
            peak = _peak_since(dask_worker.monitor, since)
        else:
            mem = dask_worker.monitor.range_query(0).get("memory") or []
            peak = int(max(mem)) if mem else 0
    except Exception:  # an older monitor: the current figure then
        peak = int(dask_worker.monitor.get_process_memory())
    pause = dask.config.get("distributed.worker.memory.pause", PAUSE_FRACTION)
    return {"limit": limit, "peak": peak, "spilled": spilled,
            "pause_at": float(pause) if pause else PAUSE_FRACTION}


def _suspicious(keys: list[str], dask_scheduler: Any = None) -> dict[str, int]:
    out = {}
    for k in keys:
        ts = dask_scheduler.tasks.get(k)
        if ts is not None and ts.suspicious:
            out[k] = int(ts.suspicious)
    return out


def read_memory(client: Any, keys: Iterable[str]) -> MemoryEvidence:
    """The memory evidence of the run's Dask ``keys`` (see the module)."""
    ks = list(keys)
    return evidence(client.run(_probe, ks), client.run_on_scheduler(_suspicious, ks))


def evidence(probes: dict[str, dict[str, Any]], restarted: dict[str, int]) -> MemoryEvidence:
    """:class:`MemoryEvidence` from the workers' :func:`probe` answers and the scheduler's
    :func:`suspicious` one (for a caller that asks the workers for more in the same call)."""
    ev = MemoryEvidence()
    for w, got in probes.items():
        ev.workers[w] = WorkerMemory(got["limit"], got["peak"], got["pause_at"], dict(got["spilled"]))
    ev.restarted = dict(restarted)
    return ev


probe = _probe
suspicious = _suspicious
