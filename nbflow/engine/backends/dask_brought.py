"""Results brought to the caller as a Dask run ends, and the moment the caller takes them.

As a run whose client stays open closes, the results the caller will take (a
``%%workflow`` binding's, a small named sink's) are gathered on Dask's client loop
(``DaskBackend._prefetch``).  Each gather is a :class:`Brought`: a concurrent future, as
``asyncio.run_coroutine_threadsafe`` returns, that also tells when its value is first read
(``DaskResult._fetch`` reads it when the caller asks for the result).  Once the caller has
read every one of a run's, :class:`Taking` calls its ``on_all_taken``: the end-of-run read
of the workers' logs (:meth:`nbflow.locality.agent.LocalityAgent.closing`) waits for that,
so that its round trips and their handling do not share the process with the caller's last
steps to its value.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from concurrent import futures
from typing import Any


class Taking:
    """Counts a run's brought results not read yet; calls ``on_all_taken`` once, when the
    last of them is first read."""

    def __init__(self, count: int, on_all_taken: Callable[[], None]) -> None:
        self._left = count
        self._lock = threading.Lock()
        self._on_all_taken = on_all_taken

    def took_one(self) -> None:
        with self._lock:
            self._left -= 1
            last = self._left == 0
        if last:
            self._on_all_taken()


class Brought(futures.Future[Any]):
    """A gather's concurrent future that tells its :class:`Taking` when first read.

    A value that came with its task's completion (``DaskBackend._take_carried``) is a
    Brought made done at once, its :class:`Taking` attached as the run ends
    (:meth:`attach`), unless the caller read it before."""

    def __init__(self, taking: Taking | None = None) -> None:
        super().__init__()
        self._taking: Taking | None = taking
        self.read = False

    def attach(self, taking: Taking) -> None:
        self._taking = taking

    def result(self, timeout: float | None = None) -> Any:
        try:
            return super().result(timeout)
        finally:
            if self.done():  # (a wait that timed out took nothing)
                self.read = True
                taking, self._taking = self._taking, None  # (once: a second read is no news)
                if taking is not None:
                    taking.took_one()


def bring(coro: Coroutine[Any, Any, Any], loop: asyncio.AbstractEventLoop, taking: Taking) -> Brought:
    """Run ``coro`` on ``loop`` (another thread's); its outcome in a :class:`Brought`."""
    out = Brought(taking)
    inner = asyncio.run_coroutine_threadsafe(coro, loop)

    def settle(f: futures.Future[Any]) -> None:  # (in the thread that settled ``inner``)
        if f.cancelled():
            out.cancel()
        elif f.exception() is not None:
            out.set_exception(f.exception())
        else:
            out.set_result(f.result())

    inner.add_done_callback(settle)
    return out
