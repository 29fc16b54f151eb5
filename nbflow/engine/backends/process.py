"""Sync tasks in worker processes, with cloudpickle so notebook-defined functions travel.

The pool is created on first use and belongs to the run.  Worker processes come from a
``forkserver`` that preloads only nbflow, and no process is forked from a multi-threaded
parent.  Workers never import the user's ``__main__``: multiprocessing would re-run a
script's top level in every worker (a script without an ``if __name__ == "__main__"``
guard would run again there, and start runs of its own), so while this backend starts its
workers the preparation data that tells a child to import the parent's main module is
dropped (:func:`_without_main`).  Functions defined in the script still reach the workers:
cloudpickle sends ``__main__`` functions by value.

Arguments and results cross the process boundary as cloudpickle bytes; what cannot be
pickled is reported naming the task, the argument and the type.  Unlike threads, worker
processes can be stopped: on cancellation, and when a timed-out task is still running at
the end of the run, the pool's processes are killed.  Workers also die with the process
that started them, even if it is SIGKILLed (:mod:`.lifeline`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import contextlib
import multiprocessing as mp
import os
import sys
import threading
from collections.abc import Callable
from multiprocessing import spawn
from typing import Any

import cloudpickle

from ...core.errors import PicklingError
from .lifeline import bind_to_owner

_starting = threading.local()  # set while this backend starts worker processes
_original_preparation = spawn.get_preparation_data


def _preparation_data(name: str) -> dict[str, Any]:
    data = _original_preparation(name)
    if getattr(_starting, "on", False):
        data.pop("init_main_from_path", None)
        data.pop("init_main_from_name", None)
    return data


spawn.get_preparation_data = _preparation_data  # (only changes children this backend starts)


@contextlib.contextmanager
def _without_main() -> Any:
    """Children started inside this block do not import the parent's ``__main__``."""
    _starting.on = True
    try:
        yield
    finally:
        _starting.on = False


def _describe(value: Any) -> str:
    t = type(value)
    return f"{t.__module__}.{t.__qualname__}" if t.__module__ != "builtins" else t.__qualname__


def _find_unpicklable(args: tuple[Any, ...], kwargs: dict[str, Any] | None) -> tuple[str, Any] | None:
    for i, a in enumerate(args):
        try:
            cloudpickle.dumps(a)
        except Exception:
            return f"argument {i}", a
    for k, a in (kwargs or {}).items():
        try:
            cloudpickle.dumps(a)
        except Exception:
            return f"argument {k!r}", a
    return None


def _run_pickled(payload: bytes) -> bytes:
    """Worker side: unpickle the call, run it, pickle the result."""
    fn, args, kwargs = cloudpickle.loads(payload)
    value = fn(*args, **kwargs) if kwargs else fn(*args)
    try:
        return bytes(cloudpickle.dumps(value))
    except Exception as e:
        value = getattr(value, "measured_value", value)  # name the task's own result type
        raise PicklingError(
            f"its result of type {_describe(value)} cannot be pickled to send it back from the "
            f"worker process ({type(e).__name__}: {e})"
        ) from None


class ProcessBackend:
    """Runs plain functions in a process pool owned by the run."""

    name = "process"

    def __init__(self, processes: int | None = None) -> None:
        self.capacity = float(processes or os.cpu_count() or 1)
        self._pool: cf.ProcessPoolExecutor | None = None
        self._stuck: set[cf.Future[bytes]] = set()  # timed out but still running

    def _executor(self) -> cf.ProcessPoolExecutor:
        if self._pool is None:
            if sys.platform.startswith("linux"):
                ctx = mp.get_context("forkserver")
                ctx.set_forkserver_preload(["nbflow.engine.backends.process"])
            else:
                ctx = mp.get_context("spawn")
            # Each worker watches this process and dies with it (see lifeline.py).
            self._pool = cf.ProcessPoolExecutor(int(self.capacity), mp_context=ctx,
                                                initializer=bind_to_owner, initargs=(os.getpid(),))
        return self._pool

    async def call(
        self, key: str, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any] | None
    ) -> tuple[Any, int | None]:
        try:
            payload = cloudpickle.dumps((fn, args, kwargs))
        except Exception as e:
            bad = _find_unpicklable(args, kwargs)
            if bad is None:
                what = f"its function {getattr(fn, '__qualname__', fn)!r}"
            else:
                what = f"its {bad[0]} (of type {_describe(bad[1])})"
            raise PicklingError(
                f"task {key!r}: {what} cannot be pickled to send it to a worker process "
                f"({type(e).__name__}: {e}). Pass something picklable (a path, a URL, plain "
                "data) and open the resource inside the task, or run it with executor='thread'."
            ) from e
        with _without_main():  # (submit may start a worker)
            fut = self._executor().submit(_run_pickled, payload)
        try:
            out = await asyncio.wrap_future(fut)
        except PicklingError as e:
            raise PicklingError(f"task {key!r}: {e}") from None
        except BaseException:
            if not fut.done():
                self._stuck.add(fut)
            raise
        return cloudpickle.loads(out), len(out)

    async def aclose(self, cancelled: bool) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        if cancelled or any(not f.done() for f in self._stuck):
            # Processes, unlike threads, can be stopped: do so rather than wait.
            for p in list(getattr(pool, "_processes", {}).values()):
                p.kill()
        pool.shutdown(wait=True, cancel_futures=True)
        self._stuck.clear()
