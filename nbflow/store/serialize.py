"""Turning task results into bytes for the store, and back.

One stored result is one self-describing byte string: a 5-byte header (the magic ``NBF``,
a format version, a format code), a 32-byte HMAC-SHA256 signature of the header and payload
made with the user's private key (:mod:`.signing`), and the payload.  The checksum the blob
store keeps is of these exact bytes, so what is verified on read is what was written; the
signature is checked before anything is decoded, so bytes nbflow did not write for this
user are never unpickled.  Results of the unsigned version 1 format are refused (they are
recomputed once).

Formats, chosen by type:

* ``N`` numpy arrays of a plain dtype: the ``.npy`` format (``numpy.lib.format``), no
  pickle involved, so loading cannot run code and the data is read in one copy;
* ``P`` everything else, pandas objects included: pickle protocol 5 through cloudpickle
  (pandas frames pickle as their numpy blocks, so this is close to a memory copy;
  cloudpickle stores classes and functions defined in a notebook by value, so a result
  of a notebook-defined type loads in a new kernel).

pyarrow/parquet would be smaller for wide string tables but is not a dependency.  Plain
data (``None``, bools, numbers, strings, bytes) is pickled with the standard pickle, which
for those types only writes constants; the signature, not the format, is what makes
loading safe.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

from ..core.errors import BlobCorrupt, SerializationError
from . import signing

MAGIC = b"NBF"
VERSION = 2  # 1: no signature (refused when reading)
HEAD = 5
HEADER = HEAD + signing.MAC_BYTES  # where the payload starts
NPY = ord("N")
PICKLE = ord("P")


class BadSignature(BlobCorrupt):
    """A stored result's signature does not match: it was not written by this user's nbflow
    (tampering, or a store copied from elsewhere); it is never decoded."""


class UnsignedResult(ValueError):
    """A stored result in the old unsigned format: never decoded, recomputed once."""


_PLAIN = frozenset({type(None), bool, int, float, complex, str, bytes})



def dumps(value: Any) -> bytes:
    """The stored form of ``value``; raises :class:`SerializationError` if it has none."""
    t = type(value)
    if t.__module__ == "numpy" and t.__name__ == "ndarray" and not value.dtype.hasobject:
        import numpy as np

        head = MAGIC + bytes((VERSION, NPY))
        buf = io.BytesIO()
        buf.write(head + bytes(signing.MAC_BYTES))  # the signature goes here once known
        np.lib.format.write_array(buf, value, allow_pickle=False)
        view = buf.getbuffer()
        try:
            view[HEAD:HEADER] = signing.mac(head, view[HEADER:])
        finally:
            view.release()
        return buf.getvalue()
    if t in _PLAIN:  # nothing for cloudpickle to add, and plain pickle is 10x quicker here
        return _signed(PICKLE, pickle.dumps(value, protocol=5))
    import cloudpickle

    try:
        payload = cloudpickle.dumps(value, protocol=5)
    except Exception as e:
        raise SerializationError(f"{type(e).__name__}: {e}") from None
    return _signed(PICKLE, payload)


def _signed(fmt: int, payload: bytes) -> bytes:
    head = MAGIC + bytes((VERSION, fmt))
    return b"".join((head, signing.signed(head, payload), payload))


def verified_payload(data: bytes | memoryview) -> tuple[int, memoryview]:
    """``(format, payload)`` of stored bytes whose signature checks; raises
    :class:`BadSignature`, :class:`UnsignedResult` or ValueError (not a stored result)."""
    view = memoryview(data)
    if len(view) < HEAD or bytes(view[:3]) != MAGIC:
        raise ValueError("not an nbflow stored result (bad header)")
    if view[3] == 1:
        raise UnsignedResult("stored by an older nbflow without a signature; recomputed")
    if view[3] != VERSION or len(view) < HEADER:
        raise ValueError(f"not an nbflow stored result (format version {view[3]})")
    if not signing.check(view[HEAD:HEADER], view[:HEAD], view[HEADER:]):
        raise BadSignature("stored result has a bad signature (not written by this user's nbflow, "
                           "or changed since); it is not loaded")
    return view[4], view[HEADER:]


def loads(data: bytes | memoryview) -> Any:
    """The value stored as ``data`` (as made by :func:`dumps`)."""
    fmt, payload = verified_payload(data)  # (nothing is decoded before this)
    if fmt == NPY:
        import numpy as np

        return np.lib.format.read_array(io.BytesIO(payload), allow_pickle=False)
    if fmt == PICKLE:
        return pickle.loads(payload)
    raise ValueError(f"unknown stored result format {fmt!r}")


def format_name(data: bytes | memoryview) -> str:
    """``"npy"`` or ``"pickle"``: the format of stored bytes (for listings)."""
    view = memoryview(data)
    return {NPY: "npy", PICKLE: "pickle"}.get(view[4], "?") if len(view) >= HEAD else "?"
