"""Content hashes of values: what "the same input" means for the cache.

A cache key is built from the *content* of a task's inputs, not their identity, so that a
value recomputed upstream that comes out equal stops invalidation there (early cutoff).
Content must therefore hash the same in every process, which rules out ``hash()`` (string
hashing is salted per process) and plain pickled bytes for anything with a ``set`` inside
(its order follows that salt).  So common types get a canonical walk:

* ``None``, bools, ints, floats, complex, str, bytes: their type and exact value;
* tuples, lists and dicts: type, length and the hashes of their items, in order (dict
  insertion order is part of a dict's content; a function may iterate it);
* sets and frozensets: the *sorted* hashes of their items, so iteration order is irrelevant;

A container's hash is made from its items' *hashes* only (:func:`seq_digest`,
:func:`dict_digest`), never from their bytes, so the same hash can be built without the
items at hand: a map's list whose items are results left on Dask workers (each hashed
where it lives), a list of task results whose hashes the cache already knows, and the
same list as a plain value in this process all hash alike, on every backend.
* numpy arrays: dtype, shape and the raw bytes (object arrays walk their items);
* pandas objects: ``pd.util.hash_pandas_object`` (values and index) plus column names,
  dtypes and index names, which that function leaves out;
* functions (a task passed a helper): the code fingerprint of the function;
* anything else: the hash of its pickled bytes (cloudpickle, protocol 5).

A value that cannot be hashed at all raises :class:`Unhashable`; the cache then does not
cache the task that needed it and says why.

The digest function is xxHash's XXH3-128 when the ``xxhash`` package is installed (fast
enough to checksum every stored result on every read) and BLAKE2b-128 otherwise.  Digests
carry a one-letter prefix naming the algorithm, so a store written with one can be read
(and verified) only by the same algorithm and a mismatch is a clean cache miss.
"""

from __future__ import annotations

import hashlib
import math
import struct
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..core.errors import Unhashable
from ..core.files import ContentDigests, File
from ..core.ref import is_task
from ..core.remote import Remote

try:  # the fast path; see the module docstring
    import xxhash as _xxhash
except ImportError:  # pragma: no cover - depends on the install
    _xxhash = None  # type: ignore[assignment]



if _xxhash is not None:
    ALGO = "x"
    _new = _xxhash.xxh3_128

    def _digest_bytes(data: bytes | memoryview) -> str:
        return "x" + _xxhash.xxh3_128_hexdigest(data)
else:  # pragma: no cover - depends on the install
    ALGO = "b"

    def _new() -> Any:  # type: ignore[no-redef]
        return hashlib.blake2b(digest_size=16)

    def _digest_bytes(data: bytes | memoryview) -> str:
        return "b" + hashlib.blake2b(data, digest_size=16).hexdigest()


def digest(data: bytes | bytearray | memoryview) -> str:
    """The digest (hex with an algorithm prefix) of raw bytes."""
    return _digest_bytes(bytes(data) if type(data) is bytearray else data)  # type: ignore[arg-type]


def verify(data: bytes | memoryview, key: str) -> bool:
    """True if ``data`` hashes to ``key`` (False for a key of another algorithm)."""
    if key[:1] == ALGO:
        return _digest_bytes(data) == key
    if key[:1] == "b":
        return "b" + hashlib.blake2b(data, digest_size=16).hexdigest() == key
    return False


def combine(*parts: str | bytes) -> str:
    """One digest of several strings/bytes, unambiguous (each part is length-prefixed)."""
    h = _new()
    for p in parts:
        b = p.encode() if isinstance(p, str) else p
        h.update(struct.pack("<Q", len(b)))
        h.update(b)
    return ALGO + h.hexdigest()


# -- content hashes of values -------------------------------------------------------------

_pack_q = struct.Struct("<q").pack
_pack_d = struct.Struct("<d").pack
_CONTAINER_TAGS: dict[type, bytes] = {list: b"l", tuple: b"t", set: b"S", frozenset: b"Z", dict: b"d"}

if _xxhash is not None:
    _oneshot_raw = _xxhash.xxh3_128_digest
else:  # pragma: no cover - depends on the install
    def _oneshot_raw(data: bytes) -> bytes:
        return hashlib.blake2b(data, digest_size=16).digest()


