"""A task's original traceback, without the engine's frames in front of it.

A task's exception is raised in the user's function but caught by the scheduler, so its
traceback starts with scheduler, anyio, asyncio and thread-pool frames.  :func:`trim`
skips those leading frames so the first frame shown is the user's code.
"""

from __future__ import annotations

import traceback
from types import TracebackType

from ..engine.tracebacks import ENGINE_DIR, is_machinery


def _internal(filename: str) -> bool:
    return is_machinery(filename, own=ENGINE_DIR)


def trim(tb: TracebackType | None) -> TracebackType | None:
    """The traceback from the first frame that is not nbflow's engine or its machinery."""
    first = tb
    while first is not None and _internal(first.tb_frame.f_code.co_filename):
        first = first.tb_next
    return first if first is not None else tb


def format_error(err: BaseException) -> str:
    """The task's traceback as text (chained causes included), engine frames trimmed."""
    return "".join(traceback.format_exception(type(err), err, trim(err.__traceback__)))


def short_error(err: BaseException, limit: int = 160) -> str:
    text = f"{type(err).__name__}: {err}"
    first = text.splitlines()[0] if text else ""
    return first if len(first) <= limit else first[: limit - 1] + "…"
