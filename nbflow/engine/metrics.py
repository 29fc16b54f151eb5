"""Per-attempt task metrics: CPU time, peak memory and simple input features.

What is recorded for every attempt that runs task code (cheap things only):

- ``cpu_s``: CPU seconds the task's own code used. (Items of a batched map: their share of
  their chunk's CPU time, by wall time; see :meth:`TaskMetrics.record_chunk`.) Thread
  tasks: ``time.thread_time`` around the call in the worker thread (for a function whose
  calls keep using under 1 ms of CPU, only one call in 16 is measured: reading the clock
  would cost more than the call). Process tasks: ``time.process_time`` around the call in
  the worker process; Dask tasks: ``time.thread_time`` around the call in the worker's
  thread, noted in Dask's record of the task (the Dask backend's ``_note_metrics``).
  Coroutines share the loop's thread with everything else, so
  no CPU time can be attributed to one of them: ``None``.
- ``peak_rss``: the worker process's peak resident set size in bytes after the call
  (``resource.getrusage``; process and Dask tasks only).  It is the peak of that worker
  so far, an upper bound for the task.
- input features, from the arguments as the task receives them: ``input_bytes`` (sum of
  the sizes that are cheap to know: arrays' ``nbytes``, DataFrames' shallow memory,
  bytes and strings, files named by a path), ``input_items`` (sum of the lengths of list,
  tuple, dict and set arguments) and ``input_shape`` (the shape of the largest array or
  DataFrame argument, e.g. ``"1000x8"``).

:class:`TaskMetrics` keeps them by node index for one run; the scheduler calls
:meth:`TaskMetrics.wrap` before an attempt and :meth:`TaskMetrics.unwrap` on its value.
For thread tasks the wrapper writes the CPU time straight into the table (the worker
thread finishes writing before the awaiting coroutine resumes); a process or Dask worker
sends it back with the value in a :class:`Measured` envelope, which ``unwrap`` opens.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["Measured", "TaskMetrics", "input_features"]

try:  # resource is POSIX only
    import resource

    # ru_maxrss is in KiB on Linux and in bytes on macOS.
    _RSS_UNIT = 1 if sys.platform == "darwin" else 1024
except ImportError:  # pragma: no cover - Windows
    resource = None  # type: ignore[assignment]
    _RSS_UNIT = 1

_COLLECTIONS = (list, tuple, dict, set, frozenset)
# Reading a thread's CPU clock is a system call (no vDSO shortcut): ~0.2 µs on bare metal,
# up to ~10 µs in some VMs, which would dominate sub-millisecond thread tasks.  After
# TINY_STREAK consecutive calls of a function used less than TINY_CPU_S of CPU each, only
# one call in TINY_SAMPLE of it is measured (the others have cpu_s None).
TINY_CPU_S = 0.001
TINY_STREAK = 8
TINY_SAMPLE = 16


def _peak_rss() -> int | None:
    if resource is None:  # pragma: no cover - Windows
        return None
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * _RSS_UNIT


class Measured:
    """A task's value with the metrics its worker process measured (process/Dask)."""

    __slots__ = ("cpu_s", "measured_value", "peak_rss")

    def __init__(self, value: Any, cpu_s: float, peak_rss: int | None) -> None:
        self.measured_value = value
        self.cpu_s = cpu_s
        self.peak_rss = peak_rss

    def __reduce__(self) -> tuple[Any, ...]:
        return (Measured, (self.measured_value, self.cpu_s, self.peak_rss))


class _InProcess:
    """Wraps a thread task: CPU time of the calling thread, written into the table."""

    __slots__ = ("cpu", "fn", "index", "tiny")

    def __init__(self, fn: Callable[..., Any], cpu: dict[int, float], index: int,
                 tiny: dict[Any, int]) -> None:
        self.fn, self.cpu, self.index, self.tiny = fn, cpu, index, tiny

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        t0 = time.thread_time()
        try:
            return self.fn(*args, **kwargs)
        finally:
            used = time.thread_time() - t0
            self.cpu[self.index] = used
            # Count consecutive tiny calls of this function (see TaskMetrics.wrap).
            self.tiny[self.fn] = self.tiny.get(self.fn, 0) + 1 if used < TINY_CPU_S else 0


