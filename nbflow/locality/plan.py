"""``nf.plan(wf)``: what a run would do, before it runs — cache decisions, and on a cluster
where each task would go and how many bytes would move.

The placement part replays the placement rule (the same :class:`~.placement.Placer` the
Dask runs use) in the simulator of :mod:`.simulate`, on the traced graph, with what the
store's history predicts: each task's mean duration and output size over the workflow's
recent runs (its own key's, else its task function's).  An edge carries the producer's
predicted output; a task with no history has the median duration of those with history
(1 s when none has) and an output of unknown size, counted as 0 bytes and reported as
unknown.  The same graph is replayed with round-robin placement for comparison.

The graph is the one a cluster sees.  A collector (the list a map's items make, a list of
Refs passed as one argument) is made in this process: it runs on no worker, and a task
taking it fetches the collected results from where they were made.  A map over a Ref,
whose items exist only once it runs, is planned with as many items as its newest run had
(:mod:`nbflow.store.map_items`, the count ``nf.forecast`` uses too; the notes say where the
count comes from, and that it is an estimate): an item takes its value from this process,
or, for a map over another map's result, the result it is an item of, where it was made.
A map no recent run expanded is left out, and said to be: its seconds are unknown, not 0.
An ``nf.loop`` is expanded the same way where history allows: as many iterations as its
newest run had (``<loop key>[0]``, ``[1]``, ...: how many it runs depends on the values it
makes, so the notes call the count an estimate and say where it comes from), iteration 0
taking the loop's input, each next one the previous one's result where it was made, and
what takes the loop's value taking the last iteration's.  A loop no recent run ran is not
expanded, and the notes say so by name: its iterations are left out of the bytes and the
makespan, and its row has unknown seconds.  A loop runs no task of its own: its row has no
worker.

The cache part is the store's own forecast (:func:`nbflow.store.plan`): per task ``hit``,
``miss`` or ``maybe`` with the reason.  A task the cache would serve still appears in the
placement, as if it ran (which tasks hit can depend on values computed in the run); the
notes say how many would hit, since a hit runs nothing on the cluster.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from ..core.errors import NbflowError
from ..core.graphs import topological_order
from ..core.kinds import COLLECT, GATHER, LOOP, MAP
from ..core.ref import Ref
from ..store.map_items import ExpandedGraph, MapItem, expand_maps, map_count
from . import predicted
from .joins import data_inputs
from .placement import BANDWIDTH
from .simulate import simulate_placement
from .units import human

DEFAULT_WORKERS = 4
SHOWN_ITEMS = 5  # expected items of a map listed when the plan is shown (the rest: one row)
# Nodes whose value is the list of their inputs' values, made in this process (a map over a
# Ref becomes one when it expands): no worker runs them, their consumers fetch the inputs.
COLLECTORS = (COLLECT, GATHER, MAP)


class PlanError(NbflowError, ValueError):
    """``nf.plan`` cannot plan as asked; the message says what to pass."""


@dataclass
class WorkflowPlan:
    """What ``nf.plan(wf)`` returns: print it, or read its fields."""

    workflow: str
    workers: int
    bandwidth: float
    bytes_moved: int  # predicted bytes between workers under the placement rule
    bytes_moved_round_robin: int
    makespan_s: float  # predicted makespan under the rule (simulated)
    makespan_round_robin_s: float
    unknown_sizes: int  # tasks feeding others whose output size history does not know
    # DataFrame: key, task, worker, seconds, output_bytes, input_bytes, input_bytes_moved,
    # decision, reason (the byte columns as run.locality_report().tasks has them)
    tasks: Any
    notes: list[str] = field(default_factory=list)
    # map over a Ref -> the items counted for it, as in its newest run (None: no run expanded
    # it, its items are left out); the same count nf.forecast uses
    maps: dict[str, int | None] = field(default_factory=dict)
    # nf.loop -> the iterations planned for it, as in its newest run (None: none ran it, its
    # iterations are left out)
    loops: dict[str, int | None] = field(default_factory=dict)

    @property
    def saving(self) -> float | None:
        """Share of round-robin's bytes the rule avoids (None when round-robin moves none)."""
        rr = self.bytes_moved_round_robin
        return None if rr == 0 else 1.0 - self.bytes_moved / rr

    def summary(self) -> str:
        saving = self.saving
        saved = ("" if saving is None else f" ({saving:.0%} fewer)" if saving > 0
                 else " (as many)" if saving == 0 else f" ({-saving:.0%} more)")
        return (f"Placement on {self.workers} workers at {human(self.bandwidth)}/s: "
                f"{human(self.bytes_moved)} would move between workers{saved}, against "
                f"{human(self.bytes_moved_round_robin)} placing tasks in turn (round-robin); "
                f"predicted makespan {self.makespan_s:.2f} s (round-robin "
                f"{self.makespan_round_robin_s:.2f} s).")

    def __str__(self) -> str:
        items = sum(n or 0 for n in self.maps.values())
        rounds = sum(n or 0 for n in self.loops.values())
        count = f"{len(self.tasks) - items - rounds} tasks"
        if items:
            count += f" and {items} expected items of maps over a Ref"
        if rounds:
            count += f" and {rounds} expected iterations of loops"
        lines = [f"Plan for workflow {self.workflow!r} ({count}). Nothing was run.",
                 self.summary(), *self.notes, ""]
        cols = [c for c in ("key", "worker", "seconds", "output_bytes", "input_bytes", "input_bytes_moved",
                            "decision", "reason") if c in self.tasks.columns]
        lines.append(fold_items(self.tasks, {**self.maps, **self.loops})[cols].to_string(index=False))
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        from html import escape

        notes = "".join(f"<br>{escape(n)}" for n in self.notes)
        return (f"<div class='nbflow-plan-locality'><p><b>{escape(self.summary())}</b>{notes}</p>"
                f"{fold_items(self.tasks, {**self.maps, **self.loops}).to_html(index=False, border=0)}"
                "</div>")


