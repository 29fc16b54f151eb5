"""Control flow that compiles to the same DAG: branches, joins, bounded loops, sagas, approvals.

Sequence, parallel, choice, iteration and joins, plus the saga and approval patterns, as
graph constructs.  Nothing here runs anything: each function adds nodes to the workflow being traced, and the
scheduler gives the node kinds their meaning (see ``nbflow.engine.graph`` for the kinds).

* A *skipped* task is a state with a reason, not an error.  The untaken side of a branch is
  skipped; so is every task that needs the value of a skipped or failed task — except the
  tolerant joins ``first`` and ``gather``, which wait for all their inputs to end and then
  decide.
* ``loop`` tests ``until`` **after** each iteration (repeat-until): the body always runs at
  least once, and the loop ends with the first value for which ``until(value)`` is true.
  ``max_iter`` is required (a bounded loop always terminates: see docs/architecture.md); a
  loop that has run ``max_iter`` iterations without ``until`` becoming true fails and says so.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..core.errors import ApprovalTimeout, GatherError, LoopLimitError, WorkflowDefinitionError
from ..core.kinds import APPROVAL, COLLECT, CONST, FIRST, GATE, GATHER, LOOP, MAP
from ..core.ref import Ref
from .graph import (
    WorkflowGraph,
    current_workflow,
)
from .spec import Task


def _workflow(what: str) -> WorkflowGraph:
    wf = current_workflow()
    if wf is None:
        raise WorkflowDefinitionError(
            f"nf.{what}() builds part of a workflow: call it inside `with nf.Workflow(...)`")
    return wf


def _deps_of(wf: WorkflowGraph, values: tuple[Any, ...]) -> list[int]:
    deps: list[int] = []
    for v in values:
        if type(v) is Ref:
            if v.wf is not wf:
                raise WorkflowDefinitionError(f"{v.key} belongs to workflow {v.wf.name!r}, not {wf.name!r}")
            deps.append(v.index)
    return deps


def _as_ref(wf: WorkflowGraph, value: Any, name: str, side_start: int) -> Ref:
    """A side's result as a node under the side's gate: a plain value becomes a const node,
    and a Ref made before the side (so not waiting for the gate) is passed through a gated
    ``first`` so that the side's result is skipped when the side is not taken."""
    if type(value) is Ref:
        if value.index >= side_start:
            return value
        return wf._add_node(FIRST, name, (value,), [value.index], nested=1)
    return wf._add_node(CONST, name, (value,))


def branch(cond: Any, then: Callable[[], Any], otherwise: Callable[[], Any] | None = None) -> Ref:
    """``then()`` if ``cond`` is truthy at run time, else ``otherwise()``.

    ``cond`` is a Ref or a value; ``then``/``otherwise`` are zero-argument callables that
    build their side (task calls) and return a Ref (or a value).  Both sides are traced; the
    untaken side's tasks end ``skipped`` with the reason.  The returned Ref resolves to the
    taken side's value, so a task consuming it runs exactly once.  Branches nest.
    """
    wf = _workflow("branch")
    for name, side in (("then", then), ("otherwise", otherwise)):
        if side is not None and not callable(side):
            raise WorkflowDefinitionError(
                f"nf.branch({name}=...) takes a zero-argument function that builds that side "
                f"(e.g. {name}=lambda: clean(df)), got {type(side).__name__}"
            )
    deps = _deps_of(wf, (cond,))
    results = []
    for expect, side, label in ((True, then, "then"), (False, otherwise, "otherwise")):
        gate = wf._add_node(GATE, f"branch.{label}", (cond, expect), deps)
        wf._gates.append(gate.index)
        try:
            start = len(wf.nodes)
            value = side() if side is not None else None
            results.append(_as_ref(wf, value, f"branch.{label}.value", start))
        finally:
            wf._gates.pop()
    return first(*results, _name="branch")