class _Remote:
    """Wraps a process or Dask task: measured in the worker, sent back in :class:`Measured`."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn

    def __call__(self, *args: Any, **kwargs: Any) -> Measured:
        t0 = time.process_time()
        value = self.fn(*args, **kwargs)
        return Measured(value, time.process_time() - t0, _peak_rss())


# What an argument's type contributes, decided once per type (the hot path is a dict hit).
_SKIP, _LEN, _NUMPY, _PANDAS, _PATH, _ITEMS = range(6)
_KIND: dict[type, int] = {t: _SKIP for t in (int, float, bool, complex, type(None))}
_KIND.update({bytes: _LEN, bytearray: _LEN, str: _LEN})
_KIND.update({t: _ITEMS for t in _COLLECTIONS})


def _kind(t: type) -> int:
    k = _KIND.get(t)
    if k is None:
        mod = t.__module__
        if mod.startswith("numpy"):
            k = _NUMPY
        elif mod.startswith("pandas"):
            k = _PANDAS
        elif issubclass(t, os.PathLike) or t.__name__ == "File":
            k = _PATH
        elif issubclass(t, _COLLECTIONS):
            k = _ITEMS
        else:
            k = _SKIP
        _KIND[t] = k
    return k


def _size_and_shape(a: Any, k: int) -> tuple[int | None, tuple[int, ...] | None]:
    if k == _LEN:
        return len(a), None
    if k == _NUMPY:
        shape = getattr(a, "shape", None)
        n = getattr(a, "nbytes", None)
        return (int(n) if n is not None else None), (tuple(shape) if shape is not None else None)
    if k == _PANDAS:
        shape = getattr(a, "shape", None)
        usage = getattr(a, "memory_usage", None)
        size = None
        if usage is not None:
            try:
                total = usage(index=True, deep=False)
                size = int(total.sum()) if hasattr(total, "sum") else int(total)
            except TypeError:
                size = None
        return size, (tuple(shape) if shape is not None else None)
    path = a if isinstance(a, os.PathLike) else getattr(a, "path", None)
    try:
        return os.stat(path).st_size, None  # type: ignore[arg-type]  # (a TypeError is caught)
    except (OSError, TypeError, ValueError):
        return None, None


def input_features(
    args: tuple[Any, ...], kwargs: dict[str, Any] | None
) -> tuple[int | None, int | None, str | None]:
    """``(input_bytes, input_items, input_shape)`` of a call's arguments (see module doc)."""
    nbytes = 0
    known = False
    items = None
    best: tuple[int, ...] | None = None
    best_n = -1
    values = args if not kwargs else (*args, *kwargs.values())
    kind = _KIND.get
    for a in values:
        k = kind(type(a))
        if k is None:
            k = _kind(type(a))
        if k == _SKIP:
            continue
        if k == _ITEMS:
            items = (items or 0) + len(a)
            continue
        size, shape = _size_and_shape(a, k)
        if size is not None:
            nbytes += size
            known = True
        if shape is not None:
            n = 1
            for d in shape:
                n *= int(d)
            if n > best_n:
                best, best_n = shape, n
    if not known and items is None and best is None:
        return None, None, None
    shape_text = "x".join(str(int(d)) for d in best) if best is not None else None
    return (nbytes if known else None), items, shape_text


