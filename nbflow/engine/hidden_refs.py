"""Refs hidden where the scheduler does not look are refused while tracing.

The scheduler replaces Refs by values when they are passed directly or nested in plain
lists, tuples, sets and dict values.  A Ref inside a namedtuple, a dataclass instance, a
``SimpleNamespace`` or a subclass of a container would reach the task as a Ref, silently.
:func:`refuse_hidden_refs` runs as each call is traced and raises
:class:`~nbflow.RefUsageError` naming the argument, the Ref and the container type, so that
mistake surfaces at once, before anything runs.  Arbitrary objects are not searched (that
would mean walking every attribute of every argument); the containers people actually use
to group values are.
"""

from __future__ import annotations

import dataclasses
import types
from typing import Any

from ..core.errors import RefUsageError
from ..core.ref import Ref

_PLAIN = (list, tuple, dict, set, frozenset)
_ATOMS = frozenset({int, float, str, bytes, bool, type(None), complex})
_MAX_DEPTH = 100


def _children(obj: Any) -> tuple[Any, bool] | None:
    """(items, is_plain) of a container we look into, else None."""
    t = type(obj)
    if t in _PLAIN:
        return (obj.values() if t is dict else obj), True
    if isinstance(obj, dict):
        return obj.values(), False
    if isinstance(obj, (list, tuple, set, frozenset)):  # namedtuples and other subclasses
        return obj, False
    if t is types.SimpleNamespace:
        return vars(obj).values(), False
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return [getattr(obj, f.name, None) for f in dataclasses.fields(obj)], False
    return None


def _find(obj: Any, hidden_in: str | None, depth: int, seen: set[int]) -> tuple[Any, str] | None:
    t = type(obj)
    if t is Ref:
        return (obj, hidden_in) if hidden_in is not None else None
    if t in _ATOMS or depth > _MAX_DEPTH or id(obj) in seen:
        return None
    got = _children(obj)
    if got is None:
        return None
    seen.add(id(obj))
    items, plain = got
    where = hidden_in if plain else (hidden_in or f"{t.__module__}.{t.__qualname__}")
    for x in items:
        if type(x) in _ATOMS:
            continue
        found = _find(x, where, depth + 1, seen)
        if found is not None:
            return found
    return None


def refuse_hidden_refs(task_name: str, args: tuple[Any, ...], kwargs: dict[str, Any] | None) -> None:
    """Raise RefUsageError if a Ref sits inside a container the scheduler does not resolve."""
    # The hot path of tracing: arguments that are Refs or plain values need no look inside.
    for a in args:
        t = type(a)
        if t is not Ref and t not in _ATOMS:
            break
    else:
        if not kwargs or all(type(v) is Ref or type(v) in _ATOMS for v in kwargs.values()):
            return
    named = [(f"argument {i}", a) for i, a in enumerate(args)]
    named += [(f"argument {k!r}", a) for k, a in (kwargs or {}).items()]
    for label, a in named:
        if type(a) in _ATOMS or type(a) is Ref:
            continue
        found = _find(a, None, 0, set())
        if found is not None:
            ref, container = found
            short = container.rsplit(".", 1)[-1]
            raise RefUsageError(
                f"{task_name}(): {label} holds {ref.key} inside a {container}; nbflow replaces Refs "
                "by values only when passed directly or in lists, tuples, sets and dict values, so "
                f"the task would receive the Ref itself. Pass the fields as separate arguments (or "
                f"in a dict), and build the {short} inside the task")
