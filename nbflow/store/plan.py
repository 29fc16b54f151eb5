"""What a run *would* do, without running it: ``plan(wf)`` (``%%workflow --plan``).

For each task it answers ``hit``, ``miss`` or ``maybe``, with the same reasons a run gives.
Keys are built from upstream *values*, which exist only for tasks that would hit (their
stored result's content hash is recorded), so a task downstream of a miss is ``maybe``:
it hits if the upstream task recomputes an equal value (early cutoff).  A ``map`` over a
Ref is ``maybe`` too: its items are known only when it runs.  Nothing is loaded (a hit's
file is only checked to exist, not verified) and nothing is written.
"""

from __future__ import annotations

from typing import Any

from ..core.errors import Unhashable
from ..core.graphs import topological_order
from ..core.kinds import COLLECT, MAP, TASK, UNDO
from ..core.ref import Ref
from . import explain as explaining
from .cache import NodeCache, RunCache
from .keys import KeyBuilder, cache_key, collect_digest
from .store import get_store

COLUMNS = ("key", "task", "decision", "reason")


class _Nodes:
    """The part of a Scheduler the cache reads, for a graph that is not running."""

    def __init__(self, nodes: list[Ref]) -> None:
        self.nodes = nodes
        self.succs: list[list[int]] = [[] for _ in nodes]
        for r in nodes:
            for d in r.deps:
                self.succs[d].append(r.index)
        self.results: list[Any] = [None] * len(nodes)
        self.output_bytes: list[int | None] = [None] * len(nodes)
        self.state = ["pending"] * len(nodes)


def plan(wf: Any, *, cache: bool = True, rerun: Any = None) -> list[dict[str, str]]:
    """One row per node of ``wf``: ``key``, ``task``, ``decision`` (hit / miss / maybe /
    collect) and ``reason``."""
    nodes = list(wf.nodes)
    if not cache:
        return [_row(r, "miss" if r.kind != COLLECT else "collect", "cache off") for r in nodes]
    store = get_store(warn=False)
    if store is None:
        return [_row(r, "miss", "cache off (no usable store)") for r in nodes]
    rc = RunCache(store, run_id="(plan)", workflow=wf, rerun=rerun)
    rc.bind(_Nodes(nodes))
    pending: dict[int, str] = {}  # node -> the task that makes its value unknown before running
    rows: dict[int, dict[str, str]] = {}
    try:
        store.sync_keys(rc.reader())
        for i in topological_order(nodes, lowest_first=False) or range(len(nodes)):
            rows[i] = _decide(rc, store, nodes[i], pending)
    finally:
        rc.close()
    return [rows[i] for i in range(len(nodes))]


def _row(r: Ref, decision: str, reason: str) -> dict[str, str]:
    return {"key": r.key, "task": r.name, "decision": decision, "reason": reason}


def _decide(rc: RunCache, store: Any, ref: Ref, pending: dict[int, str]) -> dict[str, str]:
    i = ref.index
    if ref.kind == COLLECT:
        unknown = [pending[p.index] for p in ref.args if p.index in pending]
        if unknown:
            pending[i] = unknown[0]
        else:
            rc.digests[i] = collect_digest([rc.digests[p.index] or "" for p in ref.args])
        return _row(ref, "collect", "collects the results of its items")
    if ref.kind == MAP:
        pending[i] = ref.key
        return _row(ref, "maybe", "a map over a Ref: its items are known only when it runs")
    if ref.kind not in (TASK, UNDO) or ref.task is None:  # branch, first, gather, loop, approval
        pending[i] = ref.key
        return _row(ref, "maybe", f"a {ref.kind} node: resolved when the workflow runs")
    spec = ref.task.spec
    if not spec.cache:
        pending[i] = ref.key
        return _row(ref, "miss", "cache off")
    refs = KeyBuilder.arg_refs(ref)
    unknown = [pending[j] for j in refs if j in pending]
    if unknown:
        pending[i] = ref.key
        forced = rc.forced_reason(i)
        if forced is not None:
            return _row(ref, "miss", "forced")
        return _row(ref, "maybe", f"depends on {unknown[0]}, which will run: hits only if that gives "
                                  "the same result (early cutoff)")
    try:
        code = rc.keys.code_of(spec.fn)
        inputs = rc.keys.inputs(ref)
    except (Unhashable, RecursionError) as e:
        pending[i] = ref.key
        name = e.args[0] if isinstance(e, Unhashable) and len(e.args) > 1 else "?"
        return _row(ref, "miss", f"input {name} cannot be hashed")
    info = rc.nodes[i] = NodeCache()
    info.code, info.inputs, info.options = code, inputs, rc.keys.options(spec)
    info.key = cache_key(code.digest, info.options, inputs)
    if rc.forced_reason(i) is not None:
        pending[i] = ref.key
        return _row(ref, "miss", "forced")
    info.prev = rc.previous().get(ref.key)
    entry = store.find(rc.reader(), info.key)
    if entry is not None and (entry.inline is not None or store.blobs.path(entry.blob).exists()):
        rc.digests[i] = entry.value_digest
        if entry.value_digest is None:
            rc.unhashable[i] = f"the result of {ref.key} cannot be hashed"
        return _row(ref, "hit", explaining.hit_reason(info))
    pending[i] = ref.key
    if entry is not None:
        return _row(ref, "miss", "stored result is missing (removed by gc or by hand)")
    return _row(ref, "miss", explaining.miss_reason(ref.name, info, rc.parts_of))