def fold_items(tasks: Any, maps: dict[str, int | None], shown: int = SHOWN_ITEMS) -> Any:
    """``tasks`` with each map's expected items past the first ``shown`` folded into one row
    that says how many more there are (the plan's own ``tasks`` keeps every row)."""
    import pandas as pd

    counts = {m: n for m, n in maps.items() if n and n > shown}
    folded = {f"{m}[{k}]": m for m, n in counts.items() for k in range(shown, n)}
    if not folded:
        return tasks
    text = [c for c in tasks.columns if not pd.api.types.is_numeric_dtype(tasks[c].dtype)]
    rows: list[dict[str, Any]] = []
    for row in tasks.to_dict("records"):
        m = folded.get(row["key"])
        if m is None:
            rows.append(row)
        elif row["key"] == f"{m}[{shown}]":  # (the first folded item: the row that counts them)
            rows.append({**dict.fromkeys(text, ""),
                         "key": f"... {counts[m] - shown} more expected items of {m}"})
    out = pd.DataFrame(rows, columns=tasks.columns)
    for c in tasks.columns:  # (whole numbers stay whole: the folded row has none)
        if c not in text and pd.api.types.is_integer_dtype(tasks[c].dtype):
            out[c] = out[c].astype("Int64")
    return out


def _nodes_of(wf: Any) -> list[Any]:
    """The traced nodes of ``wf`` (a workflow, or a run of one); refuses anything else by name."""
    from ..core.ref import Ref

    if isinstance(wf, Ref):
        raise PlanError(f"nf.plan takes a workflow, got the Ref {wf.key!r}: pass the workflow it "
                        "was traced in (`with nf.Workflow(...) as wf:` ... `nf.plan(wf)`)")
    nodes = getattr(wf, "nodes", None)
    if nodes is None or isinstance(wf, (str, bytes)):
        raise PlanError(f"nf.plan takes a workflow (`with nf.Workflow(...) as wf:` ... "
                        f"`nf.plan(wf)`), got {type(wf).__name__} {wf!r}"[:300])
    if not nodes:
        raise PlanError("the workflow has no tasks: trace task calls in `with nf.Workflow(...)` first")
    return list(nodes)


