"""Sizes of values when they are cheap to know (no serialisation, no deep walk)."""

from __future__ import annotations

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