class TaskMetrics:
    """The metrics of one run, by node index (the latest attempt of each node)."""

    __slots__ = ("_calls", "_seen", "_tiny", "cpu_s", "input_bytes", "input_items", "input_shape",
                 "peak_rss")

    def __init__(self) -> None:
        self._tiny: dict[Any, int] = {}  # function -> consecutive calls under TINY_CPU_S
        self._calls = 0
        self._seen: set[int] = set()  # nodes with input features or a worker's envelope
        self.cpu_s: dict[int, float] = {}
        self.peak_rss: dict[int, int | None] = {}
        self.input_bytes: dict[int, int | None] = {}
        self.input_items: dict[int, int | None] = {}
        self.input_shape: dict[int, str | None] = {}

    def wrap(
        self, i: int, fn: Callable[..., Any], executor: str | None,
        args: tuple[Any, ...], kwargs: dict[str, Any] | None,
    ) -> Callable[..., Any]:
        """Record ``i``'s input features; return ``fn`` wrapped to measure its CPU time."""
        # The hot path (no-op-sized tasks whose arguments are numbers) is a few dict hits:
        # the type check of each argument is inlined rather than a call per task.
        if kwargs:
            self._record(i, args, kwargs)
        elif args:
            kind = _KIND.get
            for a in args:
                if kind(type(a)) != _SKIP:
                    self._record(i, args, kwargs)
                    break
        if executor == "async":
            return fn  # coroutines: no CPU time of their own (see module doc)
        if executor == "thread":
            if self._tiny.get(fn, 0) >= TINY_STREAK:
                self._calls += 1
                if self._calls % TINY_SAMPLE:
                    return fn  # a tiny function: measured one call in TINY_SAMPLE
            return _InProcess(fn, self.cpu_s, i, self._tiny)
        if executor == "process" or executor == "dask":
            return _Remote(fn)
        return fn

    def _record(self, i: int, args: tuple[Any, ...], kwargs: dict[str, Any] | None) -> None:
        b, n, s = input_features(args, kwargs)
        self._seen.add(i)
        if b is not None:
            self.input_bytes[i] = b
        if n is not None:
            self.input_items[i] = n
        if s is not None:
            self.input_shape[i] = s

    def record_chunk(self, items: Sequence[int],
                     calls: Sequence[tuple[tuple[Any, ...], dict[str, Any] | None]],
                     seconds: Sequence[float], cpu_s: float | None, peak_rss: int | None) -> None:
        """Metrics of the items of one batched chunk (:mod:`nbflow.engine.batching`).

        Each item gets the input features of its own arguments; its CPU time is its share of
        the chunk's ``cpu_s``, in proportion to its wall ``seconds`` (equal shares when the
        clock saw none), so the shares add up to the chunk's; ``peak_rss`` (the worker's peak
        after the chunk) goes to every item, an upper bound as for a single task.
        """
        kind = _KIND.get
        for i, (args, kwargs) in zip(items, calls, strict=True):
            if kwargs:
                self._record(i, args, kwargs)
            elif args:
                for a in args:
                    if kind(type(a)) != _SKIP:
                        self._record(i, args, kwargs)
                        break
        if cpu_s is not None and items:
            cpu = self.cpu_s
            total = sum(seconds)
            if total > 0:
                scale = cpu_s / total
                for i, sec in zip(items, seconds, strict=True):
                    cpu[i] = sec * scale
            else:
                each = cpu_s / len(items)
                for i in items:
                    cpu[i] = each
        if peak_rss is not None:
            peaks = self.peak_rss
            for i in items:
                peaks[i] = peak_rss
            self._seen.update(items)

    def note(self, i: int, cpu_s: float, peak_rss: int | None) -> None:
        """Keep what a worker measured of ``i``'s call when no envelope brought it (a Dask
        result left on its worker: see ``Remote.worker_metrics``)."""
        self.cpu_s[i] = cpu_s
        self.peak_rss[i] = peak_rss
        self._seen.add(i)

    def unwrap(self, i: int, value: Any) -> Any:
        """Open a :class:`Measured` envelope (process/Dask), keeping its metrics."""
        if type(value) is Measured:
            self.cpu_s[i] = value.cpu_s
            self.peak_rss[i] = value.peak_rss
            self._seen.add(i)
            return value.measured_value
        return value

    def row(self, i: int) -> tuple[Any, ...] | None:
        """``(cpu_s, peak_rss, input_bytes, input_items, input_shape)`` of node ``i``'s latest
        attempt (what its events carry), or None when nothing was measured."""
        # Called for every finished task: two membership tests first, because most tasks of
        # a large run (coroutines with plain arguments) have nothing measured at all.  (The
        # thread wrapper writes cpu_s itself, so that table is asked directly.)
        if i not in self._seen:  # (most common with a figure: a thread task's CPU time only)
            cpu = self.cpu_s.get(i)
            return None if cpu is None else (cpu, None, None, None, None)
        row = (self.cpu_s.get(i), self.peak_rss.get(i), self.input_bytes.get(i),
               self.input_items.get(i), self.input_shape.get(i))
        return row if any(v is not None for v in row) else None

    def rows(self, items: Sequence[int]) -> list[tuple[Any, ...] | None]:
        """:meth:`row` of each of ``items`` (a batched chunk's: most have a CPU share only)."""
        if not self._seen.isdisjoint(items):
            return [self.row(i) for i in items]
        return [None if c is None else (c, None, None, None, None) for c in map(self.cpu_s.get, items)]

    def columns(self, n: int) -> dict[str, list[Any]]:
        """``run.tasks`` columns for nodes ``0..n-1``."""
        return {
            "cpu_s": [self.cpu_s.get(i) for i in range(n)],
            "peak_rss": [self.peak_rss.get(i) for i in range(n)],
            "input_bytes": [self.input_bytes.get(i) for i in range(n)],
            "input_items": [self.input_items.get(i) for i in range(n)],
            "input_shape": [self.input_shape.get(i) for i in range(n)],
        }
