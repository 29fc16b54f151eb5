"""What a task prints, kept with the task (``run.logs(key)``), and still shown where it was.

While a task's code runs on the run's threads or its event loop, what it writes to
``sys.stdout`` / ``sys.stderr`` is copied into a per-task buffer (the first
:data:`LIMIT` characters; the rest is dropped and the text says so) and forwarded to the
original stream with every line prefixed by the task key (``[clean-0] ...``), so a cell's
output still shows it, attributed.  The buffer is made on the task's first write: a task
that prints nothing costs one small tuple, not a buffer.  The buffer travels on the task's ``TaskCompleted`` /
``TaskFailed`` event (``output``), so the journal stores it with the attempt.

How it works: the process's ``sys.stdout`` and ``sys.stderr`` are wrapped once (when a run
starts) by a stream that looks up the task being run in a context variable; threads and
coroutines that run no task see the wrapper pass everything through unchanged.  Output of
process and Dask tasks goes to their worker processes and is not captured; neither is
logging through a handler created before the wrapper (it holds the original stream).
"""

from __future__ import annotations

import contextvars
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

LIMIT = 64 * 1024  # characters kept per task attempt

# Where the task running in this context writes: (the run's outputs, node, key).  Only a
# tuple per attempt; its Capture (a buffer) is made on the first write, so the many tasks
# that print nothing cost no buffer at all.
_current: contextvars.ContextVar[tuple[dict[int, Capture], int, str] | ChunkCursor | None] = \
    contextvars.ContextVar("nbflow_task_output", default=None)
_lock = threading.Lock()


class Capture:
    """The output of one task attempt."""

    __slots__ = ("at_line_start", "key", "parts", "size", "truncated")

    def __init__(self, key: str) -> None:
        self.key = key
        self.parts: list[str] = []
        self.size = 0
        self.truncated = False
        self.at_line_start = True

    def add(self, text: str) -> None:
        room = LIMIT - self.size
        if room <= 0:
            self.truncated = True
            return
        if len(text) > room:
            text, self.truncated = text[:room], True
        self.parts.append(text)
        self.size += len(text)

    def text(self) -> str | None:
        if not self.parts:
            return None
        out = "".join(self.parts)
        if self.truncated:
            out += f"\n[nbflow: output truncated after {LIMIT} characters]"
        return out

    def prefixed(self, text: str) -> str:
        """``text`` with ``[key] `` at the start of each line (for the original stream)."""
        out = []
        for piece in text.splitlines(keepends=True):
            if self.at_line_start:
                out.append(f"[{self.key}] ")
            out.append(piece)
            self.at_line_start = piece.endswith("\n")
        return "".join(out)


class TaskStream:
    """A stream that copies what tasks write into their :class:`Capture` (see module)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def write(self, text: str) -> int:
        where = _current.get()
        if where is None or not isinstance(text, str):
            return int(self._inner.write(text) or 0)
        cap = _capture_of(where)
        cap.add(text)
        self._inner.write(cap.prefixed(text))
        return len(text)

    def __getattr__(self, name: str) -> Any:  # flush, fileno, encoding, isatty, ...
        return getattr(self._inner, name)


def install() -> None:
    """Wrap ``sys.stdout`` and ``sys.stderr`` (once; again if something replaced them)."""
    with _lock:
        if not isinstance(sys.stdout, TaskStream):
            sys.stdout = TaskStream(sys.stdout)
        if not isinstance(sys.stderr, TaskStream):
            sys.stderr = TaskStream(sys.stderr)


def start(outputs: dict[int, Capture], i: int, key: str) -> contextvars.Token[Any]:
    """Capture what the current context writes as task ``key`` (node ``i``, a coroutine
    task) into ``outputs[i]``, which is created only when the task first writes."""
    return _current.set((outputs, i, key))


class ChunkCursor:
    """Where the items of one batched chunk write (:mod:`nbflow.engine.batching`): the
    context variable is set once per chunk to this cursor, and the chunk moves ``k`` to
    the item it runs, instead of setting and resetting the variable around every item."""

    __slots__ = ("k", "keys", "nodes", "outputs")

    def __init__(self, outputs: dict[int, Capture], nodes: Sequence[int], keys: Sequence[str]) -> None:
        self.outputs, self.nodes, self.keys = outputs, nodes, keys
        self.k = 0  # the item running now (its position in nodes/keys)


def start_chunk(cursor: ChunkCursor) -> contextvars.Token[Any]:
    """Capture what the current context writes as the item ``cursor`` points at."""
    return _current.set(cursor)


def stop(token: contextvars.Token[Any]) -> None:
    _current.reset(token)


def capturing(fn: Callable[..., Any], outputs: dict[int, Capture], i: int, key: str) -> Callable[..., Any]:
    """``fn`` wrapped to capture its output into ``outputs[i]`` (created on the first write)
    in the thread that runs it."""
    where = (outputs, i, key)

    def run(*args: Any, **kwargs: Any) -> Any:
        token = _current.set(where)
        try:
            return fn(*args, **kwargs)
        finally:
            _current.reset(token)

    run.__wrapped__ = fn  # type: ignore[attr-defined]
    return run


def _capture_of(where: tuple[dict[int, Capture], int, str] | ChunkCursor) -> Capture:
    """The Capture of the attempt writing now: made on its first write.  (setdefault: two
    threads of one task writing at once still share one.)"""
    if type(where) is ChunkCursor:
        outputs, i, key = where.outputs, where.nodes[where.k], where.keys[where.k]
    else:
        outputs, i, key = where  # type: ignore[misc]
    cap = outputs.get(i)
    if cap is None:
        cap = outputs.setdefault(i, Capture(key))
    return cap
