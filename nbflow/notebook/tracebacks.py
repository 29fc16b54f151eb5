"""A task's original traceback, without the engine's frames in front of it.

A task's exception is raised in the user's function but caught by the scheduler, so its
traceback starts with scheduler, anyio, asyncio and thread-pool frames.  :func:`trim`
skips those leading frames so the first frame shown is the user's code.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
import traceback
from types import TracebackType

import anyio

from ..engine import scheduler as _scheduler


def _dir(module_file: str | None) -> str:
    return os.path.dirname(os.path.abspath(module_file or "")) + os.sep


_INTERNAL = tuple({
    _dir(_scheduler.__file__),  # nbflow/engine/ and its backends
    _dir(anyio.__file__),
    _dir(asyncio.__file__),
    _dir(concurrent.futures.__file__),
})
_INTERNAL_FILES = (os.path.abspath(threading.__file__),)


def _internal(filename: str) -> bool:
    path = os.path.abspath(filename)
    return path.startswith(_INTERNAL) or path in _INTERNAL_FILES


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
