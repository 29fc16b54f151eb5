"""A failed task's exception, without the engine's frames in front of its traceback.

A task's exception is raised in the user's function but caught by the scheduler, so its
traceback starts with the scheduler's, the backend's, anyio's, asyncio's and the thread
pool's frames.  Those frames hold their locals (the scheduler itself, closures over it),
and the scheduler holds the exception (``run.errors()``): kept, they make the run one
reference cycle that only a full garbage collection frees, results and all.  Every view
shows a task's traceback from the first frame past them already, so when a run ends
:func:`drop_engine_frames` cuts them off the exception itself.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from types import TracebackType

import anyio


def _dir(module_file: str | None) -> str:
    return os.path.dirname(os.path.abspath(module_file or "")) + os.sep


ENGINE_DIR = _dir(__file__)  # nbflow/engine/ and its backends
NBFLOW_DIR = _dir(ENGINE_DIR[:-1])  # nbflow/ (the engine, and the core helpers it calls)
# The concurrency machinery a task's call passes through on its way from the scheduler.
_MACHINERY = (_dir(anyio.__file__), _dir(asyncio.__file__), _dir(concurrent.futures.__file__))
_MACHINERY_FILES = (os.path.abspath(threading.__file__),)


def is_machinery(filename: str, own: str = NBFLOW_DIR) -> bool:
    """Whether a frame of ``filename`` is nbflow's own (below ``own``) or the concurrency
    machinery's, not the task's code.  (The notebook's views trim with ``own=ENGINE_DIR``.)"""
    path = os.path.abspath(filename)
    return path.startswith((own, *_MACHINERY)) or path in _MACHINERY_FILES


def _internal(tb: TracebackType) -> bool:
    return is_machinery(tb.tb_frame.f_code.co_filename)


def _past_engine(tb: TracebackType | None) -> TracebackType | None:
    """The entries of ``tb`` from the first one that is not nbflow's or its concurrency
    machinery's; when all are (a task that is a library's function), those after nbflow's
    last frame (the library's own, where it raised)."""
    first = tb
    while first is not None and _internal(first):
        first = first.tb_next
    if first is not None or tb is None:
        return first
    after: TracebackType | None = tb
    while tb is not None:
        if os.path.abspath(tb.tb_frame.f_code.co_filename).startswith(NBFLOW_DIR):
            after = tb.tb_next
        tb = tb.tb_next
    return after


def drop_engine_frames(err: BaseException, depth: int = 0) -> None:
    """Start ``err``'s traceback, and those of its causes and contexts, past the engine's
    frames (:func:`_past_engine`)."""
    err.__traceback__ = _past_engine(err.__traceback__)
    if depth < 8:  # (a chain is short; a loop of causes must not recurse forever)
        for linked in (err.__cause__, err.__context__):
            if linked is not None and linked is not err:
                drop_engine_frames(linked, depth + 1)
