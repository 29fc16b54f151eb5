"""Approval nodes (``nf.approval``): a node whose value is a person's yes or no.

An approval becomes ready like any node but takes no worker slot: it waits on an
:class:`anyio.Event` for :meth:`Scheduler.answer` (``run.approve(key, True | False)`` from
any thread, through the run's loop).  While it waits it counts as a timer of the scheduler,
so a run whose only open work is an approval is not mistaken for a stalled one.  Its wait
begins in a task of its own, on a later turn of the loop: an approval skipped in between
(a saga rolled back) is not asked at all.  Nobody
answering within ``timeout`` (or a headless run, where nobody can answer at all) applies
``on_timeout``: ``"approve"`` or ``"reject"`` completes the node with True or False,
``"fail"`` fails it with :class:`~nbflow.core.errors.ApprovalTimeout`.

An answer given before the wait begins (the run not started yet, or what comes before the
approval still running) is kept in ``Scheduler.answers`` (:func:`keep`) and taken when the
wait would begin: the approval is announced as ever and ends at once with that answer,
headless or not (``on_timeout`` is for nobody answering, and somebody did).  The first
answer stands, as it does while the approval waits; one given after the approval ended
(answered, timed out, skipped) changes nothing.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import anyio

from ..core import events as ev
from ..core.errors import ApprovalTimeout
from ..core.ref import Ref
from ..core.states import READY, TERMINAL

if TYPE_CHECKING:
    from .scheduler import Scheduler


def request(s: Scheduler, i: int, ref: Ref) -> None:
    """Node ``i`` became ready: ask for the answer in the background."""
    s.enter(ev.TaskReady(time.time(), i, ref.key))
    s.timers += 1
    s.tg.start_soon(wait_for_answer, s, i)


async def wait_for_answer(s: Scheduler, i: int) -> None:
    """Run approval ``i``: announce it, wait for an answer or the timeout, then end it."""
    ref = s.nodes[i]
    opts = ref.kwargs or {}
    if s.state[i] is not READY:  # skipped since it became ready, before this task began (a
        s.timers -= 1            # saga rolled back in the same step): it is not to be asked
        s._check_progress()
        return
    try:
        now = time.time()
        s.enter(ev.TaskStarted(now, i, ref.key, 1, "approval"))
        s.emit(ev.ApprovalRequested(now, i, ref.key, ref.args[0], opts.get("timeout"),
                                    opts.get("on_timeout", "approve")))
        # an answer given before now (keep) is taken as it is; else one is waited for.
        # (setdefault: keep may add an answer from another thread at any moment)
        answer = s.answers.get(i)
        if not isinstance(answer, bool) and s.interactive():
            event = anyio.Event()
            answer = s.answers.setdefault(i, event)
            if answer is event:
                with anyio.move_on_after(opts.get("timeout")):
                    await event.wait()
                answer = s.answers.get(i) if event.is_set() else None
        t = time.time() - now
    finally:
        s.timers -= 1
    if isinstance(answer, bool):
        s._complete(i, answer, t, None)
    elif opts.get("on_timeout") == "fail":
        s._fail(i, ApprovalTimeout(f"{ref.key}: nobody answered {ref.args[0]!r} in time"), t)
        s._fill()
    else:
        s._complete(i, opts.get("on_timeout", "approve") == "approve", t, None)
    s._check_progress()


def answer(s: Scheduler, i: int, approved: Any) -> None:
    """Record a person's answer to approval node ``i`` (call on the run's loop): the answer
    its wait waits for, or, before the wait began, the one it takes then (:func:`keep`)."""
    event = s.answers.get(i)
    if isinstance(event, anyio.Event):
        if not event.is_set():
            s.answers[i] = bool(approved)
            event.set()
    else:
        keep(s, i, approved)


def keep(s: Scheduler, i: int, approved: Any) -> None:
    """Keep an answer to approval node ``i`` given before its wait began, for the wait to
    take (see the module); nothing if it has an answer already or has ended.

    Safe from any thread (``Run.approve`` calls it from the caller's before the run's loop
    exists): it changes ``s.answers`` by one ``setdefault``, which neither replaces the
    event of a wait that began meanwhile nor is lost to it (the wait puts its event there
    by ``setdefault`` too, and takes an answer it finds instead)."""
    if s.state[i] not in TERMINAL:
        s.answers.setdefault(i, bool(approved))
