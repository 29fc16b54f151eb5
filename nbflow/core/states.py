"""Task states and the transitions between them.

``pending -> ready -> running -> completed | failed | cancelled``, ``running -> retrying ->
ready`` (the retry waits on a timer, then queues again), and ``skipped`` for a task that
will never run because something it needs failed or was skipped.  The engine's state machine
(:mod:`nbflow.engine.taskstate`) is the one place that changes a task's state; it refuses a
move not listed in :data:`TRANSITIONS` when checking is on (the tests run with it on), and
every event stream is replayed against the table in the tests.
"""

from __future__ import annotations

PENDING = "pending"
READY = "ready"
RUNNING = "running"
RETRYING = "retrying"
COMPLETED = "completed"
FAILED = "failed"
CANCELLED = "cancelled"
SKIPPED = "skipped"

ALL = (PENDING, READY, RUNNING, RETRYING, COMPLETED, FAILED, SKIPPED, CANCELLED)  # display order
TERMINAL = frozenset({COMPLETED, FAILED, CANCELLED, SKIPPED})

TRANSITIONS: dict[str, frozenset[str]] = {
    # Nodes the scheduler resolves itself (joins, branch gates, constants, loops) never
    # queue: they complete, fail (a gate whose condition has no truth value, a gather short
    # of inputs) or, for a loop, start its first iteration as soon as their inputs end.
    PENDING: frozenset({READY, SKIPPED, CANCELLED, COMPLETED, FAILED, RUNNING}),
    # READY -> FAILED: a map whose input turns out not to be a list fails before it expands.
    READY: frozenset({RUNNING, CANCELLED, SKIPPED, FAILED}),
    # RUNNING -> SKIPPED: an expanded map collecting its items, when one of them failed.
    RUNNING: frozenset({COMPLETED, FAILED, CANCELLED, RETRYING, SKIPPED}),
    # RETRYING -> SKIPPED: a saga rolled back while its member waited to retry.
    RETRYING: frozenset({READY, CANCELLED, SKIPPED}),
    COMPLETED: frozenset(),
    FAILED: frozenset(),
    CANCELLED: frozenset(),
    SKIPPED: frozenset(),
}

RUN_COMPLETED, RUN_FAILED, RUN_CANCELLED = COMPLETED, FAILED, CANCELLED
