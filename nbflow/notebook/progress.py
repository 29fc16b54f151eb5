"""Headless progress: compact text lines for papermill, nbclient and terminal IPython.

A run prints a bounded number of lines, never one per task: a start line, one line each
time the share of finished tasks passes another tenth (at most 9, however many tasks),
a heartbeat line when nothing else was printed for ``heartbeat`` seconds (each of these with
the run's ETA once there is history to estimate it from), the first few
failures and retries as they happen, and a final line.  The summary table is displayed by
the caller once the run ends.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

from .model import RunModel
from .render import progress_text
from .tracebacks import short_error

PREFIX = "[nbflow]"


class TextProgress:
    """Prints the progress of a run described by ``model``; call :meth:`tick` periodically."""

    def __init__(self, model: RunModel, out: TextIO | None = None, *, heartbeat: float = 30.0,
                 max_notes: int = 3, eta: Callable[[], str | None] | None = None) -> None:
        self.model = model
        self.eta = eta  # the run's ETA as text, or None when unknown (nbflow.predict.eta)
        self.out = out
        self.heartbeat = heartbeat
        self.max_notes = max_notes
        self.lines = 0
        self._decile = 0
        self._last_line = time.monotonic()
        self._last_version = -1
        self._failures_seen: set[int] = set()
        self._retries_seen: set[int] = set()
        self._notes = {"failures": 0, "retries": 0}

    def _print(self, text: str) -> None:
        out = self.out or sys.stdout
        print(text, file=out, flush=True)
        self.lines += 1
        self._last_line = time.monotonic()

    def line(self, text: str) -> None:
        """Print one line of the caller's (a note about the view itself)."""
        self._print(text)

    def start(self, extra: str = "") -> None:
        m = self.model
        self._print(f"{PREFIX} {m.name}: running {len(m)} tasks{extra}")

    def _note(self, kind: str, text: str) -> None:
        n = self._notes[kind]
        if n < self.max_notes:
            self._print(text)
        elif n == self.max_notes:
            self._print(f"{PREFIX}   (further {kind} are counted in the summary)")
        self._notes[kind] = n + 1

    def tick(self) -> int:
        """Print what is due now; returns the number of lines printed."""
        before = self.lines
        m = self.model
        # (copies: the run's thread adds to these dicts; dict.copy is one C call, where
        # building a list from a live view allocates a tuple per item, and an allocation
        # may run the garbage collector and Python finalizers, so the run's thread with them)
        for i, err in m.errors.copy().items():
            if i not in self._failures_seen:
                self._failures_seen.add(i)
                self._note("failures", f"{PREFIX}   ✗ {m.keys[i]} failed: {short_error(err)}")
        for i, err in m.retry_errors.copy().items():
            if i not in self._retries_seen:
                self._retries_seen.add(i)
                self._note("retries", f"{PREFIX}   ↻ {m.keys[i]} will retry: {short_error(err)}")
        total = len(m) or 1
        decile = min(9, m.done * 10 // total)
        now = time.monotonic()
        if decile > self._decile and m.done < len(m):
            self._decile = decile
            self._print(f"{PREFIX} {decile * 10:3d}% {progress_text(m)}{self._eta_suffix()}")
        elif now - self._last_line >= self.heartbeat and m.version != self._last_version:
            # a long task between two tenths is when an ETA is most wanted
            self._print(f"{PREFIX}      {progress_text(m)}{self._eta_suffix()}")
        self._last_version = m.version
        return self.lines - before

    def _eta_suffix(self) -> str:
        if self.eta is None:
            return ""
        try:
            text = self.eta()
        except Exception:  # an estimate must never break the progress display
            self.eta = None
            return ""
        return f", {text}" if text else ""

    def final(self) -> None:
        self.tick()
        m = self.model
        self._print(f"{PREFIX} {m.status}: {progress_text(m)}")
