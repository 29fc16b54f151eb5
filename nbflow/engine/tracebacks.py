"""A failed task's exception, without the engine's frames in front of its traceback.

A task's exception is raised in the user's function but caught by the scheduler, so its
traceback starts with the scheduler's, the backend's, anyio's, asyncio's and the thread
pool's frames.  Those frames hold their locals (the scheduler itself, closures over it),
and the scheduler holds the exception (``run.errors()``): kept, they make the run one
reference cycle that only a full garbage collection frees, results and all.  Every view
shows a task's traceback from the first frame past them already, so when a run ends
:func:`drop_engine_frames` cuts them off the exception itself.

An error of the run itself (a stall, an engine failure) is kept by the run (``run.error``)
and raised to the caller.  Raised as it is, it would collect the frames it passes through,
and they hold the run (``self`` in ``wait``, ``run`` in the caller's): run, error and
results one cycle again.  So the caller is given a twin of it (:func:`twin_to_raise`), and
the frames of the engine's own traceback, which an engine failure keeps for its report,
keep their lines but let go of their locals (:func:`let_go_of_locals`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
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


def _chain(err: BaseException) -> list[BaseException]:
    """``err`` and the errors it was raised from or during (causes and contexts; a loop of
    them is walked once)."""
    out: list[BaseException] = []
    todo = [err]
    while todo and len(out) < 32:
        e = todo.pop()
        if any(e is seen for seen in out):
            continue
        out.append(e)
        todo += [x for x in (e.__cause__, e.__context__) if x is not None]
    return out


def let_go_of_locals(err: BaseException) -> None:
    """Clear the locals of the engine's frames (nbflow's and its concurrency machinery's) in
    the tracebacks of ``err`` and the errors it came from, once the run has ended: the
    traceback still shows every file, line and function, but no longer holds what those
    frames held (the run).  The caller's frames are left alone (clearing a suspended
    coroutine's frame would close it), and so are frames still running."""
    for e in _chain(err):
        tb = e.__traceback__
        while tb is not None:
            if _internal(tb):
                with contextlib.suppress(RuntimeError):  # (a frame still running)
                    tb.tb_frame.clear()
            tb = tb.tb_next


def twin_to_raise(err: BaseException) -> BaseException:
    """A copy of ``err`` (same type, arguments, attributes, cause, context and traceback so
    far) to raise in its place, so the frames it passes through on its way to the caller are
    added to the copy, not to the error the run keeps.  ``err`` itself when it cannot be
    copied faithfully (a class whose message is made by its ``__init__``)."""
    try:
        twin = type(err).__new__(type(err), *err.args)
        twin.__dict__.update(err.__dict__)
        same = type(twin) is type(err) and twin.args == err.args and str(twin) == str(err)
    except Exception:  # (whatever a foreign class's __new__ or __str__ does with it)
        return err
    if not same:
        return err
    twin.__cause__ = err.__cause__
    twin.__context__ = err.__context__
    twin.__suppress_context__ = err.__suppress_context__
    return twin.with_traceback(err.__traceback__)
