"""Load workflow execution traces in WfCommons' WfFormat (schemaVersion 1.5).

A WfFormat file describes one real run of a scientific workflow:

- ``workflow.specification.tasks[]``: the task graph (``id``, ``name``, ``parents``,
  ``children``, ``inputFiles``, ``outputFiles``);
- ``workflow.specification.files[]``: ``id`` and ``sizeInBytes`` of every file;
- ``workflow.execution.tasks[]``: what was measured per task (``runtimeInSeconds``,
  ``avgCPU``, ``memoryInBytes``, ``machines``, ...).

:func:`load_trace` turns such a file into a :class:`Trace`, a small immutable value
that the prediction room (duration models, makespan simulation) and the benchmarks use
as data.  The loader accepts any WfFormat 1.5 file rather than the particular instances
shipped with the repository, and is tolerant where real files differ:

- an edge may be listed only as a parent, only as a child, or both; the union is taken;
- a task without an execution entry is kept with a runtime of 0 (and unknown memory);
- keys the loader does not know are ignored;
- file references may be plain file ids (1.5) or objects carrying ``id``/``name`` and a
  size (older files), and a file missing from ``files[]`` counts as 0 bytes.

What is not WfFormat at all (no ``workflow.specification.tasks``, a task without an id,
an edge to a task that does not exist, a cycle) raises :class:`WfFormatError`, a
``ValueError`` whose message names the file and the missing key or offending tasks.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx

from ..core.errors import WfFormatError

__all__ = [
    "IndexedGraph",
    "Trace",
    "TraceTask",
    "WfFormatError",
    "category_of",
    "load_trace",
    "parse_trace",
]



def category_of(name: str) -> str:
    """Return the task category: the part of ``name`` before its ``_ID<number>`` suffix.

    A name without such a suffix is its own category.

    >>> category_of("individuals_ID0000001")
    'individuals'
    >>> category_of("cpuhog_chain_00000001")
    'cpuhog_chain_00000001'
    """
    head, sep, tail = name.rpartition("_ID")
    return head if sep and head and tail[:1].isdigit() else name


@dataclass(frozen=True, slots=True)
class TraceTask:
    """One task of a trace: its place in the graph and what its real run measured."""

    id: str
    name: str
    category: str
    runtime_s: float
    parents: tuple[str, ...]
    children: tuple[str, ...]
    input_bytes: int = 0
    output_bytes: int = 0
    memory_bytes: int | None = None
    avg_cpu: float | None = None
    machines: tuple[str, ...] = ()
    input_files: tuple[str, ...] = ()
    output_files: tuple[str, ...] = ()
    has_execution: bool = True


@dataclass(frozen=True, slots=True)
class IndexedGraph:
    """A trace's graph with tasks numbered ``0..n-1`` in a topological creation order.

    ``succs[i]`` lists the successors of node ``i`` sorted by index (every one greater than
    ``i``), which is the shape the engine's scheduler and :func:`nbflow.predict.simulate.simulate`
    work on; ``ids[i]`` is the task id of node ``i`` and ``durations[i]`` its runtime.
    """

    ids: tuple[str, ...]
    succs: tuple[tuple[int, ...], ...]
    durations: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class Trace:
    """A workflow trace: its tasks (in file order) and run-level facts.

    Graph helpers: :meth:`topological_order`, :meth:`to_networkx`, :meth:`indexed`;
    bounds: :meth:`critical_path_s`, :meth:`total_work_s`, :meth:`lower_bound`.
    """

    name: str
    tasks: tuple[TraceTask, ...]
    source: str = ""
    schema_version: str | None = None
    makespan_s: float | None = None
    _by_id: dict[str, TraceTask] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_id: dict[str, TraceTask] = {}
        for t in self.tasks:
            if t.id in by_id:
                raise WfFormatError(f"{self._where()}: duplicate task id {t.id!r}")
            by_id[t.id] = t
        for t in self.tasks:
            for other in (*t.parents, *t.children):
                if other not in by_id:
                    raise WfFormatError(
                        f"{self._where()}: task {t.id!r} has an edge to unknown task {other!r}"
                    )
        object.__setattr__(self, "_by_id", by_id)

    def _where(self) -> str:
        return self.source or self.name or "<trace>"

    def __len__(self) -> int:
        return len(self.tasks)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._by_id

    def task(self, task_id: str) -> TraceTask:
        """Return the task with id ``task_id`` (``KeyError`` if there is none)."""
        return self._by_id[task_id]

    def categories(self) -> dict[str, int]:
        """Task count per category, in order of first appearance."""
        counts: dict[str, int] = {}
        for t in self.tasks:
            counts[t.category] = counts.get(t.category, 0) + 1
        return counts

    def to_networkx(self) -> nx.DiGraph:
        """The task graph: one node per task id with the task's fields as attributes."""
        g: nx.DiGraph = nx.DiGraph(name=self.name)
        for t in self.tasks:
            g.add_node(
                t.id,
                name=t.name,
                category=t.category,
                runtime_s=t.runtime_s,
                memory_bytes=t.memory_bytes,
                input_bytes=t.input_bytes,
                output_bytes=t.output_bytes,
            )
        for t in self.tasks:
            g.add_edges_from((p, t.id) for p in t.parents)
        return g

    def topological_order(self) -> list[str]:
        """Task ids in a deterministic topological order (file order breaks ties).

        Raises :class:`WfFormatError` (a ``ValueError``) naming the tasks on a cycle.
        """
        g = self.to_networkx()
        position = {t.id: i for i, t in enumerate(self.tasks)}
        try:
            return list(nx.lexicographical_topological_sort(g, key=position.__getitem__))
        except nx.NetworkXUnfeasible:
            cycle = [u for u, _ in nx.find_cycle(g)]
            shown = " -> ".join([*cycle, cycle[0]])
            raise WfFormatError(f"{self._where()}: the task graph has a cycle: {shown}") from None

    def indexed(self, order: Sequence[str] | None = None) -> IndexedGraph:
        """Number the tasks in ``order`` (default :meth:`topological_order`) for simulation.

        ``order`` must be a topological order of all tasks; successor lists are sorted by
        index so they match the order in which a workflow built in ``order`` creates them.
        """
        ids = list(self.topological_order() if order is None else order)
        index = {tid: i for i, tid in enumerate(ids)}
        if len(index) != len(ids) or set(index) != set(self._by_id):
            raise ValueError("order must list every task of the trace exactly once")
        succs: list[list[int]] = [[] for _ in ids]
        for tid in ids:
            j = index[tid]
            for p in self._by_id[tid].parents:
                i = index[p]
                if i >= j:
                    raise ValueError(f"order is not topological: {p!r} comes after {tid!r}")
                succs[i].append(j)
        return IndexedGraph(
            ids=tuple(ids),
            succs=tuple(tuple(sorted(s)) for s in succs),
            durations=tuple(self._by_id[tid].runtime_s for tid in ids),
        )

    def critical_path_s(self) -> float:
        """Runtime of the heaviest dependency chain (the makespan with unlimited workers)."""
        finish: dict[str, float] = {}
        for tid in self.topological_order():
            t = self._by_id[tid]
            finish[tid] = max((finish[p] for p in t.parents), default=0.0) + t.runtime_s
        return max(finish.values(), default=0.0)

    def total_work_s(self) -> float:
        """Sum of all task runtimes (the makespan with one worker)."""
        return math.fsum(t.runtime_s for t in self.tasks)

    def lower_bound(self, workers: int) -> float:
        """``max(critical path, total work / workers)``: no schedule can be shorter."""
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        return max(self.critical_path_s(), self.total_work_s() / workers)


