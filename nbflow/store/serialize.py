"""Turning task results into bytes for the store, and back.

One stored result is one self-describing byte string: a 5-byte header (the magic ``NBF``,
a format version, a format code) and the payload.  The checksum the blob store keeps is
of these exact bytes, so what is verified on read is what was written.

Formats, chosen by type:

* ``N`` numpy arrays of a plain dtype: the ``.npy`` format (``numpy.lib.format``), no
  pickle involved, so loading cannot run code and the data is read in one copy;
* ``P`` everything else, pandas objects included: pickle protocol 5 through cloudpickle
  (pandas frames pickle as their numpy blocks, so this is close to a memory copy;
  cloudpickle stores classes and functions defined in a notebook by value, so a result
  of a notebook-defined type loads in a new kernel).

pyarrow/parquet would be smaller for wide string tables but is not a dependency.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

from ..core.errors import SerializationError

MAGIC = b"NBF"
VERSION = 1
HEADER = 5
NPY = ord("N")
PICKLE = ord("P")


_PLAIN = frozenset({type(None), bool, int, float, complex, str, bytes})



def dumps(value: Any) -> bytes:
    """The stored form of ``value``; raises :class:`SerializationError` if it has none."""
    t = type(value)
    if t.__module__ == "numpy" and t.__name__ == "ndarray" and not value.dtype.hasobject:
        import numpy as np

        buf = io.BytesIO()
        buf.write(MAGIC + bytes((VERSION, NPY)))
        np.lib.format.write_array(buf, value, allow_pickle=False)
        return buf.getvalue()
    if t in _PLAIN:  # nothing for cloudpickle to add, and plain pickle is 10x quicker here
        return MAGIC + bytes((VERSION, PICKLE)) + pickle.dumps(value, protocol=5)
    import cloudpickle

    try:
        return MAGIC + bytes((VERSION, PICKLE)) + cloudpickle.dumps(value, protocol=5)
    except Exception as e:
        raise SerializationError(f"{type(e).__name__}: {e}") from None


def loads(data: bytes | memoryview) -> Any:
    """The value stored as ``data`` (as made by :func:`dumps`)."""
    view = memoryview(data)
    if bytes(view[:3]) != MAGIC or view[3] != VERSION:
        raise ValueError("not an nbflow stored result (bad header)")
    fmt = view[4]
    if fmt == NPY:
        import numpy as np

        return np.lib.format.read_array(io.BytesIO(view[HEADER:]), allow_pickle=False)
    if fmt == PICKLE:
        return pickle.loads(view[HEADER:])
    raise ValueError(f"unknown stored result format {fmt!r}")


def format_name(data: bytes | memoryview) -> str:
    """``"npy"`` or ``"pickle"``: the format of stored bytes (for listings)."""
    return {NPY: "npy", PICKLE: "pickle"}.get(memoryview(data)[4], "?")
