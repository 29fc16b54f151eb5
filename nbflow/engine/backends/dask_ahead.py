"""Submitting Dask tasks ahead of their inputs, so a dependent starts without a round trip.

Without this, a dependent Dask task is submitted only after nbflow has seen its inputs
complete: Dask finishes the producer, tells the client, the engine records the completion,
makes the consumer ready and submits it.  On small tasks that round trip through this
process is most of the time a chain takes.

So when a Dask task is submitted, its successors that will also run on Dask are submitted
too, at once, with the producers' *futures* as arguments: Dask starts each one on a worker
as soon as its inputs are in memory there.  This continues down the graph (a successor
submitted ahead makes its own successors eligible), so a chain or a fan-in is handed to
Dask in one go, as ``dask.delayed`` would hand it.

The engine starts ready tasks one at a time as its workers ramp up (and no more at once
than the cluster has threads), so the run's first submission also takes every other ready
Dask task with it (and what follows them), under the same conditions: Dask queues them
itself, as it queues a graph handed over whole.  Together with
:mod:`.dask_batch` (everything submitted in one turn of the event loop is one message), a
graph whose tasks can all go ahead reaches Dask in one or a few messages.

The engine still runs its usual course for every task.  When a task submitted ahead
becomes ready and starts in nbflow's view, the backend *adopts* the future already
submitted instead of submitting again, provided the arguments are the same futures it was
submitted with (otherwise — an input was retried under a new key, or came from the cache —
the ahead future is cancelled and the task submitted afresh).  The task's events are
therefore unchanged.  Adopting needs an engine slot; a task that finished on the cluster
before one freed is taken in at once instead, outside the admission count, as soon as it
is ready (``by_key`` lets the completion find its node: see
``DaskBackend._finished_ahead`` and ``Scheduler.finished_elsewhere``).  Its start and end
in the records are when its call ran on its worker (see ``docs/locality.md``).

A task is submitted ahead only when nothing nbflow decides before it runs would be skipped:

* the task is sure to run: the run has no result cache, or the cache says no lookup can
  find a stored result for it (``will_run``: the task is not cached, ``rerun=`` forces
  it, or no result made by its code was ever stored).  Otherwise its lookup must come
  first: its key needs its inputs' content hashes, known only once they are done, and a
  hit — early cutoff included — means it must not run at all.  So with the cache on, a
  first run (or the descendants of a task whose code changed and whose own code is new)
  goes ahead as without a cache, while a task that may hit waits for its lookup: one
  round trip through this process per dependency level, for those tasks only;
* it is a plain task on this Dask backend, with no declared resources (the engine admits
  those against the run's capacity), no ordering edge added for the run, and not a map
  item that runs in a chunk with its siblings (:mod:`nbflow.engine.batching`);
* the run's ``workers`` limit does not cap Dask below its thread count;
* every input is a result already here, a remote result, or a task in flight on Dask.

If a producer fails, Dask fails the dependents submitted ahead with the same error and
never runs them; the engine skips them as usual and their futures are released.  When the
run ends, futures submitted ahead that the engine never adopted are cancelled.
"""

from __future__ import annotations

import math
from typing import Any

from ...core.kinds import TASK
from ...core.ref import Ref
from ...core.states import COMPLETED, PENDING, READY


def _never(i: int) -> bool:
    return False  # (a cache that cannot tell: every task waits for its lookup)