# ----------------------------------------------------------------------------- parsing


def load_trace(path: str | os.PathLike[str]) -> Trace:
    """Read a WfFormat JSON file and return its :class:`Trace`."""
    p = Path(path)
    try:
        with p.open("rb") as fh:
            doc = json.load(fh)
    except json.JSONDecodeError as exc:
        raise WfFormatError(f"{p}: not JSON ({exc})") from None
    return parse_trace(doc, source=str(p))


def parse_trace(doc: Any, source: str = "<memory>") -> Trace:
    """Build a :class:`Trace` from an already decoded WfFormat document."""

    def need(obj: Any, key: str, path: str) -> Any:
        if not isinstance(obj, Mapping):
            raise WfFormatError(f"{source}: not WfFormat: {path or 'document'} is not an object")
        if key not in obj:
            where = f"{path}.{key}" if path else key
            raise WfFormatError(f"{source}: not WfFormat: missing key {where!r}")
        return obj[key]

    workflow = need(doc, "workflow", "")
    spec = need(workflow, "specification", "workflow")
    spec_tasks = need(spec, "tasks", "workflow.specification")
    if not isinstance(spec_tasks, list):
        raise WfFormatError(f"{source}: workflow.specification.tasks is not a list")

    sizes = _file_sizes(spec.get("files"))
    execution = workflow.get("execution")
    execution = execution if isinstance(execution, Mapping) else {}
    measured = _execution_by_id(execution.get("tasks"))

    # First pass: ids, names and both edge directions, in file order.
    ids: list[str] = []
    raw: list[Mapping[str, Any]] = []
    parents: dict[str, dict[str, None]] = {}
    children: dict[str, dict[str, None]] = {}
    for k, entry in enumerate(spec_tasks):
        where = f"workflow.specification.tasks[{k}]"
        if not isinstance(entry, Mapping):
            raise WfFormatError(f"{source}: {where} is not an object")
        tid = entry.get("id", entry.get("name"))
        if not isinstance(tid, str) or not tid:
            raise WfFormatError(f"{source}: not WfFormat: missing key {where + '.id'!r}")
        ids.append(tid)
        raw.append(entry)
        parents.setdefault(tid, {})
        children.setdefault(tid, {})
    for tid, entry in zip(ids, raw, strict=True):
        for p in _str_list(entry.get("parents"), source, f"task {tid!r} parents"):
            _add_edge(parents, children, p, tid)
        for c in _str_list(entry.get("children"), source, f"task {tid!r} children"):
            _add_edge(parents, children, tid, c)

    tasks: list[TraceTask] = []
    for tid, entry in zip(ids, raw, strict=True):
        name = entry.get("name")
        name = name if isinstance(name, str) and name else tid
        inputs = _file_refs(entry.get("inputFiles"), sizes)
        outputs = _file_refs(entry.get("outputFiles"), sizes)
        ex = measured.get(tid)
        tasks.append(
            TraceTask(
                id=tid,
                name=name,
                category=category_of(name),
                runtime_s=_runtime(ex, source, tid),
                parents=tuple(parents[tid]),
                children=tuple(children[tid]),
                input_bytes=sum(size for _, size in inputs),
                output_bytes=sum(size for _, size in outputs),
                memory_bytes=_opt_int(ex.get("memoryInBytes")) if ex else None,
                avg_cpu=_opt_float(ex.get("avgCPU")) if ex else None,
                machines=_machines(ex.get("machines")) if ex else (),
                input_files=tuple(fid for fid, _ in inputs),
                output_files=tuple(fid for fid, _ in outputs),
                has_execution=ex is not None,
            )
        )

    name = doc.get("name")
    version = doc.get("schemaVersion")
    return Trace(
        name=name if isinstance(name, str) and name else Path(source).stem,
        tasks=tuple(tasks),
        source=source,
        schema_version=str(version) if version is not None else None,
        makespan_s=_opt_float(execution.get("makespanInSeconds")),
    )


