"""What one process task sends to its worker and gets back, and what that moved.

A call is sent as *parts*, each pickled on its own with protocol 5: part 0 holds the
arguments, and every argument that is the result of another task of the run (an input
edge) is a part of its own, referred to from part 0 by a persistent id.  So the bytes of
each edge are known exactly, without pickling anything twice, and a value passed twice
(or by two producers that returned the same object) is sent once.  The function travels
by value (cloudpickle) beside the parts and is not counted as data.

With a :class:`~.shm.Packer` the large buffers of every part go to shared memory (see
:mod:`.shm`); without one (``transfer="pipe"``) everything goes through the pipe as
plain pickles, which is how the baseline is measured.
"""

from __future__ import annotations

import io
import os
import pickle
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import cloudpickle

from ...core.errors import PicklingError
from . import shm

Part = tuple[bytes, list[shm.Place]]
# Values never sent as parts of their own: small immutable objects the interpreter shares
# (a literal 0 in the arguments is the same object as a producer's 0).
_ATOMS = (type(None), bool, int, float, complex, str, bytes, range)


def describe(value: Any) -> str:
    t = type(value)
    return f"{t.__module__}.{t.__qualname__}" if t.__module__ != "builtins" else t.__qualname__


class _Splitter(cloudpickle.Pickler):  # type: ignore[misc]
    """Pickles the arguments, replacing producers' values by their part number."""

    def __init__(self, file: Any, part_of: dict[int, int], **kw: Any) -> None:
        super().__init__(file, **kw)
        self.part_of = part_of
        self.used: set[int] = set()

    def persistent_id(self, obj: Any) -> int | None:  # (pickle calls it for every object)
        k = self.part_of.get(id(obj))
        if k is not None:
            self.used.add(k)
        return k


class _Joiner(pickle.Unpickler):
    def __init__(self, file: Any, values: dict[int, Any], **kw: Any) -> None:
        super().__init__(file, **kw)
        self.values = values

    def persistent_load(self, pid: Any) -> Any:  # (for each id persistent_id gave)
        return self.values[pid]


def eligible(value: Any) -> bool:
    """Is a producer's value sent as a part of its own (identity can name its producer)?"""
    if isinstance(value, _ATOMS):
        return False
    try:
        return len(value) > 0  # () and frozenset() are shared singletons too
    except TypeError:
        return True


@dataclass
class Outgoing:
    """A call ready to send, and what its parts weigh."""

    message: tuple[Any, ...]
    producers: list[str | None] = field(default_factory=list)  # per part (None: part 0)
    nbytes: list[int] = field(default_factory=list)  # per part: in band + out of band
    seconds: list[float] = field(default_factory=list)  # per part: pickling time
    literal_args: bool = True  # does part 0 carry anything but references to parts?
    pipe_bytes: int = 0


def build(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any] | None,
          inputs: Sequence[tuple[str, Any]], packer: shm.Packer | None, prefix: str | None,
          threshold: int | None) -> Outgoing:
    """Pickle a call; ``inputs`` are ``(producer key, value)`` of the task's input edges."""
    fn_bytes = cloudpickle.dumps(fn)
    part_of: dict[int, int] = {}
    candidates: list[tuple[str, Any]] = [("", None)]
    for producer, value in inputs:
        if eligible(value) and id(value) not in part_of:
            part_of[id(value)] = len(candidates)
            candidates.append((producer, value))
    splitter: _Splitter | None = None

    def dump_args(obj: Any, protocol: int, buffer_callback: Any = None) -> bytes:
        nonlocal splitter
        f = io.BytesIO()
        splitter = _Splitter(f, part_of, protocol=protocol, buffer_callback=buffer_callback)
        splitter.dump(obj)
        return f.getvalue()

    # (without inputs to look for, the plain pickler: no Python call per object)
    data, places, secs = shm.dumps((args, kwargs), dump_args if part_of else cloudpickle.dumps,
                                   packer)
    used = sorted(splitter.used) if splitter is not None else []
    parts: dict[int, Part] = {0: (data, places)}
    out = Outgoing((), [None], [len(data) + sum(n for _, _, n in places)], [secs])
    for k in used:
        producer, value = candidates[k]
        d, p, s = shm.dumps(value, cloudpickle.dumps, packer)
        parts[k] = (d, p)
        out.producers.append(producer)
        out.nbytes.append(len(d) + sum(n for _, _, n in p))
        out.seconds.append(s)
    top = list(args) + list((kwargs or {}).values())
    out.literal_args = any(part_of.get(id(a)) is None for a in top)
    out.message = (prefix, threshold, fn_bytes, [(k, parts[k]) for k in [0, *used]])
    out.pipe_bytes = len(fn_bytes) + sum(len(d) for d, _ in parts.values())
    return out


def run_call(message: tuple[Any, ...]) -> tuple[Any, ...]:
    """Worker side: load the parts, run the function, send the result back.

    Returns ``(pid, result pickle, its out-of-band places, seconds loading each part,
    seconds pickling the result, bytes written to shared memory)``."""
    prefix, threshold, fn_bytes, parts = message
    fn = pickle.loads(fn_bytes)
    maps: dict[str, memoryview] = {}
    values: dict[int, Any] = {}
    load_seconds: dict[int, float] = {}
    for k, (data, places) in parts:
        if k == 0:
            continue
        t0 = time.perf_counter()
        values[k] = pickle.loads(data, buffers=shm.open_views(places, private=True, maps=maps))
        load_seconds[k] = time.perf_counter() - t0
    t0 = time.perf_counter()
    data, places = parts[0][1]
    args, kwargs = _Joiner(io.BytesIO(data), values,
                           buffers=shm.open_views(places, private=True, maps=maps)).load()
    load_seconds[0] = time.perf_counter() - t0
    maps.clear()
    values.clear()  # (the arguments hold what they need)
    value = fn(*args, **kwargs) if kwargs else fn(*args)
    del args, kwargs
    packer = shm.Packer(prefix, threshold) if prefix is not None and threshold is not None else None
    try:
        out, oob, secs = shm.dumps(value, cloudpickle.dumps, packer)
    except Exception as e:
        if packer is not None:
            packer.writer.discard()
        value = getattr(value, "measured_value", value)  # name the task's own result type
        raise PicklingError(
            f"its result of type {describe(value)} cannot be pickled to send it back from the "
            f"worker process ({type(e).__name__}: {e})"
        ) from None
    finally:
        if packer is not None:
            packer.writer.close()
    return (os.getpid(), out, oob, load_seconds, secs, packer.copied if packer is not None else 0)


def receive(data: bytes, places: list[shm.Place], registry: shm.Registry | None) -> Any:
    """The run's process side of a result: rebuilt over its (shared) segment."""
    if not places:
        return pickle.loads(data)

    def on_map(m: Any, name: str) -> None:
        if registry is not None:
            shm.register_mapping(registry, m, name)

    return pickle.loads(data, buffers=shm.open_views(places, private=False, on_map=on_map))