def first(*refs: Any, _name: str = "first") -> Ref:
    """Resolves to the value of the first input (in argument order) that was not skipped.

    It waits for every input to end.  A failed input skips it (the failure propagates); if
    every input was skipped it is skipped too.
    """
    wf = _workflow("first")
    if not refs:
        raise WorkflowDefinitionError("nf.first() needs at least one input")
    return wf._add_node(FIRST, _name, refs, _deps_of(wf, refs), nested=1)


def gather(*refs: Any, min_success: int | None = None) -> Ref:
    """Resolves to the list of values of the inputs that completed, in argument order.

    Fails (``GatherError``) only if fewer than ``min_success`` inputs completed (default:
    all of them).  ``min_success=1`` is an any-of join, ``k`` a k-of-n join.  Failures of
    inputs that a successful gather absorbed do not fail the run.
    """
    wf = _workflow("gather")
    if not refs:
        raise WorkflowDefinitionError("nf.gather() needs at least one input")
    if len(refs) == 1 and isinstance(refs[0], (list, tuple, set)) and any(
            isinstance(r, Ref) for r in refs[0]):
        # A container is one input (a constant) to gather: its results would be waited for
        # as plain arguments, every failure would fail the run, and min_success would count 1.
        raise WorkflowDefinitionError(
            f"nf.gather() takes its inputs as separate arguments, got one "
            f"{type(refs[0]).__name__} of {len(refs[0])} results; write nf.gather(*results) "
            f"(or nf.gather(task.map(items)) for a map's items)")
    if len(refs) == 1 and type(refs[0]) is Ref and refs[0].kind == COLLECT:
        return _gather_map(wf, refs[0], min_success)
    if len(refs) == 1 and type(refs[0]) is Ref and refs[0].kind == MAP:
        return _gather_ref_map(wf, refs[0], min_success)
    k = len(refs) if min_success is None else min_success
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= len(refs):
        raise WorkflowDefinitionError(
            f"nf.gather(min_success=...) must be a whole number from 0 to {len(refs)} (the number "
            f"of inputs), got {min_success!r}"
        )
    return wf._add_node(GATHER, "gather", refs, _deps_of(wf, refs), kwargs={"min_success": k}, nested=1)


def _gather_map(wf: WorkflowGraph, collect: Ref, min_success: int | None) -> Ref:
    """``nf.gather(task.map(items), min_success=k)``: the map's items, tolerantly joined.

    When nothing else uses the map's result yet, its collecting node itself becomes the
    gather (so a failed item leaves no strict consumer behind to fail the run); otherwise a
    new gather over the same items is added.
    """
    parts = collect.args
    k = len(parts) if min_success is None else min_success
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= len(parts):
        raise WorkflowDefinitionError(
            f"nf.gather(min_success=...) must be a whole number from 0 to {len(parts)} (the number "
            f"of items), got {min_success!r}")
    used = any(collect.index in r.deps for r in wf.nodes[collect.index + 1:])
    if not used:
        collect.kind = GATHER
        collect.kwargs = {"min_success": k}
        return collect
    return wf._add_node(GATHER, "gather", parts, _deps_of(wf, parts), kwargs={"min_success": k}, nested=1)


def _gather_ref_map(wf: WorkflowGraph, node: Ref, min_success: int | None) -> Ref:
    """``nf.gather(task.map(ref), min_success=k)``: the items are known only at run time, so
    the map node itself becomes tolerant (it collects like a gather when it expands);
    ``k`` is checked against the number of items then (default: all of them)."""
    if min_success is not None and (isinstance(min_success, bool) or not isinstance(min_success, int)
                                    or min_success < 0):
        raise WorkflowDefinitionError(
            f"nf.gather(min_success=...) must be a whole number >= 0 (at most the number of "
            f"items {node.key} expands to), got {min_success!r}")
    if any(node.index in r.deps for r in wf.nodes[node.index + 1:]):
        raise WorkflowDefinitionError(
            f"nf.gather({node.key}): the map's result is already used by another task, which "
            "would still fail with a failed item. Wrap the map where it is made: "
            "items = nf.gather(task.map(ref), min_success=k), then use `items`")
    batch, _ = wf.ref_maps.get(node.index, (None, None))
    wf.ref_maps[node.index] = (batch, -1 if min_success is None else min_success)
    return node