class Ahead:
    """The futures submitted ahead for one run's Dask backend (see the module)."""

    def __init__(self, sched: Any, backend: Any) -> None:
        self.sched = sched
        self.backend = backend
        self.inflight: dict[int, Any] = {}  # node -> the DaskResult-to-be (future, hint)
        self.ahead: dict[int, tuple[Any, str, list[str]]] = {}  # node -> (future, unique, input keys)
        # unique Dask key -> node, for those not adopted yet (read on Dask's client loop too:
        # a completion of one of them is taken in at once, see DaskBackend._finished_ahead)
        self.by_key: dict[str, int] = {}
        self._index: dict[str, int] = {}
        self._ordered: set[int] = {b for _, b in sched.extra_edges}
        self.submitted_ahead = 0
        self.adopted = 0
        self._sent_ready = False  # the run's other ready tasks went with its first submission
        # ... and every one of them on this backend could go (none is left for a later
        # submission in the same turn of the loop): the first graph may be sent at once
        self.every_ready_sent = False

    def index_of(self, key: str) -> int | None:
        nodes = self.sched.nodes
        if len(self._index) != len(nodes):
            self._index = {r.key: r.index for r in nodes}
        return self._index.get(key)

    @property
    def enabled(self) -> bool:
        s = self.sched
        return bool(self.backend.keep_remote
                    and (s.limit == math.inf or s.limit >= self.backend.capacity))

    # -- the engine starts a task --------------------------------------------------------

    def take(self, i: int, input_keys: list[str]) -> tuple[Any, str] | None:
        """The future submitted ahead for node ``i`` if it was submitted with exactly these
        inputs (Dask keys); else None (and a stale one is cancelled)."""
        got = self.ahead.pop(i, None)
        if got is None:
            return None
        fut, unique, keys = got
        self.by_key.pop(unique, None)
        if keys != input_keys and sorted(keys) != sorted(input_keys):
            # (the same futures in another order are the same call: only a set's iteration
            # order can differ, its members being new objects once their tasks completed)
            if fut.status is not None:  # (sent unheld: it goes when what takes it goes)
                fut.cancel()
            self.backend._futures.discard(fut)
            dropped = getattr(self.backend.placement, "dropped", None)
            if dropped is not None:  # its placement no longer holds a place in a queue
                dropped(unique)
            return None
        self.adopted += 1
        return fut, unique

    def submitted(self, i: int, result: Any) -> None:
        """Node ``i`` is on Dask (``result``: its DaskResult-to-be): submit what follows."""
        self.inflight[i] = result
        if not self.enabled:
            return
        stack = [i]
        if not self._sent_ready and getattr(self.backend, "batch", None) is not None:
            # the engine starts ready tasks one by one as its workers ramp up: the others
            # go now, with this one (in the same message: see dask_batch)
            self._sent_ready = True
            left = False
            class_of = self.sched.class_of
            for j, state in enumerate(self.sched.state):
                if state is READY and j not in self.ahead and j not in self.inflight:
                    made = self._submit_ahead(j)
                    if made is not None:
                        self.inflight[j] = made
                        stack.append(j)
                    elif class_of[j] is not None and class_of[j].backend is self.backend:
                        left = True  # (it is submitted when the engine starts it)
            self.every_ready_sent = not left
        self._follow(stack)

    def send_ready(self) -> bool:
        """Before the engine starts (the run's thread not running yet): submit every task
        with no input, and everything that can go ahead with them, as :meth:`submitted`
        does for the run's first task; the engine adopts each as it starts it.  Only when
        every task with no input is a plain task of this backend that can go ahead
        (otherwise, one the engine submits later would be a second message: False, and
        nothing is submitted).  True when they all went (queued in the backend's batch)."""
        sched = self.sched
        if not self.enabled or self._sent_ready or getattr(self.backend, "batch", None) is None:
            return False
        roots = [j for j, w in enumerate(sched.waiting) if w == 0 and sched.state[j] is PENDING]
        if not roots or not all(self._eligible(j) for j in roots):
            return False
        # (in the order the engine's first submission takes them: the task it starts first,
        # then the others by index; placement weighs each against those queued before it)
        first = min(roots, key=lambda j: (-sched.level[j], -(sched.nodes[j].task.spec.priority or 0), j))
        roots = [first] + [j for j in roots if j != first]
        for j in roots:
            made = self._submit_ahead(j)
            if made is None:  # (it needs something first: what went waits for the engine's flush)
                return False
            self.inflight[j] = made
        self._sent_ready = self.every_ready_sent = True
        self._follow(list(roots))
        return True

    def _follow(self, stack: list[int]) -> None:
        """Submit ahead what follows the nodes on ``stack`` (and what follows those)."""
        while stack:
            j = stack.pop()
            for s in self.sched.succs[j]:
                if s in self.inflight or s in self.ahead:
                    continue
                made = self._submit_ahead(s)
                if made is not None:
                    self.inflight[s] = made
                    stack.append(s)

    def ended(self, i: int) -> None:
        """Node ``i``'s attempt is over (its result, if any, is in the engine's records)."""
        self.inflight.pop(i, None)

    # -- one successor -------------------------------------------------------------------

    def _eligible(self, s: int) -> bool:
        sched = self.sched
        ref: Ref = sched.nodes[s]
        if ref.kind != TASK or sched.state[s] not in (PENDING, READY) or s in self._ordered:
            return False
        batches = sched.batches
        if batches.group_of is not None and batches.of(s) is not None:
            return False  # (a map item that runs in a chunk with its siblings, not alone)
        cls = sched.class_of[s]
        if cls is None or cls.backend is not self.backend or ref.task.spec.resources:
            return False
        for d in ref.deps:
            if d not in self.inflight and sched.state[d] is not COMPLETED:
                return False
        cache = sched.cache
        return cache is None or bool(getattr(cache, "will_run", _never)(s))

    def _submit_ahead(self, s: int) -> Any:
        if not self._eligible(s):
            return None
        ref: Ref = self.sched.nodes[s]
        args = tuple([self._value(a) for a in ref.args])
        kwargs = {k: self._value(v) for k, v in ref.kwargs.items()} if ref.kwargs else None
        return self.backend.submit_ahead(s, ref.key, ref.task.spec.fn, args, kwargs,
                                         self._ancestors(s))

    def _ancestors(self, s: int) -> list[str]:
        """Dask keys of the unfinished tasks ``s`` waits for, directly or not."""
        seen: set[int] = set()
        stack = [d for d in self.sched.nodes[s].deps if d in self.inflight]
        keys = []
        while stack:
            d = stack.pop()
            if d in seen:
                continue
            seen.add(d)
            fut = self.inflight[d].future
            if fut is not None:
                keys.append(fut.key)
            stack.extend(p for p in self.sched.nodes[d].deps if p in self.inflight)
        return keys

    def _value(self, obj: Any) -> Any:
        """An argument as the engine will resolve it, with in-flight producers' results
        standing in for the values they will have."""
        t = type(obj)
        if t is Ref:
            got = self.inflight.get(obj.index)
            return got if got is not None else self.sched.results[obj.index]
        if t is list:
            return [self._value(x) for x in obj]
        if t is tuple:
            return tuple([self._value(x) for x in obj])
        if t is dict:
            return {k: self._value(v) for k, v in obj.items()}
        if t is set or t is frozenset:
            return t(self._value(x) for x in obj)
        return obj