def _workers_of(backend: Any, workers: int | None) -> int:
    if backend is not None:
        from ..core.errors import WorkflowDefinitionError
        from ..core.options import backend_kind

        try:
            backend_kind(backend)  # the run's own check: a plan for a backend no run takes is wrong
        except WorkflowDefinitionError as e:
            raise PlanError(str(e)) from None
    if workers is not None:
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
            raise PlanError(f"workers must be a whole number >= 1, got {workers!r}")
        return workers
    nthreads = getattr(backend, "nthreads", None)
    if callable(nthreads):  # a distributed.Client: its cluster's threads
        return max(1, sum(nthreads().values()))
    return DEFAULT_WORKERS


def plan(wf: Any, workers: int | None = None, backend: Any = None,
         bandwidth: float = BANDWIDTH, cache: bool = True) -> WorkflowPlan:
    """Predict, without running, where each task of ``wf`` would run on ``workers`` Dask
    workers (default: the threads of ``backend`` when it is a ``distributed.Client``, else
    4) and the bytes that would move, against round-robin; with the store's cache
    decision per task.  A map over a Ref is planned with as many items as its newest run
    had (``WorkflowPlan.maps``; the notes say so).  See the module for the model."""
    import pandas as pd

    nodes = _nodes_of(wf)
    if isinstance(bandwidth, bool) or not isinstance(bandwidth, (int, float)) or not bandwidth > 0:
        raise PlanError(f"bandwidth must be a positive number of bytes per second (e.g. 100e6), "
                        f"got {bandwidth!r}")
    n_workers = _workers_of(backend, workers)
    name = str(getattr(wf, "name", ""))
    try:
        sizes = predicted.output_sizes(name)
        seconds = predicted.durations(name)
    except Exception:  # an unreadable store: plan without history
        sizes = seconds = ({}, {})
    graph = expand_maps(name, nodes)
    loops = _expand_loops(name, graph)
    every = graph.nodes  # the traced nodes, then the expected items of maps over a Ref
    keyed = [(r.name, r.key) for r in every]
    out_bytes = predicted.per_key(keyed, *sizes)
    secs = predicted.per_key(keyed, *seconds)
    fallback = statistics.median(secs.values()) if secs else 1.0

    order, succs, edges = _simulated_graph(graph, out_bytes)
    durs = [secs.get(every[i].key, fallback if every[i].kind in ("task", "undo") else 0.0)
            for i in order]
    pos = {node: k for k, node in enumerate(order)}
    rule = simulate_placement(succs, durs, edges, n_workers, "locality", bandwidth)
    rr = simulate_placement(succs, durs, edges, n_workers, "round-robin", bandwidth)

    moved_in = [0] * len(order)
    taken = [0] * len(order)
    for (u, v), b in edges.items():
        taken[v] += b
        if rule.placement[u] != rule.placement[v]:
            moved_in[v] += b
    uncounted = {i for i, r in enumerate(nodes)
                 if (r.kind == MAP or r.kind == LOOP) and not graph.items_of.get(i)}
    rows = []
    for i in _shown_order(graph):
        ref, v = every[i], pos[i]
        size = out_bytes.get(ref.key)
        # (a loop runs no task of its own: its iterations, not planned, run on workers)
        on_cluster = isinstance(ref, MapItem) or (ref.kind not in COLLECTORS and ref.kind != LOOP)
        rows.append({"key": ref.key, "task": ref.name,
                     "worker": rule.placement[v] if on_cluster else None,
                     # a map or a loop no run expanded: their tasks' seconds are unknown, not 0
                     "seconds": None if i in uncounted else durs[v],
                     "output_bytes": None if size is None else int(size),
                     "input_bytes": taken[v], "input_bytes_moved": moved_in[v]})
    tasks = pd.DataFrame(rows)
    tasks["output_bytes"] = tasks["output_bytes"].astype("Int64")  # (None: not known)
    notes = [c.describe() for c in graph.counts.values()]
    notes += [_loop_note(nodes[i], n, run_id) for i, (n, run_id) in loops.items()]
    feeding = {order[u] for u, _ in edges}  # tasks whose result some task takes as input
    unknown = sum(1 for i in feeding if every[i].kind == "task" and every[i].key not in out_bytes)
    if unknown:
        # with history, the sizes are missing because nobody measured them, not for want of runs
        why = ("no history" if not secs else "history measures every result of a Dask run, and "
               "of other runs arrays, DataFrames, bytes, numbers and strings: not lists, dicts "
               "or objects, which only Dask's sizeof walks")
        notes.append(f"{unknown} task(s) have no recorded output size ({why}): their "
                     "edges count as 0 bytes.")
    if not secs:
        notes.append("No recorded durations: every task is taken to last 1 s.")
    if cache:
        try:
            from ..store import plan as store_plan

            decided = pd.DataFrame(store_plan(wf, cache=True))
            tasks = tasks.merge(decided[["key", "decision", "reason"]], on="key", how="left")
            tasks = _items_decided(tasks, graph)
            hits = int((decided["decision"] == "hit").sum())
            if hits:
                notes.append(f"{hits} task(s) would be served by the cache (decision 'hit'): they "
                             "are planned as if they ran, but a hit runs nothing on the cluster, "
                             "so the run may move fewer bytes and end sooner.")
        except Exception as e:  # the cache forecast is extra: the placement stands alone
            notes.append(f"Cache decisions unavailable ({type(e).__name__}: {e}).")
    return WorkflowPlan(name, n_workers, float(bandwidth), rule.bytes_moved, rr.bytes_moved,
                        rule.makespan, rr.makespan, unknown, tasks, notes,
                        {k: c.items for k, c in graph.counts.items()},
                        {nodes[i].key: n for i, (n, _) in loops.items()})


