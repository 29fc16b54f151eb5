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
    PENDING: frozenset({READY, SKIPPED, CANCELLED, COMPLETED}),  # COMPLETED: fan-in nodes resolve at once
    READY: frozenset({RUNNING, CANCELLED, SKIPPED}),
    # RUNNING -> SKIPPED: an expanded map collecting its items, when one of them failed.
    RUNNING: frozenset({COMPLETED, FAILED, CANCELLED, RETRYING, SKIPPED}),
    RETRYING: frozenset({READY, CANCELLED}),
    COMPLETED: frozenset(),
    FAILED: frozenset(),
    CANCELLED: frozenset(),
    SKIPPED: frozenset(),
}

RUN_COMPLETED, RUN_FAILED, RUN_CANCELLED = COMPLETED, FAILED, CANCELLED
