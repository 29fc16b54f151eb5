"""Sync tasks in worker processes, with cloudpickle so notebook-defined functions travel.

The pool is created on first use and belongs to the run.  Worker processes come from a
``forkserver`` that preloads only nbflow, and no process is forked from a multi-threaded
parent.  Workers never import the user's ``__main__``: multiprocessing would re-run a
script's top level in every worker (a script without an ``if __name__ == "__main__"``
guard would run again there, and start runs of its own), so while this backend starts its
workers the preparation data that tells a child to import the parent's main module is
dropped (:func:`_without_main`).  Functions defined in the script still reach the workers:
cloudpickle sends ``__main__`` functions by value.

Arguments and results cross the process boundary as pickles (protocol 5, functions by
value with cloudpickle); what cannot be pickled is reported naming the task, the argument
and the type.  Large buffers (numpy arrays, pandas blocks, Arrow buffers of at least
``NBFLOW_SHM_THRESHOLD`` bytes, 1 MiB by default) do not go through the pipe: they travel
in shared memory and are not copied on receipt (:mod:`.shm`, :mod:`.wire`); a large value
of the run's own process (from the notebook, a cached input) is copied there once per run
however many tasks it is sent to (:class:`.shm.Kept`);
``NBFLOW_PROCESS_TRANSFER=pipe`` (or ``ProcessBackend(transfer="pipe")``) sends everything
through the pipe instead, the way to measure the difference.  Every call records what it
moved, per input edge and for its result (:attr:`ProcessBackend.rows`, shown as
``run.transfers``).  Unlike threads, worker
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
import time
import uuid
from collections.abc import Callable, Sequence
from multiprocessing import spawn
from typing import Any

import cloudpickle

from ...core.errors import InvalidOptionError, PicklingError
from ...core.sizes import output_size
from ..metrics import Measured
from . import shm, wire
from .lifeline import bind_to_owner
from .wire import describe as _describe

TRANSFERS = ("shm", "pipe")
MAIN = "main"  # the run's own process, in transfer rows

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


def transfer_setting(transfer: str | None = None) -> str:
    """How values cross to workers: ``transfer`` or ``NBFLOW_PROCESS_TRANSFER`` (``shm``)."""
    mode = transfer if transfer is not None else os.environ.get("NBFLOW_PROCESS_TRANSFER", "shm")
    if mode not in TRANSFERS:
        raise InvalidOptionError(
            f"process transfer {mode!r} is not known; set NBFLOW_PROCESS_TRANSFER (or "
            "transfer=) to 'shm' (large buffers through shared memory) or 'pipe' (plain pickles)")
    return mode


def threshold_setting(threshold: int | None = None) -> int:
    """The smallest buffer sent through shared memory: ``threshold`` or
    ``NBFLOW_SHM_THRESHOLD`` (bytes, default 1 MiB)."""
    if threshold is None:
        text = os.environ.get("NBFLOW_SHM_THRESHOLD", str(shm.DEFAULT_THRESHOLD))
        try:
            threshold = int(text)
        except ValueError:
            threshold = -1
    if threshold < 1:
        raise InvalidOptionError(
            "NBFLOW_SHM_THRESHOLD (or threshold=) must be a positive whole number of bytes, "
            f"e.g. {shm.DEFAULT_THRESHOLD} (1 MiB)")
    return threshold


class ProcessBackend:
    """Runs plain functions in a process pool owned by the run."""

    name = "process"
    size_of = staticmethod(output_size)  # a result's output_bytes (a cache hit's too)

    def __init__(self, processes: int | None = None, transfer: str | None = None,
                 threshold: int | None = None) -> None:
        self.capacity = float(processes or os.cpu_count() or 1)
        self._pool: cf.ProcessPoolExecutor | None = None
        self._stuck: set[cf.Future[Any]] = set()  # timed out but still running
        mode = transfer_setting(transfer)
        self.threshold = threshold_setting(threshold)
        # (no /dev/shm: the pipe, as on platforms without one)
        self.transfer = mode if mode == "pipe" or shm.available() else "pipe"
        self.prefix = f"{shm.PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}-"  # this backend's segments
        self.registry = shm.Registry()  # results mapped here, sent on by reference
        self.kept = shm.Kept(self.prefix)  # this process's large values, one copy per run
        self._inputs: dict[str, Sequence[tuple[str, Any]]] = {}
        self._rows: list[tuple[Any, ...]] = []  # what moved (tuples: a run may have many)
        self.stats = {"calls": 0, "pipe_bytes": 0, "shm_copied_bytes": 0, "shm_shared_bytes": 0,
                      "oob_buffers": 0}
        self.sink: Callable[[list[dict[str, Any]]], None] | None = None  # journals the rows

    def _executor(self) -> cf.ProcessPoolExecutor:
        if self._pool is None:
            if self.transfer == "shm":
                shm.sweep_orphans()  # segments of run processes that were killed
            if sys.platform.startswith("linux"):
                ctx = mp.get_context("forkserver")
                ctx.set_forkserver_preload(["nbflow.engine.backends.process"])
            else:
                ctx = mp.get_context("spawn")
            # Each worker watches this process and dies with it (see lifeline.py).
            self._pool = cf.ProcessPoolExecutor(int(self.capacity), mp_context=ctx,
                                                initializer=bind_to_owner, initargs=(os.getpid(),))
        return self._pool

    def note_inputs(self, key: str, inputs: Sequence[tuple[str, Any]]) -> None:
        """The scheduler says which task made which value among ``key``'s arguments
        (``(producer key, value)``), just before :meth:`call`: its edges' bytes are counted."""
        self._inputs[key] = inputs

    async def call(
        self, key: str, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any] | None
    ) -> tuple[Any, int | None]:
        inputs = self._inputs.pop(key, ())
        packer = (shm.Packer(self.prefix, self.threshold, self.registry, self.kept)
                  if self.transfer == "shm" else None)
        start = time.time()
        try:
            out = wire.build(fn, args, kwargs, inputs, packer,
                             self.prefix if packer is not None else None, self.threshold)
        except Exception as e:
            if packer is not None:
                packer.writer.discard()
                self.kept.release(packer.pinned)
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
        try:
            if packer is not None:
                packer.writer.close()
            with _without_main():  # (submit may start a worker)
                fut = self._executor().submit(wire.run_call, out.message)
            try:
                reply = await asyncio.wrap_future(fut)
            except PicklingError as e:
                raise PicklingError(f"task {key!r}: {e}") from None
            except BaseException:
                if not fut.done():
                    self._stuck.add(fut)
                raise
        finally:
            if packer is not None:  # (the worker has mapped it, or will never need it)
                shm.unlink(packer.writer.name)
                self.kept.release(packer.pinned)
        pid, data, places, load_seconds, dump_seconds, worker_copied = reply
        t0 = time.perf_counter()
        value = wire.receive(data, places, self.registry if packer is not None else None)
        received = time.perf_counter() - t0
        self._account(key, out, packer, pid, data, places, load_seconds, dump_seconds + received,
                      worker_copied, start)
        # output_bytes is the result's size in memory (core.sizes), as on every backend;
        # the bytes that crossed from the worker are its row of run.transfers (_account)
        return value, output_size(value.measured_value if type(value) is Measured else value)

    def _account(self, key: str, out: wire.Outgoing, packer: shm.Packer | None, pid: int,
                 data: bytes, places: list[shm.Place], load_seconds: dict[int, float],
                 result_seconds: float, worker_copied: int, start: float) -> None:
        """Rows of ``run.transfers`` for one call: its input edges (and literal arguments,
        producer None), and its result coming back (consumer None)."""
        worker = f"process:{pid}"
        parts = [k for k, _ in out.message[3]]
        for j, k in enumerate(parts):
            if k == 0 and not out.literal_args:
                continue
            self._rows.append((out.producers[j], key, MAIN, worker, out.nbytes[j],
                               out.seconds[j] + load_seconds.get(k, 0.0), start))
        result_bytes = len(data) + sum(n for _, _, n in places)
        self._rows.append((key, None, worker, MAIN, result_bytes, result_seconds, start))
        st = self.stats
        st["calls"] += 1
        st["pipe_bytes"] += out.pipe_bytes + len(data)
        st["shm_copied_bytes"] += worker_copied + (packer.copied if packer is not None else 0)
        st["shm_shared_bytes"] += packer.shared if packer is not None else 0
        st["oob_buffers"] += len(places) + (len(packer.places) if packer is not None else 0)

    @property
    def rows(self) -> list[dict[str, Any]]:
        """What moved, as rows of ``run.transfers``: one per input edge of each call (and
        one for the arguments written in the notebook, producer None), one per result
        coming back (consumer None)."""
        names = ("producer", "consumer", "from_worker", "to_worker", "bytes", "seconds", "start")
        return [{**dict(zip(names, r, strict=True)), "dask_key": None} for r in self._rows]

    def input_bytes_moved(self) -> dict[str, int]:
        """Bytes each task received from the run's process (its input edges and literals)."""
        moved: dict[str, int] = {}
        for _, consumer, _, _, nbytes, _, _ in self._rows:
            if consumer is not None:
                moved[consumer] = moved.get(consumer, 0) + nbytes
        return moved

    async def aclose(self, cancelled: bool) -> None:
        pool, self._pool = self._pool, None
        self._inputs.clear()
        if pool is not None:
            if cancelled or any(not f.done() for f in self._stuck):
                # Processes, unlike threads, can be stopped: do so rather than wait.
                for p in list(getattr(pool, "_processes", {}).values()):
                    p.kill()
            pool.shutdown(wait=True, cancel_futures=True)
            self._stuck.clear()
        # Every segment of this backend goes: values still held here stay valid (a mapping
        # outlives its name), and what a killed worker left is removed too.
        self.registry.clear()
        self.kept.clear()
        shm.remove_all(self.prefix)
        if self.sink is not None and self._rows:
            try:
                self.sink(self.rows)
            except Exception:  # accounting must never break the end of a run
                pass
