"""The placement rule replayed on a task graph at any cluster size, without a cluster.

:func:`simulate_placement` runs a DAG with known task durations and edge sizes on
``workers`` single-slot workers and reports the makespan and the bytes moved between
workers, for one placement *policy*:

``"locality"``        the rule of :mod:`.placement` (the same :class:`~.placement.Placer`
                      code the Dask runs use, fed with simulated completions and, for
                      its join term, where each consumer's other inputs were placed; given
                      ``predicted`` durations, it weighs each queued task by its own, as a
                      run with history does, instead of the mean of those finished)
``"round-robin"``     each task to the next worker in turn
``"earliest-start"``  greedy: the worker where the task could start soonest, knowing every
                      worker's queue, every input's arrival time and the task durations
                      (an informed baseline that a real scheduler cannot quite match)

The model: a task is placed when its last input is produced; each worker runs its queue
one task at a time, longest remaining path first; a task starts when its worker is free
and its inputs have arrived.  An input produced on another worker arrives ``bytes /
bandwidth`` seconds after it was produced (transfers do not contend; a result fetched once
to a worker is there for every later consumer on that worker).  An edge missing from
``edge_bytes`` orders two tasks and carries nothing (``.after()``, or a collector waiting for
what its consumers fetch themselves).  Inputs of the workflow
itself (files no task produced) are taken as available everywhere.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..engine.priority import longest_remaining_path
from .joins import MAX_CONSUMERS, MAX_INPUTS
from .placement import BANDWIDTH, Placer, RoundRobin

POLICIES = ("locality", "round-robin", "earliest-start")


@dataclass(frozen=True)
class PlacementOutcome:
    policy: str
    workers: int
    makespan: float
    bytes_moved: int
    edge_bytes: int  # bytes on all edges (what moving everything would cost)
    placement: tuple[str, ...] = ()  # the worker of each node ("w000", "w001", ...)
    finish: tuple[float, ...] = ()  # when each node finished (seconds from the start)


def simulate_placement(
    succs: Sequence[Sequence[int]],
    durations: Sequence[float],
    edge_bytes: Mapping[tuple[int, int], int],
    workers: int,
    policy: str = "locality",
    bandwidth: float = BANDWIDTH,
    predicted: Sequence[float | None] | None = None,
) -> PlacementOutcome:
    """Simulate one policy (see the module).  Nodes are ``0..n-1`` in topological order.

    ``predicted``: each task's predicted duration, handed to the rule as a run hands it
    the history's means (None for a task, or no list: the rule counts that task as the
    mean of the durations finished so far)."""
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; use one of {POLICIES}")
    if workers < 1:
        raise ValueError("workers must be at least 1")
    n = len(durations)
    if predicted is not None and len(predicted) != n:
        raise ValueError(f"predicted has {len(predicted)} durations for {n} tasks")
    guess: Sequence[float | None] = predicted if predicted is not None else [None] * n
    preds: list[list[int]] = [[] for _ in range(n)]
    for u, vs in enumerate(succs):
        for v in vs:
            preds[v].append(u)
    level = longest_remaining_path(succs, order=list(range(n)))
    names = [f"w{k:03d}" for k in range(workers)]
    placer: Placer = RoundRobin() if policy == "round-robin" else Placer(bandwidth)
    placer.set_workers({w: 1 for w in names})

    data_preds = [[p for p in ps if (p, v) in edge_bytes] for v, ps in enumerate(preds)]
    waiting = [len(p) for p in preds]
    where: list[str | None] = [None] * n
    finish = [0.0] * n
    arrived: dict[tuple[int, str], float] = {}  # (producer, worker) -> when its data is there
    queue: dict[str, list[tuple[float, int]]] = {w: [] for w in names}
    free_at = dict.fromkeys(names, 0.0)  # when the worker's current task ends
    busy = dict.fromkeys(names, False)
    queued_work = dict.fromkeys(names, 0.0)  # durations queued (earliest-start's estimate)
    moved = 0
    events: list[tuple[float, int, int]] = []  # (finish time, seq, node)
    seq = 0

    def inputs_at(v: int, w: str, now: float) -> float:
        nonlocal moved
        ready = now
        for p in preds[v]:
            if where[p] == w:
                continue
            b = edge_bytes.get((p, v))
            if b is None:  # an ordering edge: v waits for p, and p's result stays where it is
                ready = max(ready, finish[p])
                continue
            key = (p, w)
            if key not in arrived:
                arrived[key] = finish[p] + b / bandwidth
                moved += b
            ready = max(ready, arrived[key])
        return ready

    def estimate(v: int, w: str, now: float) -> float:
        t = max(now, free_at[w] if busy[w] else now) + queued_work[w]
        for p in preds[v]:
            if where[p] != w:
                t = max(t, arrived.get((p, w), finish[p] + edge_bytes.get((p, v), 0) / bandwidth))
        return t

    def start_next(w: str, now: float) -> None:
        nonlocal seq
        if busy[w] or not queue[w]:
            return
        _, v = heapq.heappop(queue[w])
        queued_work[w] -= durations[v]
        begin = inputs_at(v, w, now)
        where[v] = w
        finish[v] = begin + durations[v]
        busy[w] = True
        free_at[w] = finish[v]
        seq += 1
        heapq.heappush(events, (finish[v], seq, v))

    def joins_of(v: int) -> list[tuple[int, list[tuple[str | None, int]]]]:
        """The rule's join term for ``v``, within the limits a run's JoinGraph keeps (its
        first consumers, and only those with a few data inputs): a reduce over 10 000 items
        would otherwise cost each item a pass over the other 9 999."""
        out = []
        for c in succs[v][:MAX_CONSUMERS]:
            ins = data_preds[c]
            if (v, c) in edge_bytes and 2 <= len(ins) <= MAX_INPUTS:
                out.append((edge_bytes[(v, c)],
                            [(assigned[p] or None, edge_bytes[(p, c)]) for p in ins if p != v]))
        return out

    def place(v: int, now: float) -> None:
        if policy == "earliest-start":
            w = min(names, key=lambda x: (estimate(v, x, now), x))
            placer.backlog[w] = placer.backlog.get(w, 0) + 1
        else:
            joins = joins_of(v)
            w = placer.choose([(where[p], edge_bytes.get((p, v), 0)) for p in preds[v]],
                              seconds=guess[v], joins=joins) or names[0]
        heapq.heappush(queue[w], (-level[v], v))
        queued_work[w] += durations[v]
        where[v] = None
        assigned[v] = w
        start_next(w, now)

    assigned: list[str] = [""] * n
    for v in range(n):
        if waiting[v] == 0:
            place(v, 0.0)
    makespan = 0.0
    while events:
        now, _, u = heapq.heappop(events)
        makespan = max(makespan, now)
        w = assigned[u]
        where[u] = w
        busy[w] = False
        placer.finished(w, durations[u], guess[u] if policy != "earliest-start" else None)
        for v in succs[u]:
            waiting[v] -= 1
            if waiting[v] == 0:
                place(v, now)
        start_next(w, now)
    total = int(sum(edge_bytes.values()))
    return PlacementOutcome(policy, workers, makespan, moved, total, tuple(assigned), tuple(finish))