def _expand_loops(workflow: str, graph: ExpandedGraph) -> dict[int, tuple[int | None, str | None]]:
    """Each ``nf.loop`` of the traced graph expanded into as many iterations as its newest
    run had (see the module), appended to ``graph``; returns loop node -> (iterations
    planned, the run counted; None, None: no recent run ran it, nothing planned)."""
    out: dict[int, tuple[int | None, str | None]] = {}
    traced = list(graph.nodes)
    for i, ref in enumerate(traced):
        if ref.kind != LOOP or isinstance(ref, MapItem):
            continue
        count = map_count(workflow, ref.key)  # (its iterations are keyed "<loop key>[k]")
        out[i] = (count.items, count.run_id)
        if not count.items:
            continue
        body = ref.task
        name = str(getattr(getattr(body, "spec", None), "name", "") or ref.name)
        init: Any = ref.args[0] if ref.args else None
        # (iteration 0 takes the loop's input where it was made, if a task made it)
        takes: int | None = init.index if isinstance(init, Ref) else None
        inputs = list(graph.deps[i])  # (iteration 0 waits for what the loop waits for)
        mine = graph.items_of[i] = []
        for k in range(count.items):
            j = len(graph.nodes)
            graph.nodes.append(MapItem(j, f"{ref.key}[{k}]", name, inputs, body, i, takes))
            graph.deps.append(list(inputs))
            mine.append(j)
            inputs, takes = [j], j  # (the next iteration takes this one's result, there)
        graph.deps[i] = [mine[-1]]  # the loop's value is its last iteration's
    return out


def _loop_note(ref: Any, planned: int | None, run_id: str | None) -> str:
    """What the plan says of an ``nf.loop`` (see the module)."""
    bound = (ref.kwargs or {}).get("max_iter")
    up_to = f" (up to max_iter={bound})" if bound is not None else ""
    if planned:
        return (f"{ref.key} is an nf.loop: planned with {planned} iteration(s), as many as in "
                f"run {run_id}, its newest run (an estimate: how many it runs{up_to} depends on "
                "the values it makes).")
    return (f"{ref.key} is an nf.loop that no recent run of this workflow ran: its iterations"
            f"{up_to} ({ref.key}[0], {ref.key}[1], ...) are made as it runs, until its "
            "condition holds, and are not planned: the bytes and makespan above leave out "
            "what they run and move (run the workflow once and ask again).")


