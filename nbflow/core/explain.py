"""Explanations: why a task ran or was served from the cache.

Made by the store's cache (which knows what was stored before) and shown by ``run.explain``,
``nbflow explain`` and the views; a value object, so it lives with the shared vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Explanation:
    """Why a task ran or hit the cache: ``reason`` in short, ``changes`` part by part.

    ``changes`` lists ``(part, before, now)`` for every fingerprint part that differs from
    what was stored last time (``"code: function normalize"``, ``"input df"``, ...).
    ``str()`` gives the full text.
    """

    key: str
    task: str
    cached: bool
    reason: str | None
    changes: list[tuple[str, str | None, str | None]]
    text: str

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return self.text

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(self.text)


@dataclass(frozen=True)
class Explanations:
    """Explanations of several nodes (a task name that matched more than one)."""

    items: list[Explanation]

    def __str__(self) -> str:
        return "\n\n".join(e.text for e in self.items)

    __repr__ = __str__

    def __iter__(self) -> Any:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, k: int) -> Explanation:
        return self.items[k]

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(str(self))
