"""Which SQL statements reach a store's journal through ``journal.query`` (the reads a
preparation, a history question or a read-ahead sends), for tests that count them."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def statements_sent(store: Any) -> Iterator[list[str]]:
    """Inside the block, every statement sent through ``store.journal.query`` is appended
    to the list yielded (and still runs); after it, the journal's own method is back."""
    sent: list[str] = []
    real = store.journal.query

    def counting(sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
        sent.append(sql)
        return real(sql, params)

    store.journal.query = counting
    try:
        yield sent
    finally:
        del store.journal.query  # (the instance attribute goes: the class's method is back)