def loop(body: Task, init: Any, *, until: Callable[[Any], bool], max_iter: int | None) -> Ref:
    """Apply the task ``body`` to ``init``, then to each result, until ``until(value)``.

    ``until`` is tested after each iteration (see the module docstring) on the run's event
    loop, so it should be a quick predicate.  Each iteration is a task in the run, keyed
    ``<loop key>[i]``.  ``max_iter`` is required; ``None`` (no bound) is refused by
    ``nf.check`` (finding ``unbounded-loop``).
    """
    wf = _workflow("loop")
    if not isinstance(body, Task):
        raise WorkflowDefinitionError(f"nf.loop(body=...) takes an @nf.task, got {type(body).__name__}")
    if not callable(until):
        raise WorkflowDefinitionError("nf.loop(until=...) takes a predicate: a function of the value")
    if max_iter is not None and (isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1):
        raise WorkflowDefinitionError(f"nf.loop(max_iter=...) must be a whole number >= 1, got {max_iter!r}")
    return wf._add_node(LOOP, f"{body.spec.name}.loop", (init,), _deps_of(wf, (init,)), body,
                        {"until": until, "max_iter": max_iter}, nested=1)


@dataclass(slots=True)
class Saga:
    """The tasks traced inside one ``with nf.saga():`` block."""

    name: str
    members: list[int] = field(default_factory=list)


@contextlib.contextmanager
def saga(name: str = "saga") -> Iterator[Saga]:
    """Tasks called in this block form a saga: when one fails, the completed ones are
    compensated in reverse order of completion (each task's ``compensate=undo`` receives its
    output); a failing undo is recorded and the rollback goes on; the run ends ``failed``
    with ``run.rollbacks`` describing what was undone."""
    wf = _workflow("saga")
    s = Saga(f"{name}-{len(wf.sagas)}")
    wf.sagas.append(s)
    wf._sagas.append(s)
    try:
        yield s
    finally:
        wf._sagas.remove(s)


ON_TIMEOUT = ("approve", "reject", "fail")


def approval(prompt: str, timeout: float | None = None, on_timeout: str = "approve",
             *, after: tuple[Ref, ...] = ()) -> Ref:
    """A human decision: resolves to True (approved) or False (rejected).

    With a widget front end (an interactive notebook, in a ``--background`` run) Approve and
    Reject buttons are shown; with no answer by ``timeout`` seconds — and always when
    headless (papermill, scripts) — ``on_timeout`` decides: ``"approve"``, ``"reject"``, or
    ``"fail"`` (the approval fails with ``ApprovalTimeout``).  ``run.approve(ref, True)``
    answers from code.
    """
    wf = _workflow("approval")
    if on_timeout not in ON_TIMEOUT:
        raise WorkflowDefinitionError(
            f"nf.approval(on_timeout=...) must be one of {ON_TIMEOUT}, got {on_timeout!r}")
    bad_timeout = isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0
    if timeout is not None and bad_timeout:
        raise WorkflowDefinitionError(
            f"nf.approval(timeout=...) must be seconds >= 0 or None, got {timeout!r}")
    ref = wf._add_node(APPROVAL, "approval", (str(prompt),), [r.index for r in after],
                       kwargs={"timeout": timeout, "on_timeout": on_timeout})
    return ref


# The notebook room sets this when a widget front end can show Approve/Reject buttons.
_interactive_approvals = False


def set_interactive_approvals(on: bool) -> None:
    """Say whether a front end can answer approvals (else ``on_timeout`` decides at once)."""
    global _interactive_approvals
    _interactive_approvals = bool(on)


def interactive_approvals() -> bool:
    return _interactive_approvals


__all__ = [
    "ApprovalTimeout",
    "GatherError",
    "LoopLimitError",
    "Saga",
    "approval",
    "branch",
    "first",
    "gather",
    "loop",
    "saga",
    "set_interactive_approvals",
]
