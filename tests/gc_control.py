"""Tests that show a value is freed by reference counting alone, not by a collection pass."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def no_cyclic_gc() -> Iterator[None]:
    """The cyclic collector off for the block (after one pass for whatever earlier tests
    left): what is freed inside it was freed by its last reference going."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