def _int_bytes(v: int) -> bytes:
    if -(2**63) <= v < 2**63:
        return b"i" + _pack_q(v)
    b = str(v).encode()
    return b"I" + _pack_q(len(b)) + b


def _float_bytes(v: float) -> bytes:
    return b"f" + (_pack_d(v) if not math.isnan(v) else b"nan")


def _str_bytes(v: str) -> bytes:
    b = v.encode("utf-8", "surrogatepass")
    return b"s" + _pack_q(len(b)) + b


def _bytes_bytes(v: bytes | bytearray) -> bytes:
    return b"b" + _pack_q(len(v)) + bytes(v)


# The canonical bytes of plain scalars, by exact type (a subclass is pickled instead).
_SCALARS: dict[type, Callable[[Any], bytes]] = {
    int: _int_bytes,
    float: _float_bytes,
    str: _str_bytes,
    bool: lambda v: b"T" if v else b"F",
    type(None): lambda v: b"N",
    bytes: _bytes_bytes,
    bytearray: _bytes_bytes,
    complex: lambda v: b"c" + _pack_d(v.real) + _pack_d(v.imag),
}


def value_hash(value: Any, _depth: int = 0) -> str:
    """The content hash of ``value`` (see the module docstring); raises :class:`Unhashable`."""
    return ALGO + _raw(value, _depth).hex()


def _raw(v: Any, depth: int) -> bytes:
    """:func:`value_hash` as raw bytes (what a container's digest is made of)."""
    t = type(v)
    enc = _SCALARS.get(t)
    if enc is not None:  # (one call: the same digest as feeding the bytes to a hasher)
        return _oneshot_raw(enc(v))
    if t in _CONTAINER_TAGS:
        if depth > 200:
            raise Unhashable("nesting is too deep to hash")
        d = depth + 1
        items = v if t is not dict else [y for kv in v.items() for y in kv]
        scalars, one = _SCALARS.get, _oneshot_raw
        return _combine_raw(t, [one(enc(x)) if (enc := scalars(type(x))) is not None else _raw(x, d)
                                for x in items])
    h = _new()
    _feed_other(h, v, t)
    return h.digest()


def _combine_raw(t: type, raw: list[bytes]) -> bytes:
    """A container's digest from its items' raw digests (a dict's: key, value, key, ...)."""
    if t is set or t is frozenset:
        raw.sort()
    n = len(raw) // 2 if t is dict else len(raw)
    return _oneshot_raw(_CONTAINER_TAGS[t] + _pack_q(n) + b"".join(raw))  # (one length: no separators)


def seq_digest(t: type, parts: list[str]) -> str:
    """The content hash of a list, tuple, set or frozenset (``t``) whose items have the
    content hashes ``parts`` (in order; a set's are sorted here).  ``value_hash`` of such a
    container gives the same, so a container can be hashed without its items at hand."""
    return ALGO + _combine_raw(t, [bytes.fromhex(p[1:]) for p in parts]).hex()


def dict_digest(pairs: list[tuple[str, str]]) -> str:
    """The content hash of a dict whose keys and values have the content hashes ``pairs``
    (in insertion order), as :func:`seq_digest` is for sequences."""
    return ALGO + _combine_raw(dict, [bytes.fromhex(p[1:]) for kv in pairs for p in kv]).hex()


def _feed(h: Any, v: Any, depth: int) -> None:
    """Feed ``v`` (a value inside a numpy or pandas object) to the hasher ``h``."""
    t = type(v)
    enc = _SCALARS.get(t)
    if enc is not None:
        h.update(enc(v))
    elif t in _CONTAINER_TAGS:
        h.update(_raw(v, depth))
    else:
        _feed_other(h, v, t)


