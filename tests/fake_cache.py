"""A result cache for scheduler tests that stores nothing: subclass it and write ``lookup``.

The engine's ``ResultCache`` protocol (``nbflow.core.protocols``) has five more methods; a
test about *when* lookups answer needs none of them to do anything.
"""

from __future__ import annotations

from typing import Any


class FakeCache:
    """Commits keep the size, nothing is cached or explained, events carry no cache key."""

    def bind(self, view: Any) -> None:
        pass

    async def lookup(self, i: int) -> tuple[Any, int | None] | None:
        return None

    async def commit(self, i: int, value: Any, size: int | None) -> int | None:
        return size

    def info(self, i: int) -> tuple[str | None, str | None, str | None]:
        return (None, None, None)

    def cached(self, i: int) -> bool:
        return False

    def explain(self, i: int) -> Any:
        return None