def _add_edge(
    parents: dict[str, dict[str, None]], children: dict[str, dict[str, None]], src: str, dst: str
) -> None:
    # Ordered sets; unknown endpoints are kept here and reported by Trace with the file name.
    parents.setdefault(dst, {})[src] = None
    children.setdefault(src, {})[dst] = None


def _str_list(value: Any, source: str, what: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise WfFormatError(f"{source}: {what} is not a list of task ids")
    return value


def _file_sizes(files: Any) -> dict[str, int]:
    sizes: dict[str, int] = {}
    if not isinstance(files, list):
        return sizes
    for f in files:
        if isinstance(f, Mapping):
            fid = f.get("id", f.get("name"))
            if isinstance(fid, str):
                sizes[fid] = _opt_int(f.get("sizeInBytes", f.get("size"))) or 0
    return sizes


def _file_refs(refs: Any, sizes: Mapping[str, int]) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    if not isinstance(refs, list):
        return out
    for r in refs:
        if isinstance(r, str):
            out.append((r, sizes.get(r, 0)))
        elif isinstance(r, Mapping):
            fid = r.get("id", r.get("name", r.get("link")))
            if isinstance(fid, str):
                own = _opt_int(r.get("sizeInBytes", r.get("size")))
                out.append((fid, own if own is not None else sizes.get(fid, 0)))
    return out


def _execution_by_id(tasks: Any) -> dict[str, Mapping[str, Any]]:
    out: dict[str, Mapping[str, Any]] = {}
    if not isinstance(tasks, list):
        return out
    for entry in tasks:
        if isinstance(entry, Mapping):
            tid = entry.get("id", entry.get("name"))
            if isinstance(tid, str):
                out[tid] = entry
    return out


def _runtime(ex: Mapping[str, Any] | None, source: str, tid: str) -> float:
    if ex is None:
        return 0.0
    value = ex.get("runtimeInSeconds", ex.get("runtime"))
    if value is None:
        return 0.0
    seconds = _opt_float(value)
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        raise WfFormatError(f"{source}: task {tid!r} has an invalid runtimeInSeconds {value!r}")
    return seconds


def _opt_float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return float(value)
    except ValueError:
        return None


def _opt_int(value: Any) -> int | None:
    f = _opt_float(value)
    return int(f) if f is not None and math.isfinite(f) else None


def _machines(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, Iterable) or isinstance(value, Mapping):
        return ()
    names: list[str] = []
    for m in value:
        if isinstance(m, str):
            names.append(m)
        elif isinstance(m, Mapping) and isinstance(m.get("nodeName"), str):
            names.append(m["nodeName"])
    return tuple(names)