def _feed_other(h: Any, v: Any, t: type) -> None:
    if t is File:  # a path whose identity is its content (nbflow.core.files)
        h.update(b"P" + FILES.of(v).encode())
        return
    mod = t.__module__
    if mod.startswith("numpy"):
        import numpy as np

        if isinstance(v, np.ndarray):
            h.update(b"A" + v.dtype.str.encode() + repr(v.shape).encode())
            if v.dtype.hasobject:
                _feed(h, v.ravel().tolist(), 1)
            else:
                h.update(memoryview(np.ascontiguousarray(v)).cast("B"))  # type: ignore[arg-type]
            return
        if isinstance(v, np.generic) and not isinstance(v, np.object_):
            h.update(b"g" + v.dtype.str.encode())
            h.update(v.tobytes())
            return
    elif mod.startswith("pandas"):
        if _feed_pandas(h, v):
            return
    elif _code_hasher is not None and (
        isinstance(v, (types.FunctionType, types.BuiltinFunctionType, types.MethodType)) or is_task(v)
    ):
        h.update(b"C" + _code_hasher(v).encode())
        return
    elif isinstance(v, type) and hasattr(v, "__module__"):
        h.update(b"y" + f"{v.__module__}.{v.__qualname__}".encode())
        return
    if isinstance(v, Remote):  # (its hash is taken where it lives: see nbflow.store.cache)
        raise Unhashable(f"the result of {v.key} is on another machine and was not hashed there")
    h.update(b"p" + t.__qualname__.encode())
    h.update(pickled(v))


# Set by nbflow.store.fingerprint when it is imported: fn -> digest of its code fingerprint.
_code_hasher: Callable[[Any], str] | None = None


def set_code_hasher(fn: Callable[[Any], str]) -> None:
    """Hash functions and tasks by ``fn(value)`` (their code) instead of by pickling them."""
    global _code_hasher
    _code_hasher = fn


def pickled(v: Any) -> bytes:
    """Pickled bytes of ``v`` for hashing; raises :class:`Unhashable` if it cannot be pickled."""
    import cloudpickle

    try:
        return cloudpickle.dumps(v, protocol=5)
    except Exception as e:
        raise Unhashable(f"{_describe(v)} cannot be pickled ({type(e).__name__}: {e})") from None


def _feed_pandas(h: Any, v: Any) -> bool:
    import pandas as pd

    if isinstance(v, pd.DataFrame):
        h.update(b"D" + repr(v.shape).encode())
        _feed(h, [str(c) if not isinstance(c, (str, int, float, tuple)) else c for c in v.columns], 1)
        _feed(h, [str(d) for d in v.dtypes], 1)
        _feed_index_meta(h, v.index)
        _feed_hashed(h, v)
        return True
    if isinstance(v, pd.Series):
        h.update(b"R" + repr(v.shape).encode())
        _feed(h, v.name if isinstance(v.name, (str, int, float, tuple, type(None))) else str(v.name), 1)
        h.update(str(v.dtype).encode())
        _feed_index_meta(h, v.index)
        _feed_hashed(h, v)
        return True
    if isinstance(v, pd.Index):
        h.update(b"X")
        _feed_index_meta(h, v)
        _feed_hashed(h, v)
        return True
    return False


def _feed_index_meta(h: Any, index: Any) -> None:
    h.update(type(index).__name__.encode() + str(index.dtype).encode())
    _feed(h, [str(n) if n is not None else None for n in index.names], 1)


def _feed_hashed(h: Any, v: Any) -> None:
    import pandas as pd

    try:
        if isinstance(v, pd.Index):
            rows = pd.util.hash_pandas_object(v)
        else:
            rows = pd.util.hash_pandas_object(v, index=True)
        h.update(memoryview(rows.to_numpy()).cast("B"))
    except TypeError:  # unhashable cells (lists, dicts): fall back to the pickled bytes
        h.update(b"p")
        h.update(pickled(v))


def _describe(v: Any) -> str:
    t = type(v)
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def describe(v: Any) -> str:
    """A short name of a value's type, for messages."""
    return _describe(v)


# Types whose values are always small and cheap to hash and serialise on the event loop.
SMALL_TYPES: frozenset[type] = frozenset({type(None), bool, int, float, complex})
SMALL_STR = 4096


def file_digest(path: Path, chunk: int = 1 << 22) -> str:
    """The digest of a file's bytes, read in chunks (so a large file is not held in memory)."""
    h = _new()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return ALGO + h.hexdigest()


# Content digests of nf.File values, reused while size, mtime and inode are unchanged.
FILES = ContentDigests(file_digest, combine)


def is_small(value: Any, size: int | None) -> bool:
    """Cheap to hash/serialise inline (no thread hop): tiny scalars, short strings, known-small sizes."""
    t = type(value)
    if t in SMALL_TYPES:
        return True
    if (t is str or t is bytes) and len(value) <= SMALL_STR:
        return True
    if t is tuple and len(value) <= 8:
        return all(type(x) in SMALL_TYPES or (type(x) is str and len(x) <= 256) for x in value)
    return size is not None and size <= 16384

