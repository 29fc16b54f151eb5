"""After a ``%%workflow`` cell: every name the cell bound to a Ref gets the Ref's value.

Only names the cell itself (re)bound are looked at, found by comparing the namespace before
and after the cell, so big objects elsewhere in the namespace are never scanned.  A name
may hold a Ref or a list, tuple or dict of Refs (e.g. ``parts = [clean(f) for f in
files]``).  A name whose Refs did not all complete (failed, skipped, cancelled) keeps its
Refs, so using it says clearly that it has no value.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..core.errors import ResultReleased, TaskNotFinished
from ..core.ref import Ref

if TYPE_CHECKING:
    from ..engine.run import Run
    from ..workflow import Workflow

_MISSING = object()
_CONTAINERS = (list, tuple, dict)


def holds_ref(value: Any, wf: Workflow, depth: int = 0) -> bool:
    t = type(value)
    if t is Ref:
        return value.wf is wf
    if depth < 3 and t in _CONTAINERS:
        items = value.values() if t is dict else value
        return any(holds_ref(v, wf, depth + 1) for v in items)
    return False


def bound_refs(ns: dict[str, Any], before: dict[str, Any], wf: Workflow) -> dict[str, Any]:
    """Names the cell (re)bound to something holding Refs of ``wf``, with those objects."""
    out = {}
    for name, value in list(ns.items()):
        if before.get(name, _MISSING) is value or name.startswith("_"):
            continue
        if holds_ref(value, wf):
            out[name] = value
    return out


def refs_in(value: Any, out: set[str] | None = None, depth: int = 0) -> set[str]:
    """The task keys of the Refs inside ``value`` (a Ref, or a list, tuple or dict of them,
    as :func:`holds_ref` looks)."""
    out = set() if out is None else out
    t = type(value)
    if t is Ref:
        out.add(value.key)
    elif depth < 3 and t in _CONTAINERS:
        for v in value.values() if t is dict else value:
            refs_in(v, out, depth + 1)
    return out


def expect(wf: Workflow, bound: dict[str, Any]) -> None:
    """Tell ``wf``'s next run which results the cell takes as it ends: a Dask run brings
    them here as part of its end, while it closes (``DaskBackend._to_prefetch``), so the
    names get their values without another round trip afterwards."""
    keys: set[str] = set()
    for value in bound.values():
        refs_in(value, keys)
    wf.bound_keys = frozenset(keys)


def resolve(value: Any, run: Run) -> Any:
    """The value with every Ref replaced by its result (raises TaskNotFinished if one has none)."""
    t = type(value)
    if t is Ref:
        return run[value]
    if t is list:
        return [resolve(v, run) for v in value]
    if t is tuple:
        return tuple(resolve(v, run) for v in value)
    if t is dict:
        return {k: resolve(v, run) for k, v in value.items()}
    return value


def bind(ns: dict[str, Any], bound: dict[str, Any], run: Run) -> list[str]:
    """Replace the bound names by their values; returns the names that got one.

    A name the user has rebound since (possible during a background run) is left alone.
    """
    done = []
    for name, value in bound.items():
        if ns.get(name, _MISSING) is not value:
            continue
        try:
            ns[name] = resolve(value, run)
        except (TaskNotFinished, ResultReleased):  # (released: the name keeps its Refs)
            continue
        done.append(name)
    return done


def restore(ns: dict[str, Any], before: dict[str, Any], names: list[str]) -> None:
    """Put ``names`` back as they were before the cell (used by --check and --plan)."""
    for name in names:
        old = before.get(name, _MISSING)
        if old is _MISSING:
            ns.pop(name, None)
        else:
            ns[name] = old
