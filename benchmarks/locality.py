"""Data locality on a real Dask cluster, and the placement rule simulated at larger sizes.

**Cluster part** (``--part cluster``): a ``LocalCluster`` with 4 single-thread worker
processes runs workflows with large intermediates (numpy arrays of 1–50 MB):

- ``chains``: 4 independent chains of 5 tasks, each passing a 20 MB array on;
- ``fan``: one task makes 30 MB, 8 tasks each derive 5 MB from it, one task sums them;
- ``shuffle``: 4 tasks make 10 MB each, 4 tasks each read all 4 (all-to-all), one sums;
- ``trace``: a WfFormat trace replayed with its file sizes (scaled so the largest output
  is 20 MB, at least 1 MB each): each task allocates its output and reads its inputs.

Each workflow runs, alternated ``--repeat`` times, as:

- ``gather``: nbflow as it was: every result comes back to the notebook process and is
  sent out again to its consumers;
- ``remote``: results stay on the workers, no placement hints (Dask decides);
- ``locality``: results stay on the workers, placement by nbflow's rule, nbflow's
  defaults: ``keep="reachable"`` releases a result once every task taking it has run
  unless the notebook still names its Ref (here only the final result is named: the
  workflow is traced as a notebook would, each Ref a loop variable rebound);
- ``release``: as ``locality``, but every result is released once consumed
  (``locality.placement(keep="unconsumed")``), as ``dask.delayed`` does;
- ``hold-all``: as ``locality``, but every result stays on the cluster
  (``keep="all"``, the default before session 5, so that ``run[ref]`` works for any task);
- ``session-4``: ``hold-all`` with one ``client.submit`` per task (``NBFLOW_DASK_BATCH=0``):
  nbflow as it ran Dask at the start of session 5, for a before/after in the same run;
- ``session-5``: ``locality`` with this session's changes switched off (see
  :func:`session_5`): nbflow's defaults as they were at the end of session 5, for a
  before/after in the same run;
- ``session-6``: ``locality`` as at the end of session 6: every result held by a future of
  the notebook's process (``NBFLOW_DASK_HOLD_ALL=1``: no intermediate sent unheld;
  ``session-5`` and ``session-4`` hold every future too) and session 7's two placement-rule
  changes switched off (see :func:`session_6`);
- ``session-8``: ``locality`` with session 9's changes switched off (see
  :func:`session_8`): every completion sent by the scheduler plugin in the turn it
  happened, and every watched future handed to Dask's client loop;
- ``session-10``: ``locality`` with session 11's tail changes switched off
  (:func:`session_10`): the final result, small and named, is gathered from its worker as
  the run closes instead of coming with its completion, and the deferred locality read
  starts as the backend closes instead of once the run's thread has ended;
- ``session-11-a1``: ``locality`` with session 11's second-round CPU cuts on the path to
  the graph switched off (:func:`session_11_a1`): the placement rule's per-worker cost
  functions, the batch check reading the client's signature on every run, each
  consumer's inputs read once per producer in deciding which results go unheld;
- ``session-12-a-off``: ``locality`` without session 12's history read ahead
  (:func:`session_12_a_off`): its preparation reads its history itself (the graphs of the
  other modes are still read ahead as its run ends: its rows would otherwise leave their
  answers stale, read before them);
- ``session-12-b-off``: ``locality`` with session 12 (B)'s changes on the run's thread
  switched off (``run_start.session_12_b_off``: the journal's writer started on the way to
  the first graph, the run's loop made in its thread); its workflow is ``locality``'s;
- ``session-13-b-off``: ``locality`` with session 13 (B)'s end of a run switched off
  (``end_read.session_13_b_off``);
- ``session-13-a-off``: ``locality`` with session 13 (A)'s changes switched off
  (``first_graph.session_13_a_off``: the run's first graph sent by the run's thread, at
  the end of the loop's turn that starts its first task); its workflow is ``locality``'s;
- ``round-robin``: results stay on the workers, tasks placed in turn (a baseline);
- ``dask``: the same graph as ``dask.delayed`` computed by Dask's own scheduler.

Bytes moved are read from the workers' own transfer logs (worker to worker) plus the bytes
that went through the client (results fetched, local values sent), per run, leaving out
the final result that every variant brings to the client once.  Only the
workflow's final result is asked for.  Targets: ``locality`` moves ≥40% fewer bytes than
``round-robin`` and no more than ``dask``; its makespan is at most 1.1× ``dask``'s; and it
brings nothing to the client except the one result asked for.

**Simulation part** (``--part sim``): :func:`nbflow.locality.simulate.simulate_placement`
on every trace in ``tests/data/wfcommons`` at 4, 16 and 64 workers with the traces' own file
sizes and runtimes and ``--bandwidth`` bytes/s, for the locality rule (counting queued
tasks times the mean duration, and ``locality-predicted``: fed each task's duration, as a
run with history is), round-robin and a greedy earliest-start rule.

``--modes`` picks variants (default: all of them; ``gather`` is by far the slowest).  Each
sample records the wall-clock makespan and the CPU time of this process (all threads:
nbflow's loop, Dask's client loop; ``time.process_time``); the load average is recorded
before and after.

``--warmup N`` runs every variant N times, unmeasured, before the samples (so that the
first sample of a variant is not the one that imports modules and, for ``locality``, the
one without history of the tasks' sizes).

Usage::

    .venv/bin/python benchmarks/locality.py --part cluster --repeat 2 --json benchmarks/locality-cluster.json
    .venv/bin/python benchmarks/locality.py --part sim --json benchmarks/locality-sim.json
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import json
import os
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

if __package__:
    from . import _harness
else:
    import _harness

MB = 1_000_000
MODES = ["gather", "remote", "locality", "release", "hold-all", "session-4", "session-5",
         "session-6", "session-8", "session-10", "session-11-a1", "session-12-a-off",
         "session-12-b-off", "session-13-a-off", "session-13-b-off", "round-robin", "dask"]
TRACE = "1000genome-chameleon-2ch-100k-001.json"


# -- task bodies (module level: the workers import them by reference) ---------------------


def make(nbytes: int, seed: int = 0) -> Any:
    import numpy as np

    return np.full(max(1, nbytes // 8), float(seed))


def step(a: Any) -> Any:
    return a + 1.0


def derive(a: Any, nbytes: int, k: int) -> Any:
    import numpy as np

    return np.full(max(1, nbytes // 8), float(a[:1000].sum()) + k)


def mix(nbytes: int, *parts: Any) -> Any:
    import numpy as np

    return np.full(max(1, nbytes // 8), float(sum(float(p[:1000].sum()) for p in parts)))


def summary(*parts: Any) -> float:
    return float(sum(float(p[:1000].sum()) for p in parts))


# -- the workflows, as (name, spec) where spec lists (key, fn, args with key refs) -----------


def wl_chains() -> list[tuple[str, Callable[..., Any], tuple[Any, ...]]]:
    spec: list[tuple[str, Callable[..., Any], tuple[Any, ...]]] = []
    ends = []
    for c in range(4):
        spec.append((f"c{c}s0", make, (20 * MB, c)))
        for s in range(1, 5):
            spec.append((f"c{c}s{s}", step, (("ref", f"c{c}s{s - 1}"),)))
        ends.append(("ref", f"c{c}s4"))
    spec.append(("end", summary, tuple(ends)))
    return spec


def wl_fan() -> list[tuple[str, Callable[..., Any], tuple[Any, ...]]]:
    spec: list[tuple[str, Callable[..., Any], tuple[Any, ...]]] = [("root", make, (30 * MB, 1))]
    for k in range(8):
        spec.append((f"d{k}", derive, (("ref", "root"), 5 * MB, k)))
    spec.append(("end", summary, tuple(("ref", f"d{k}") for k in range(8))))
    return spec


def wl_shuffle() -> list[tuple[str, Callable[..., Any], tuple[Any, ...]]]:
    spec: list[tuple[str, Callable[..., Any], tuple[Any, ...]]] = []
    for k in range(4):
        spec.append((f"a{k}", make, (10 * MB, k)))
    for k in range(4):
        spec.append((f"b{k}", mix, (10 * MB, *(("ref", f"a{j}") for j in range(4)))))
    spec.append(("end", summary, tuple(("ref", f"b{k}") for k in range(4))))
    return spec


def trace_edges(path: Path) -> tuple[list[str], list[list[int]], list[float], dict[tuple[int, int], int]]:
    """ids, succs, runtimes and per-edge bytes (files the producer wrote and the consumer read;
    the producer's whole output when the trace does not link files) of a WfFormat trace."""
    from nbflow.predict.wfformat import load_trace

    tr = load_trace(path)
    doc = json.loads(path.read_text())
    sizes = {f["id"]: int(f.get("sizeInBytes") or 0)
             for f in doc["workflow"]["specification"].get("files", [])}
    g = tr.indexed()
    idx = {t: i for i, t in enumerate(g.ids)}
    edges: dict[tuple[int, int], int] = {}
    for t in tr.tasks:
        outs = set(t.output_files)
        for c in t.children:
            shared = outs & set(tr.task(c).input_files)
            b = sum(sizes.get(f, 0) for f in shared) if shared else t.output_bytes
            edges[(idx[t.id], idx[c])] = int(b)
    return list(g.ids), [list(s) for s in g.succs], list(g.durations), edges


def trace_plan() -> tuple[list[list[int]], list[list[int]], list[float]]:
    """The replayed trace's predecessors and successors per task, and each task's output
    size in bytes (its file sizes, scaled so the largest is 20 MB; at least 1 MB)."""
    ids, succs, _, edges = trace_edges(_harness.DEFAULT_TRACES / TRACE)
    n = len(ids)
    preds: list[list[int]] = [[] for _ in range(n)]
    for u, vs in enumerate(succs):
        for v in vs:
            preds[v].append(u)
    out_bytes = [max([edges.get((u, v), 0) for v in succs[u]] or [0]) for u in range(n)]
    biggest = max(out_bytes) or 1
    return preds, succs, [max(MB, out_bytes[u] / biggest * 20 * MB) for u in range(n)]


def wl_trace() -> list[tuple[str, Callable[..., Any], tuple[Any, ...]]]:
    preds, succs, sizes = trace_plan()
    n = len(preds)
    spec: list[tuple[str, Callable[..., Any], tuple[Any, ...]]] = []
    for u in range(n):
        size = int(sizes[u])
        args = (size, *(("ref", f"t{p}") for p in preds[u]))
        spec.append((f"t{u}", mix if preds[u] else make, args if preds[u] else (size, u)))
    sinks = [u for u in range(n) if not succs[u]]
    spec.append(("end", summary, tuple(("ref", f"t{u}") for u in sinks)))
    return spec


WORKLOADS = {"chains": wl_chains, "fan": wl_fan, "shuffle": wl_shuffle, "trace": wl_trace}


# -- running one workload one way ----------------------------------------------------------


def _workers_cpu(client: Any) -> float:
    """CPU seconds (user + system) the cluster's worker processes used so far: on a machine
    whose cores the client, the scheduler and the workers share, what a run costs the
    workers is what it leaves them for the tasks."""
    import psutil

    pids = _worker_pids.get(id(client))
    if pids is None:
        pids = _worker_pids[id(client)] = list(client.run(os.getpid).values())
    total = 0.0
    for pid in pids:
        t = psutil.Process(pid).cpu_times()
        total += t.user + t.system
    return total


_worker_pids: dict[int, list[int]] = {}


def _logs(client: Any) -> dict[str, int]:
    return client.run(lambda dask_worker: len(dask_worker.transfer_incoming_log))


def _moved_since(client: Any, before: dict[str, int]) -> int:
    def tail(start: dict[str, int], dask_worker: Any = None) -> int:
        log = list(dask_worker.transfer_incoming_log)
        return int(sum(e["total"] for e in log[start.get(dask_worker.address, 0):]))

    return int(sum(client.run(tail, before).values()))


def trace_spec(name: str, spec: list[Any]) -> tuple[Any, Any]:
    """``spec`` traced as ``nf.Workflow(name)``; returns ``(wf, the Ref of "end")``.  The
    table of Refs by spec key used while tracing is dropped before returning, so that, as
    in a notebook whose loop variables are rebound, only the final result is named."""
    import nbflow as nf

    tasks = {fn: nf.task(fn) for _, fn, _ in spec}
    with nf.Workflow(name) as wf:
        refs: dict[str, Any] = {}
        for key, fn, args in spec:
            real = tuple(refs[a[1]] if isinstance(a, tuple) and a[:1] == ("ref",) else a
                         for a in args)
            refs[key] = tasks[fn](*real)
    end = refs["end"]
    del refs, real
    return wf, end


@contextlib.contextmanager
def session_5() -> Iterator[None]:
    """nbflow's Dask path as it was at the end of session 5, for a before/after in one run:
    a consumed result is released only once this process has seen its consumers complete
    (not handed over to Dask's scheduler as soon as they are all submitted), and the
    end-of-run read ships every worker's whole transfer log and monitor history back."""
    from nbflow.engine.backends import dask as dask_backend
    from nbflow.locality import agent, memory, transfers

    hand_over, at_close = getattr(dask_backend.DaskBackend, "_hand_over", None), agent._at_close

    def whole(keys: list[str], since: float | None = None, dask_worker: Any = None) -> dict[str, Any]:
        return {"log": transfers.incoming_log(dask_worker), "memory": memory.probe(keys, dask_worker)}

    if hand_over is not None:
        dask_backend.DaskBackend._hand_over = lambda self, i, result: None  # type: ignore[method-assign]
    agent._at_close = whole
    try:
        yield
    finally:
        agent._at_close = at_close
        if hand_over is not None:
            dask_backend.DaskBackend._hand_over = hand_over  # type: ignore[method-assign]


@contextlib.contextmanager
def session_6() -> Iterator[None]:
    """The placement rule as it was at the end of session 6, for a before/after in one
    run: without the join term (a result is placed by its own inputs and the queues only,
    not by where its consumer's other inputs are), and a task submitted ahead counting
    the whole queue of a worker (not only what is left when its inputs are made)."""
    from nbflow.locality.joins import JoinGraph
    from nbflow.locality.placement import Placer

    joins, ready_in = JoinGraph.joins, Placer.__dict__["ready_in"]  # (the staticmethod)
    JoinGraph.joins = lambda self, key, where, size: []  # type: ignore[method-assign]
    Placer.ready_in = staticmethod(lambda etas: 0.0)  # type: ignore[method-assign]
    try:
        yield
    finally:
        JoinGraph.joins = joins  # type: ignore[method-assign]
        Placer.ready_in = ready_in  # type: ignore[method-assign]


@contextlib.contextmanager
def session_8(client: Any) -> Iterator[None]:
    """nbflow's Dask path as at the end of session 8, for a before/after in one run: the
    scheduler plugin sends every turn's completions at once (no window), and the watcher
    hands every future, unheld ones too, to Dask's client loop.  (Setting the window is a
    round trip to the scheduler: done before the sample's clock starts.)"""
    from nbflow.engine.backends import dask_plugin, dask_watch

    was = client.run_on_scheduler(dask_plugin.set_reporting, on=True, window=0.0)
    dask_watch.Watcher.file_here = False
    try:
        yield
    finally:
        dask_watch.Watcher.file_here = True
        client.run_on_scheduler(dask_plugin.set_reporting, on=was[0], window=was[1])


@contextlib.contextmanager
def session_11_tail(carry: bool, read_after_run: bool) -> Iterator[None]:
    """Session 11's two changes to a run's tail, each switchable: ``carry``, a small result
    the caller takes at the end comes with its completion (``DaskBackend.carry``; off: it is
    gathered as the run closes); ``read_after_run``, the deferred locality read waits for
    the run's thread to end (off: it starts as the backend closes: no thread counts as the
    run's own)."""
    from nbflow.engine.backends.dask import DaskBackend
    from nbflow.locality import agent

    run_thread = agent.RUN_THREAD
    DaskBackend.carry = carry
    if not read_after_run:
        agent.RUN_THREAD = "\0 (no thread is named so)"
    try:
        yield
    finally:
        DaskBackend.carry = True
        agent.RUN_THREAD = run_thread


def session_10() -> contextlib.AbstractContextManager[None]:
    """A run's tail as at the end of session 10: both of :func:`session_11_tail`'s changes
    off."""
    return session_11_tail(carry=False, read_after_run=False)


def _best_per_worker(self: Any, workers: Any, inputs: Any, exclude: Any, joins: Any,
                     ready: float) -> tuple[str, float]:
    """``Placer._best`` as ``choose`` worked it out before session 11's second round: a cost
    function per task (``_costs``, copied here), called per worker, with a queue read per
    call."""
    pm = importlib.import_module("nbflow.locality.placement")  # (the package's name is a function)
    typical = self.task_seconds
    mine: dict[Any, list[Any]] = {}
    for w, sec in exclude:
        mine.setdefault(w, []).append(sec)
    prepared = pm._Joins(joins) if joins else None
    bandwidth, queue = self.bandwidth, self._queue_seconds
    waits: dict[str, float] = {}

    def cost(worker: str) -> float:
        moved: float = sum(b or 0 for w, b in inputs if not pm._holds(w, worker))
        if prepared is not None:
            moved += pm.JOIN_WEIGHT * prepared.bytes_on(worker)
        own = mine.get(worker)
        whole = queue(worker, (), typical) if ready > 0 or not own else 0.0
        queued = queue(worker, own, typical) if own else whole
        if ready > 0:
            queued = min(queued, max(0.0, whole - ready))
        waits[worker] = queued
        return moved / bandwidth + queued

    best = min(workers, key=lambda w: (cost(w), self.backlog.get(w, 0), w))
    return best, waits[best]


def _unheld_per_producer(self: Any, unique: str) -> bool:
    """``DaskBackend._unheld`` before session 11's second round (copied here): each
    consumer's inputs, whether they may be redone and their latest keys, read again for
    every producer."""
    ahead = self.ahead
    i = self._node_of_key.get(unique)
    if ahead is None or i is None or not getattr(self.placement, "release_consumed", False):
        return False
    sched = ahead.sched
    ref = sched.nodes[i]
    mine = ahead.inflight.get(i)
    kept = getattr(self.placement, "kept", None)
    succs = sched.succs[i]
    if (mine is None or mine.dask_key != unique or not succs or sched.cache is not None
            or (kept is not None and ref.key in kept) or i in getattr(sched, "saga_of", {})
            or ref.task is None or ref.task.spec.retries or ref.task.spec.timeout):
        return False
    for s in succs:
        cls, sent = sched.class_of[s], ahead.ahead.get(s)
        if cls is None or cls.backend is not self or sent is None or unique not in sent[2]:
            return False
        consumer = sched.nodes[s]
        if consumer.task.spec.retries or any(d != i and self._may_be_redone(d)
                                             for d in consumer.deps):
            return False
        current = {self._current_key(d, i, mine) for d in consumer.deps}
        if not current.issuperset(sent[2]):
            return False
    return True


@contextlib.contextmanager
def session_11_a1() -> Iterator[None]:
    """nbflow as at session 11's first merge: its second round's CPU cuts on the path to
    the graph switched off: the placement rule's per-worker cost functions
    (:func:`_best_per_worker`), the batch check reading the client's signature on every
    run (``dask_batch._available_in``), and deciding which results go unheld reading each
    consumer's inputs once per producer (:func:`_unheld_per_producer`)."""
    from nbflow.engine.backends import dask_batch
    from nbflow.engine.backends.dask import DaskBackend

    pm = importlib.import_module("nbflow.locality.placement")
    best, available, unheld = pm.Placer._best, dask_batch.available, DaskBackend._unheld
    pm.Placer._best = _best_per_worker  # type: ignore[method-assign]
    dask_batch.available = dask_batch._available_in
    DaskBackend._unheld = _unheld_per_producer  # type: ignore[method-assign]
    try:
        yield
    finally:
        pm.Placer._best = best  # type: ignore[method-assign]
        dask_batch.available = available
        DaskBackend._unheld = unheld  # type: ignore[method-assign]


@contextlib.contextmanager
def session_12_a_off() -> Iterator[None]:
    """A run prepared as before session 12 (A): its history read by its preparation, not
    read ahead (``nbflow.predict.ahead.off``)."""
    from nbflow.predict import ahead

    with ahead.off():
        yield


def run_nbflow(client: Any, spec: list[Any], mode: str) -> dict[str, Any]:
    from nbflow import locality

    if mode == "session-12-b-off":
        if __package__:
            from .run_start import session_12_b_off
        else:
            from run_start import session_12_b_off
        with session_12_b_off():
            return run_nbflow(client, spec, "locality")
    if mode == "session-13-b-off":  # (session 13 (B)'s end of a run switched off: end_read.py)
        if __package__:
            from .end_read import session_13_b_off
        else:
            from end_read import session_13_b_off
        with session_13_b_off():
            return run_nbflow(client, spec, "locality")
    if mode == "session-13-a-off":
        if __package__:
            from .first_graph import session_13_a_off
        else:
            from first_graph import session_13_a_off
        with session_13_a_off():
            return run_nbflow(client, spec, "locality")
    wf, end = trace_spec(f"locality-bench-{mode}", spec)
    before = _logs(client)
    wcpu0 = _workers_cpu(client)
    s8 = session_8(client) if mode == "session-8" else contextlib.nullcontext()
    s8.__enter__()  # (before the clock: its switch is a round trip)
    a12 = session_12_a_off() if mode == "session-12-a-off" else contextlib.nullcontext()
    a12.__enter__()  # (until the run's end-of-run read is over)
    _harness.settle_client(client)  # (the previous sample's messages go first)
    t0, cpu0 = time.perf_counter(), time.process_time()
    place = {"remote": "none", "release": "locality", "hold-all": "locality",
             "session-4": "locality", "session-5": "locality", "session-6": "locality",
             "session-8": "locality", "session-10": "locality",
             "session-11-a1": "locality", "session-12-a-off": "locality"}.get(mode, mode)
    keep = {"release": "unconsumed", "hold-all": "all", "session-4": "all"}.get(mode, "reachable")
    os.environ["NBFLOW_DASK_BATCH"] = "0" if mode == "session-4" else "1"
    os.environ["NBFLOW_DASK_HOLD_ALL"] = "1" if mode in ("session-4", "session-5", "session-6") else "0"
    as_before = (session_5() if mode == "session-5" else session_6() if mode == "session-6"
                 else contextlib.nullcontext())
    s10 = (session_10() if mode == "session-10" else session_11_a1() if mode == "session-11-a1"
           else contextlib.nullcontext())
    try:
        with locality.placement(place, keep=keep), as_before, s10:
            run = wf.run(backend=client, cache=False)
            value = run[end]
    finally:
        os.environ.pop("NBFLOW_DASK_BATCH", None)
        os.environ.pop("NBFLOW_DASK_HOLD_ALL", None)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    s8.__exit__(None, None, None)
    worker_cpu = _workers_cpu(client) - wcpu0
    rep = run.locality_report()
    sizes = dict(zip(rep.tasks["task"], rep.tasks["output_bytes"], strict=True))
    got = sizes.get(end.key)
    asked = int(got) if got is not None and got == got else 0  # the one result we asked for
    backend = run.backends["dask"]
    batch = backend.batch
    out = {"makespan_s": seconds, "cpu_s": cpu, "worker_cpu_s": worker_cpu,
           "worker_bytes": _moved_since(client, before),
           "client_bytes": rep.bytes_to_client - asked + rep.bytes_from_client,
           "client_bytes_not_asked": rep.bytes_to_client - asked,
           "logged_by_run": rep.bytes_moved, "local_share": rep.local_share, "value": value,
           "released": len(backend.released_keys),
           "submit_messages": batch.messages if batch is not None else len(rep.tasks)}
    a12.__exit__(None, None, None)
    del run, wf, end
    gc.collect()
    return out


def delayed_graph(spec: list[Any], stamp: int | None = None) -> dict[str, Any]:
    """The workflow ``spec`` as ``dask.delayed`` nodes (spec key -> node), each Dask key made
    unique with ``stamp`` (default: a fresh one per node) so no run reuses another's results."""
    import dask

    nodes: dict[str, Any] = {}
    for key, fn, args in spec:
        real = tuple(nodes[a[1]] if isinstance(a, tuple) and a[:1] == ("ref",) else a
                     for a in args)
        tag = time.time_ns() if stamp is None else stamp
        nodes[key] = dask.delayed(fn, pure=False)(*real, dask_key_name=f"{key}-{tag}")
    return nodes


def run_dask(client: Any, spec: list[Any]) -> dict[str, Any]:
    nodes = delayed_graph(spec)
    before = _logs(client)
    wcpu0 = _workers_cpu(client)
    _harness.settle_client(client)  # (the previous sample's messages go first)
    t0, cpu0 = time.perf_counter(), time.process_time()
    value = client.compute(nodes["end"]).result()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    worker_cpu = _workers_cpu(client) - wcpu0
    return {"makespan_s": seconds, "cpu_s": cpu, "worker_cpu_s": worker_cpu, "released": None,
            "submit_messages": 1,
            "worker_bytes": _moved_since(client, before),
            "client_bytes": 0, "client_bytes_not_asked": 0, "logged_by_run": None,
            "local_share": None, "value": value}


def cluster_part(repeat: int, workloads: list[str], log: Callable[[str], None],
                 warmup: int = 0, modes: list[str] | None = None) -> dict[str, Any]:
    results: dict[str, Any] = {}
    modes = modes or MODES
    with _harness.local_cluster() as client:
        for name in workloads:
            spec = WORKLOADS[name]()
            samplers = {m: (lambda m=m, spec=spec: run_dask(client, spec) if m == "dask"
                            else run_nbflow(client, spec, m)) for m in modes}
            if warmup:  # unmeasured runs first: imports, worker caches, and history for the rule
                _harness.alternate(samplers, warmup)
            samples = _harness.alternate(samplers, repeat, log=lambda s, n=name: log(f"{n}: {s}"))
            values = {m: [s["value"] for s in v] for m, v in samples.items()}
            agree = len({round(x, 6) for v in values.values() for x in v}) == 1
            per = {}
            for m, ss in samples.items():
                per[m] = {
                    "makespan_s": statistics.median(s["makespan_s"] for s in ss),
                    "cpu_s": statistics.median(s["cpu_s"] for s in ss),
                    "worker_cpu_s": statistics.median(s["worker_cpu_s"] for s in ss),
                    "released": ss[0]["released"],
                    "submit_messages": statistics.median(s["submit_messages"] for s in ss),
                    "worker_bytes": statistics.median(s["worker_bytes"] for s in ss),
                    "client_bytes": statistics.median(s["client_bytes"] for s in ss),
                    "total_bytes": statistics.median(s["worker_bytes"] + s["client_bytes"]
                                                     for s in ss),
                    "client_bytes_not_asked": max(s["client_bytes_not_asked"] for s in ss),
                    "logged_by_run_equals_dask_logs": all(
                        s["logged_by_run"] is None or s["logged_by_run"] == s["worker_bytes"]
                        for s in ss),
                    "local_share": ss[0]["local_share"],
                    "samples_makespan_s": [s["makespan_s"] for s in ss],
                    "samples_total_bytes": [s["worker_bytes"] + s["client_bytes"] for s in ss],
                }
            results[name] = {"tasks": len(spec), "same_result_everywhere": agree, "modes": per,
                             "targets": _targets(per)}
            log(f"{name}: " + ", ".join(
                f"{m} {p['total_bytes'] / MB:.0f} MB {p['makespan_s']:.2f}s cpu {p['cpu_s']:.2f}s"
                f" workers' cpu {p['worker_cpu_s']:.2f}s"
                for m, p in per.items()))
            shown = results[name]["targets"].items()
            log(f"{name}: targets " + ", ".join(
                f"{k} {v['value'] if isinstance(v, dict) else v}" for k, v in shown))
    return results


def _targets(per: dict[str, Any]) -> dict[str, Any]:
    """The targets the variants measured allow (each needs ``locality`` and its baseline)."""
    out: dict[str, Any] = {}
    loc, rr, dk = per.get("locality"), per.get("round-robin"), per.get("dask")
    if loc is None:
        return out
    if rr is not None:
        out["bytes_vs_round_robin"] = _harness.target(
            _harness.ratio(loc["total_bytes"], rr["total_bytes"]), 0.6, "<=")
    if dk is not None:
        out["bytes_vs_dask"] = _harness.target(
            _harness.ratio(loc["total_bytes"], dk["total_bytes"] or 1), 1.0, "<=")
        out["makespan_vs_dask"] = _harness.target(
            _harness.ratio(loc["makespan_s"], dk["makespan_s"]), 1.1, "<=")
        out["cpu_vs_dask"] = _harness.ratio(loc["cpu_s"], dk["cpu_s"])
        out["worker_cpu_vs_dask"] = _harness.ratio(loc["worker_cpu_s"], dk["worker_cpu_s"])
        if "session-5" in per:
            out["cpu_vs_dask_session-5"] = _harness.ratio(per["session-5"]["cpu_s"], dk["cpu_s"])
            out["worker_cpu_vs_dask_session-5"] = _harness.ratio(
                per["session-5"]["worker_cpu_s"], dk["worker_cpu_s"])
        for m in ("release", "hold-all", "session-4", "session-5", "session-6", "session-8",
                  "session-10", "session-11-a1"):
            if m in per:
                out[f"makespan_vs_dask_{m}"] = _harness.target(
                    _harness.ratio(per[m]["makespan_s"], dk["makespan_s"]), 1.1, "<=")
        for m in ("session-12-b-off", "session-13-b-off"):
            if m in per:
                out[f"makespan_vs_dask_{m}"] = _harness.target(
                    _harness.ratio(per[m]["makespan_s"], dk["makespan_s"]), 1.1, "<=")
    out["client_bytes_not_asked"] = _harness.target(float(loc["client_bytes_not_asked"]), 0.0, "<=")
    return out


def sim_part(bandwidth: float, log: Callable[[str], None]) -> dict[str, Any]:
    from nbflow.locality.simulate import POLICIES, simulate_placement

    out: dict[str, Any] = {}
    for path in sorted(_harness.DEFAULT_TRACES.glob("*.json")):
        ids, succs, durations, edges = trace_edges(path)
        per: dict[str, Any] = {}
        for w in (4, 16, 64):
            row = {}
            for p in POLICIES:
                r = simulate_placement(succs, durations, edges, w, p, bandwidth)
                row[p] = {"makespan_s": r.makespan, "bytes_moved": r.bytes_moved}
            # the rule fed each task's duration, as a run gets it from the store's history
            # (a replayed trace repeats its durations, so history predicts them exactly)
            r = simulate_placement(succs, durations, edges, w, "locality", bandwidth,
                                   predicted=durations)
            row["locality-predicted"] = {"makespan_s": r.makespan, "bytes_moved": r.bytes_moved}
            pred = row["locality-predicted"]
            row["predicted_makespan_vs_round_robin"] = _harness.ratio(
                pred["makespan_s"], row["round-robin"]["makespan_s"])
            row["predicted_makespan_vs_earliest_start"] = _harness.ratio(
                pred["makespan_s"], row["earliest-start"]["makespan_s"])
            loc = row["locality"]
            row["locality_bytes_vs_round_robin"] = _harness.ratio(
                loc["bytes_moved"], row["round-robin"]["bytes_moved"])
            row["locality_makespan_vs_round_robin"] = _harness.ratio(
                loc["makespan_s"], row["round-robin"]["makespan_s"])
            row["locality_makespan_vs_earliest_start"] = _harness.ratio(
                loc["makespan_s"], row["earliest-start"]["makespan_s"])
            per[str(w)] = row
        out[path.name] = {"tasks": len(ids), "edge_bytes": int(sum(edges.values())),
                          "workers": per}
        log(f"{path.name}: done")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", choices=["cluster", "sim", "all"], default="all")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=0, help="unmeasured runs of every variant first")
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--modes", default=",".join(MODES), help="variants to run (comma-separated)")
    ap.add_argument("--bandwidth", type=float, default=100e6, help="bytes/s in the simulation")
    ap.add_argument("--settle", type=float, default=_harness.SETTLE_S,
                    help="seconds of quiet on the client before each sample, after its batch "
                         "window closes (0: start at once, as before session 13)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    _harness.SETTLE_S = args.settle
    log = _harness.progress("locality")
    doc: dict[str, Any] = {"benchmark": "locality", "machine": _harness.machine_info()}
    if args.part in ("cluster", "all"):
        modes = args.modes.split(",")
        unknown = sorted(set(modes) - set(MODES))
        if unknown:
            ap.error(f"unknown --modes {unknown}; choose from {MODES}")
        doc["load_before"] = os.getloadavg()
        with _harness.nbflow_home():
            doc["cluster"] = cluster_part(args.repeat, args.workloads.split(","), log, args.warmup,
                                          modes)
        doc["load_after"] = os.getloadavg()
        log(f"load average before {doc['load_before']}, after {doc['load_after']}")
        doc["cluster_command_repeat"] = args.repeat
        doc["cluster_command_warmup"] = args.warmup
        doc["settle_s"] = args.settle
    if args.part in ("sim", "all"):
        doc["simulation"] = {"bandwidth": args.bandwidth, "traces": sim_part(args.bandwidth, log)}
    _harness.emit_json(doc, args.json)


if __name__ == "__main__":
    main()