def _simulated_graph(graph: ExpandedGraph, out_bytes: dict[str, float],
                     ) -> tuple[list[int], list[list[int]], dict[tuple[int, int], int]]:
    """The graph renumbered as the simulator wants it (nodes ``0..n-1`` in dependency
    order): ``(order, successors, data edges' predicted bytes)``, ``order[k]`` being the
    node at position ``k``.  An ordering edge (``.after()``) carries no bytes."""
    every = graph.nodes
    succs_of: list[list[int]] = [[] for _ in every]
    for v, ds in enumerate(graph.deps):
        for d in ds:
            succs_of[d].append(v)
    order = (topological_order(succs=succs_of, indegree=[len(ds) for ds in graph.deps],
                               lowest_first=False) or list(range(len(every))))
    pos = {node: k for k, node in enumerate(order)}
    succs: list[list[int]] = [[] for _ in order]
    edges: dict[tuple[int, int], int] = {}
    for i in range(len(every)):
        v = pos[i]
        data = _data_inputs(graph, i)
        for d in dict.fromkeys([*graph.deps[i], *data]):  # (a collected result: an edge of its own)
            succs[pos[d]].append(v)
        for d in data:
            edges[(pos[d], v)] = int(out_bytes.get(every[d].key, 0))
    return order, succs, edges


def _shown_order(graph: ExpandedGraph) -> list[int]:
    """The rows' order: the traced nodes, each map over a Ref followed by its expected items."""
    out: list[int] = []
    for i in range(len(graph.nodes) - sum(map(len, graph.items_of.values()))):
        out.append(i)
        out += graph.items_of.get(i, ())
    return out


def _data_inputs(graph: ExpandedGraph, i: int) -> list[int]:
    """The nodes whose values node ``i`` takes from a worker.  A collector (a map's or a
    list's, resolved in this process) takes nothing itself: its consumers take its inputs'
    values, from where they were made.  A map over a Ref no run expanded takes nothing
    either: its listed value goes to this process.  An item takes the result it is an item
    of (a map over a map's result), else a value this process sends."""
    node = graph.nodes[i]
    if isinstance(node, MapItem):
        return [] if node.takes is None else _values_of(graph, node.takes)
    if node.kind in COLLECTORS or (node.kind == LOOP and graph.items_of.get(i)):
        return []  # (an expanded loop's iterations take its input, not the loop)
    return [j for d in data_inputs(node) for j in _values_of(graph, d)]


def _values_of(graph: ExpandedGraph, d: int) -> list[int]:
    """The nodes whose results a consumer of node ``d`` takes: ``d``, or through a
    collector, what it collects."""
    node = graph.nodes[d]
    if not isinstance(node, MapItem) and node.kind == LOOP and graph.items_of.get(d):
        return _values_of(graph, graph.items_of[d][-1])  # (its value: the last iteration's)
    if isinstance(node, MapItem) or node.kind not in COLLECTORS:
        return [d]
    inputs = graph.items_of.get(d, []) if node.kind == MAP else data_inputs(node)
    return [j for k in inputs for j in _values_of(graph, k)]


def _items_decided(tasks: Any, graph: ExpandedGraph) -> Any:
    """The cache decision of the expected items (the store's forecast knows the traced
    nodes only): like their map's, decided when the map runs."""
    for m, items in graph.items_of.items():
        mine = tasks["key"].isin({graph.nodes[j].key for j in items})
        what = "iteration" if graph.nodes[m].kind == LOOP else "item"
        construct = "loop" if graph.nodes[m].kind == LOOP else "map"
        tasks.loc[mine, "decision"] = "maybe"
        tasks.loc[mine, "reason"] = (f"an expected {what} of {graph.nodes[m].key}: known only "
                                     f"when the {construct} runs")
    return tasks
