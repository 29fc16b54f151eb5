"""What the scheduler does when a node that is not a plain task becomes ready.

:data:`RESOLVERS` maps a node kind (:mod:`nbflow.core.kinds`) to a function
``resolve(scheduler, i, ref)`` called instead of queueing node ``i`` for a worker.  Plain
tasks (and ``map`` nodes and compensations, which need a worker slot) have no entry.  Most
kinds are decided on the spot from their inputs' states and values, without a backend:

* ``collect``: the list of its inputs' values (the fan-in behind ``task.map``);
* ``const``: a plain value inside one side of a branch;
* ``gate``: one side of a branch; completes when the condition's truth equals the side it
  guards, is skipped otherwise (and with it everything on that side), fails when the
  condition has no truth value (an array, say);
* ``first``: takes the inputs in argument order, passing over skipped ones; the first
  other input decides: its value if it completed (or is a plain value), skipped if it
  failed.  Skipped when every input was skipped;
* ``gather``: the list of the values of the inputs that completed, failed when fewer than
  ``min_success`` did;
* ``loop``: a repeat-until.  It grows one iteration node at a time and waits for it; after
  each iteration it tests ``until(value)``.  It completes with the first value for which
  ``until`` is true, and fails with :class:`~nbflow.core.errors.LoopLimitError` after
  ``max_iter`` iterations: every loop ends, because each step either ends it or uses up one
  of finitely many iterations;
* ``approval``: waits for a person (:mod:`nbflow.engine.approvals`).

:func:`expand_map` is the growth step of a ``map`` over a Ref, run by a worker once the
Ref's value is known: one task node per item, then the map node collects them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..core import events as ev
from ..core.errors import GatherError, LoopLimitError
from ..core.kinds import APPROVAL, COLLECT, CONST, FIRST, GATE, GATHER, LOOP, TASK
from ..core.ref import Ref
from ..core.remote import local
from ..core.states import COMPLETED, FAILED
from . import approvals, batching

if TYPE_CHECKING:
    from .scheduler import Scheduler

Resolver = Callable[["Scheduler", int, Ref], None]


def _value(s: Scheduler, a: Any) -> Any:
    return local(s.results[a.index]) if type(a) is Ref else a


def short(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters for messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def resolve_collect(s: Scheduler, i: int, ref: Ref) -> None:
    s._complete(i, [s.results[p.index] for p in ref.args], 0.0, None, inline=True)


def resolve_const(s: Scheduler, i: int, ref: Ref) -> None:
    s._complete(i, ref.args[0], 0.0, None, inline=True)


def resolve_gate(s: Scheduler, i: int, ref: Ref) -> None:
    cond, expect = ref.args
    value = _value(s, cond)
    try:
        truth = bool(value)
    except Exception as e:  # e.g. the truth value of an array is ambiguous
        s._fail(i, TypeError(f"{ref.key}: cannot use {type(value).__name__} as a branch "
                             f"condition ({e}); make the condition return True/False"))
        return
    if truth == expect:
        s._complete(i, None, 0.0, None, inline=True)
    else:
        what = cond.key if type(cond) is Ref else "the condition"
        s._skip(i, f"branch not taken: {what} is {short(value)}")


def resolve_first(s: Scheduler, i: int, ref: Ref) -> None:
    for a in ref.args:
        if type(a) is not Ref:
            s._complete(i, a, 0.0, None, inline=True)
            return
        st = s.state[a.index]
        if st == FAILED:
            s._skip(i, f"upstream task {a.key!r} failed")
            return
        if st == COMPLETED:
            s._complete(i, s.results[a.index], 0.0, None, inline=True)
            return
    s._skip(i, "every input of first() was skipped")


def resolve_gather(s: Scheduler, i: int, ref: Ref) -> None:
    values, failed, skipped = [], [], []
    for a in ref.args:
        if type(a) is not Ref:
            values.append(a)
        elif s.state[a.index] == COMPLETED:
            values.append(s.results[a.index])
        elif s.state[a.index] == FAILED:
            failed.append(a.key)
        else:
            skipped.append(a.key)
    need = (ref.kwargs or {})["min_success"]
    if len(values) >= need:
        s._complete(i, values, 0.0, None, inline=True)
    else:
        s._fail(i, GatherError(
            f"{ref.key} needed {need} of {len(ref.args)} inputs to complete, {len(values)} did "
            f"(failed: {failed or 'none'}, skipped: {skipped or 'none'})"))


def resolve_loop(s: Scheduler, i: int, ref: Ref) -> None:
    """Start the loop, or (its latest iteration completed) end it or grow the next one."""
    opts = ref.kwargs or {}
    n = s.loop_iters.get(i, 0)
    if n == 0:
        value = _value(s, ref.args[0])
        s.enter(ev.TaskStarted(time.time(), i, ref.key, 1, "loop"))
    else:
        value = local(s.results[s._last_iteration[i]])
        try:
            finished = bool(opts["until"](value))
        except Exception as e:
            s._fail(i, e)
            return
        if finished:
            s._complete(i, value, time.time() - s.start[i], None, inline=True)
            return
        if opts["max_iter"] is not None and n >= opts["max_iter"]:
            s._fail(i, LoopLimitError(
                f"{ref.key}: until() was still false after max_iter={opts['max_iter']} "
                f"iterations (last value: {short(value)}); raise max_iter or check the "
                "until condition"))
            return
    s.loop_iters[i] = n + 1
    child = s._append_node(ref, ref.task, (value,), None, [], f"{ref.key}[{n}]", [i], TASK)
    s._last_iteration[i] = child.index
    s.waiting[i] = 1
    s.emit(ev.TasksAdded(time.time(), ref.key, [child.key], [child.index], [child], i))
    s._make_ready(child.index)
    s._fill()


def expand_map(s: Scheduler, i: int) -> None:
    """A map over a Ref whose value is now known: one node per item, then collect."""
    ref = s.nodes[i]
    items_ref = ref.args[0]
    items = local(s.results[items_ref.index])
    try:
        items = list(items)
    except TypeError:  # not retried: the same input would fail the same way
        s._fail(i, TypeError(f"{ref.key}: map needs a list (or other iterable) from "
                             f"{items_ref.key}, got {type(items).__name__}"))
        s._fill()
        s._check_progress()
        return
    now = time.time()
    s.enter(ev.TaskStarted(now, i, ref.key, 1, "map"))
    kwargs = {k: s._resolve(v) for k, v in ref.kwargs.items()} if ref.kwargs else None
    task = ref.task
    first = len(s.nodes)
    keys = []
    for j, item in enumerate(items):
        child = s._append_node(ref, task, (item,), kwargs, [], f"{ref.key}[{j}]", [i], TASK)
        keys.append(child.key)
    n = len(items)
    s.waiting[i] = n
    batch, min_success = getattr(ref.wf, "ref_maps", {}).get(i, (None, None))
    chunking = batching.plan(task.spec, batch, n) if n else None
    if chunking is not None:
        s.batches.add(len(s.nodes), first, n, chunking)
    # The map node now collects its children; it completes when they all have.  A tolerant
    # map (on_error="skip", or inside nf.gather) gathers them instead: the values of the
    # items that completed, failed when fewer than min_success did (-1: all of them).
    kind, opts = COLLECT, None
    if min_success is not None:
        kind, opts = GATHER, {"min_success": n if min_success < 0 else min_success}
    s.nodes[i] = Ref(ref.wf, i, None, tuple(s.nodes[first:]), opts, list(range(first, first + n)),
                     ref.key, 1, kind)
    s.emit(ev.TasksAdded(now, ref.key, keys, list(range(first, first + n)),
                         s.nodes[first:first + n], i))
    if n == 0:
        s._make_ready(i)
        s._fill()
        return
    for k in range(first, first + n):
        s._make_ready(k)
    s._fill()


RESOLVERS: dict[str, Resolver] = {
    COLLECT: resolve_collect,
    CONST: resolve_const,
    GATE: resolve_gate,
    FIRST: resolve_first,
    GATHER: resolve_gather,
    LOOP: resolve_loop,
    APPROVAL: approvals.request,
}
