"""Sagas (``with nf.saga(name)``): when a member fails, undo what its completed members did.

A saga is a set of member nodes traced inside one ``nf.saga`` block; a member's task may
declare ``compensate=undo_fn``.  When a member fails (and the run goes on after failures):

1. members that have not started yet (pending, ready, or waiting to retry) are skipped,
   with the reason naming the saga and the failed task;
2. once no member is running any more (a running member's end calls back here), each
   completed member that declares a compensation gets an ``undo`` node that calls it with
   the member's result.  The undo nodes run one after another in reverse order of the
   members' completion, as a chain: each waits for the one before it.  ``undo`` is a
   tolerant kind, so a failed compensation does not stop the ones after it.

Compensations are never served from a cache: an undo must really run.  Each saga that
rolled back leaves one entry in :attr:`Sagas.rollbacks` (the run turns it into
``run.rollbacks``).  Nested sagas: a node belongs to its innermost block.
"""

from __future__ import annotations

import time
import weakref
from typing import TYPE_CHECKING, Any

from ..core import events as ev
from ..core.kinds import UNDO
from ..core.states import COMPLETED, PENDING, READY, RETRYING, RUNNING
from .spec import Task, _make_spec

if TYPE_CHECKING:
    from .scheduler import Scheduler


class Sagas:
    """The sagas of one run: membership, completion order, and rollbacks in progress."""

    def __init__(self, sched: Scheduler, sagas: list[Any] | None) -> None:
        # (weak: the scheduler owns this object; a strong reference back would make the two
        # a cycle that keeps every result of the run until a full collection)
        self.sched: Scheduler = weakref.proxy(sched)
        self.of: dict[int, Any] = {}  # member node -> its (innermost) saga
        self.done: dict[str, list[int]] = {}  # saga name -> members in completion order
        self.rolling: dict[str, dict[str, Any]] = {}  # saga name -> its rollback record
        self.rollbacks: list[dict[str, Any]] = []  # one entry per saga that rolled back
        for saga in sagas or ():
            for m in saga.members:
                self.of[m] = saga  # nested sagas: the innermost block comes last and wins

    def member_ended(self, i: int) -> None:
        """Member ``i`` completed (or ended otherwise): note it, compensate if due."""
        saga = self.of.get(i)
        if saga is None:
            return
        if self.sched.state[i] == COMPLETED:
            self.done.setdefault(saga.name, []).append(i)
        self._maybe_compensate(saga)

    def member_failed(self, i: int, failed_key: str) -> None:
        """Member ``i`` failed: roll its saga back (once; later failures only re-check)."""
        saga = self.of.get(i)
        if saga is None:
            return
        if saga.name in self.rolling:
            self._maybe_compensate(saga)
            return
        s = self.sched
        self.rolling[saga.name] = {"saga": saga.name, "failed_task": failed_key, "undo": []}
        reason = f"saga {saga.name} rolled back after {failed_key!r} failed"
        for m in saga.members:
            if s.state[m] in (PENDING, READY, RETRYING):
                s._skip(m, reason)
        self._maybe_compensate(saga)

    def _maybe_compensate(self, saga: Any) -> None:
        info = self.rolling.get(saga.name)
        if info is None or info.get("started"):
            return
        s = self.sched
        if any(s.state[m] in (RUNNING, RETRYING) for m in saga.members):
            return  # wait: a running member's end calls this again
        info["started"] = True
        done = [m for m in self.done.get(saga.name, []) if s.state[m] == COMPLETED]
        prev: list[int] = []
        first_undo = None
        for m in reversed(done):
            member = s.nodes[m]
            undo = member.task.spec.compensate if member.task is not None else None
            if undo is None:
                continue
            undo_task = Task(_make_spec(undo, name=f"{member.name}.undo", cache=False))
            node = s._append_node(member, undo_task, (s.results[m],), None, prev,
                                  f"{member.key}.undo", [], UNDO)
            info["undo"].append((member.key, node.index))
            s.emit(ev.TasksAdded(time.time(), member.key, [node.key], [node.index], [node], m))
            prev = [node.index]
            first_undo = node.index if first_undo is None else first_undo
        self.rollbacks.append(info)
        if first_undo is not None:
            s._make_ready(first_undo)
            s._fill()
