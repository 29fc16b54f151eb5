"""The backend protocol: one awaitable call per task attempt, and a close.

``call`` runs ``fn(*args, **kwargs)`` somewhere and returns ``(value, output_bytes)`` where
``output_bytes`` is the result's size in memory as Dask's ``sizeof`` counts it, or None when
the backend cannot know it cheaply (one measure on every backend: :mod:`nbflow.core.sizes`);
``size_of(value)``, when a backend has it, measures a value the same way (a cache hit of a
task of that backend).  It must be cancellable: when the awaiting
scope is cancelled (run cancelled, or the task's timeout) the call stops waiting at once;
what happens to work already under way is the backend's to document.  ``aclose`` leaves
nothing running that the backend started (see each backend for the cases it cannot stop).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol


class Backend(Protocol):
    name: str
    capacity: float  # concurrent calls it can serve; math.inf when unbounded

    async def call(
        self, key: str, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any] | None
    ) -> tuple[Any, int | None]: ...

    async def aclose(self, cancelled: bool) -> None: ...
