"""What a task prints, kept with the task (``run.logs(key)``), and still shown where it was.

While a task's code runs on the run's threads or its event loop, what it writes to
``sys.stdout`` / ``sys.stderr`` is copied into a per-task buffer (the first
:data:`LIMIT` characters; the rest is dropped and the text says so) and forwarded to the
original stream with every line prefixed by the task key (``[clean-0] ...``), so a cell's
output still shows it, attributed.  The buffer travels on the task's ``TaskCompleted`` /
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
from collections.abc import Callable
from typing import Any

LIMIT = 64 * 1024  # characters kept per task attempt

_current: contextvars.ContextVar[Capture | None] = contextvars.ContextVar("nbflow_task_output",
                                                                          default=None)
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
        cap = _current.get()
        if cap is None or not isinstance(text, str):
            return int(self._inner.write(text) or 0)
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


def start(key: str) -> tuple[Capture, contextvars.Token[Capture | None]]:
    """Capture what the current context writes as task ``key`` (a coroutine task)."""
    cap = Capture(key)
    return cap, _current.set(cap)


def stop(token: contextvars.Token[Capture | None]) -> None:
    _current.reset(token)


def capturing(fn: Callable[..., Any], cap: Capture) -> Callable[..., Any]:
    """``fn`` wrapped to capture its output into ``cap`` in the thread that runs it."""

    def run(*args: Any, **kwargs: Any) -> Any:
        token = _current.set(cap)
        try:
            return fn(*args, **kwargs)
        finally:
            _current.reset(token)

    run.__wrapped__ = fn  # type: ignore[attr-defined]
    return run
