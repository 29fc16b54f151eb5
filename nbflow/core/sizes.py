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
  by the objects' contents and overhead; lists, tuples, sets and dicts by Dask's own rule
  for them (:func:`collection_size`); None otherwise (an object of another kind).  Never a
  serialised size.

**Collections, as Dask counts them, without Dask.**  Dask's ``sizeof`` of a list, tuple or
set is the container's ``sys.getsizeof`` plus its items' sizes, and for more than ten
items ten of them, scaled to the length; a dict's is its own ``sys.getsizeof`` plus those
of the list of its keys and the list of its values, less two empty lists.  The same rule
is applied here to the same leaves (an item of another kind counts its ``sys.getsizeof``,
Dask's default), so a list of numbers or of arrays gets Dask's figure; two differences,
both deliberate: the ten items are taken evenly spaced rather than at random (the figure
of one value is the same in every run, which the history that predicts sizes wants), and
a pandas object inside counts its shallow memory, as one returned alone does.  Dask's own
function is not imported for it: its import takes ~0.1 s of CPU (``benchmarks/RESULTS.md``,
Session 14 (C)), paid by the first thread run with a list result.  A collection so deeply
nested that measuring it would visit more than :data:`MAX_VISITS` values (the sampling
bounds each level, not the depth), or one that holds itself, is None: unknown rather
than slow.
"""

from __future__ import annotations

import struct
import sys
from itertools import islice
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
    if isinstance(value, _COLLECTIONS):
        return collection_size(value)
    return cheap_size(value)


# What Dask's sizeof measures item by item (by the type's MRO: a subclass too)
_COLLECTIONS = (list, tuple, set, frozenset, dict)
SAMPLES = 10  # items measured of a longer collection, scaled to its length (as Dask does)
MAX_VISITS = 10_000  # values measured for one result at most (see the module)
_EMPTY_LIST = sys.getsizeof([])
_POINTER = struct.calcsize("P")  # (a list's slot per item)


class _TooMany(Exception):
    """Measuring would visit more than MAX_VISITS values."""


def collection_size(value: list[Any] | tuple[Any, ...] | set[Any] | frozenset[Any] | dict[Any, Any]
                    ) -> int | None:
    """Dask's ``sizeof`` of a list, tuple, set or dict, by its rule, without Dask (see the
    module); None when it is too deeply nested to measure cheaply, or holds itself."""
    try:
        return _collection(value, [MAX_VISITS])
    except (_TooMany, RecursionError):
        return None
    except Exception:  # (an item's broken __sizeof__ or __len__: unknown, not a failed task)
        return None


def _collection(c: Any, budget: list[int]) -> int:
    n = len(c)
    budget[0] -= min(n, SAMPLES)
    if budget[0] < 0:
        raise _TooMany
    if isinstance(c, dict):
        if n <= SAMPLES:
            return (sys.getsizeof(c) + _collection(list(c), budget) + _collection(list(c.values()), budget)
                    - 2 * _EMPTY_LIST)
        # Dask's rule over list(c) and list(c.values()) (a pointer per item each, beyond the
        # two empty lists it takes off again), without making those lists or walking the
        # dict: its first keys and values, as Dask samples a set's first items
        keys = sum(_item(k, budget) for k in islice(c, SAMPLES))
        values = sum(_item(v, budget) for v in islice(c.values(), SAMPLES))
        return sys.getsizeof(c) + 2 * _POINTER * n + int(n / SAMPLES * (keys + values))
    if n <= SAMPLES:
        return sys.getsizeof(c) + sum(_item(x, budget) for x in c)
    if isinstance(c, (set, frozenset)):
        items: Any = islice(c, SAMPLES)  # (unordered: the first ones, as Dask takes)
    else:  # evenly spaced, where Dask picks at random: the same figure every time
        items = [c[k * n // SAMPLES] for k in range(SAMPLES)]
    return sys.getsizeof(c) + int(n / SAMPLES * sum(_item(x, budget) for x in items))


def _item(x: Any, budget: list[int]) -> int:
    """An item's size inside a collection: as :func:`output_size`, and for any other kind of
    value its ``sys.getsizeof`` (Dask's default, which it takes for objects it has no
    rule for)."""
    t = type(x)
    if t in _GETSIZEOF:
        return sys.getsizeof(x)
    if isinstance(x, _COLLECTIONS):
        return _collection(x, budget)
    if t.__module__.startswith("numpy") and t.__name__ != "ndarray":
        return sys.getsizeof(x)  # (a NumPy scalar: Dask registers only the array)
    size = cheap_size(x)
    return size if size is not None else sys.getsizeof(x)


def dask_size(value: Any) -> int | None:
    """A result's ``output_bytes`` as Dask measures it (``dask.sizeof``: what it counts
    when it moves or holds the value); None for a value Dask cannot size."""
    from dask.sizeof import sizeof  # (a Dask run has loaded it already)

    try:
        return int(sizeof(value))
    except Exception:  # (a broken __sizeof__ of a user's class: unknown, not a failed task)
        return None
