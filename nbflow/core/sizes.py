"""Sizes of values: cheap ones (no serialisation, no deep walk), and a result's ``output_bytes``.

``output_bytes`` (``run.tasks``, the events, the journal, ``nf.history``, the predicted sizes
that place Dask tasks and plan runs) is one measure everywhere: **the result's size in
memory, as Dask's** ``sizeof`` **counts it**.  That is the figure Dask itself uses when it
moves a result between workers (its transfer logs, so the locality report's moved bytes),
holds or spills it, and the figure nbflow's placement weighs.  A serialised size (a pickle,
a stored blob) is another measure: ``list(range(10))`` is stored in 73 B, and Dask counts
416 B.

* :func:`dask_size` is that measure, taken with Dask's own function: every result of a Dask
  task (on its worker), every item of a batched chunk, and a cache hit of a Dask task.
* :func:`output_size` is the in-memory size where it is cheap to know without importing
  Dask (threads, processes, coroutines: nothing there moves between workers, and a run
  that does not use Dask never loads it): Dask's own figure for numbers, strings and None
  (``sys.getsizeof``, which is what Dask's ``sizeof`` falls back to), bytes (their length)
  and NumPy arrays (``nbytes``); the shallow memory of pandas objects, which Dask's exceeds
  by the objects' contents and overhead; None otherwise (a list, a dict, an object: Dask
  walks them).  Never a serialised size.
"""

from __future__ import annotations

import sys
from typing import Any


def cheap_size(value: Any) -> int | None:
    """Size in bytes of a value when it is cheap to know, else None."""
    if value is None:
        return 0
    t = type(value)
    if t is bytes or t is bytearray or t is memoryview:
        return len(value)
    if t is str:
        return len(value)  # characters; exact for ASCII, which is what matters for tables
    mod = t.__module__
    if mod.startswith("numpy"):
        n = getattr(value, "nbytes", None)
        return int(n) if n is not None else None
    if mod.startswith("pandas"):
        usage = getattr(value, "memory_usage", None)
        if usage is None:
            return None
        try:
            total = usage(index=True, deep=False)
        except TypeError:
            return None
        return int(total.sum()) if hasattr(total, "sum") else int(total)
    return None


# Types whose size Dask's sizeof takes from sys.getsizeof (it registers nothing for them)
_GETSIZEOF = frozenset({int, float, bool, complex, str, type(None)})


def output_size(value: Any) -> int | None:
    """A result's ``output_bytes`` on a backend without Dask (see the module): its size in
    memory when that is cheap to know, else None (a run on threads or processes does not
    import Dask for it)."""
    if type(value) in _GETSIZEOF:
        return sys.getsizeof(value)
    return cheap_size(value)


def dask_size(value: Any) -> int | None:
    """A result's ``output_bytes`` as Dask measures it (``dask.sizeof``: what it counts
    when it moves or holds the value); None for a value Dask cannot size."""
    from dask.sizeof import sizeof  # (a Dask run has loaded it already)

    try:
        return int(sizeof(value))
    except Exception:  # (a broken __sizeof__ of a user's class: unknown, not a failed task)
        return None
