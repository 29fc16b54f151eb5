"""A store that fails during a run degrades that run; it never breaks the scheduler.

The journal file can be deleted, overwritten or made read-only while a process has the
store open, the disk can fill up, another process can hold the write lock.  The cache hooks
(:meth:`RunCache.lookup` before a task runs, :meth:`RunCache.commit` after it succeeds) are
called inside the scheduler, where an unexpected SQLite or file-system error would end a
worker, not the task.  :class:`GuardedRunCache` catches exactly those errors at the hook
boundary: the first one turns caching off for the rest of the run (every later task simply
runs, with reason ``"store unusable"``), warns once with :class:`NbflowStoreWarning` naming
the store and the error, and makes the next run open the store afresh (so a store that
comes back is used again, and one that stays broken is reported by the usual open-time
warning).  Task errors, cancellation and ``strict=True`` integrity failures are not store
failures and pass through untouched.
"""

from __future__ import annotations

import sqlite3
import warnings
from typing import Any

from ..core.errors import StoreError, StoreIntegrityError
from .cache import NodeCache, RunCache
from .store import NbflowStoreWarning, describe_failure, invalidate

STORE_FAILURES = (sqlite3.Error, OSError, StoreError)  # (StoreError: e.g. an unusable signing key)


class GuardedRunCache(RunCache):
    """:class:`RunCache` whose store failures degrade the run to "no cache" (see module)."""

    broken: str | None = None

    def _degrade(self, e: BaseException, when: str) -> None:
        if self.broken is not None:
            return
        self.broken = f"{type(e).__name__}: {e}"
        invalidate(self.store)
        warnings.warn(
            f"nbflow: {describe_failure(self.store.home, e)} (it failed {when}); the rest of run "
            f"{self.run_id} goes on without the cache",
            NbflowStoreWarning, stacklevel=2,
        )

    async def lookup(self, i: int) -> tuple[Any, int | None] | None:
        if self.broken is None:
            try:
                return await super().lookup(i)
            except StoreIntegrityError:  # strict=True: the run must stop, not degrade
                raise
            except STORE_FAILURES as e:
                self._degrade(e, "while looking up a stored result")
        info = self.nodes.setdefault(i, NodeCache())
        info.cached, info.key = False, None  # (nothing is stored for it this run)
        info.reason = "store unusable"
        return None

    def will_run(self, i: int) -> bool:
        if self.broken is None:
            try:
                return super().will_run(i)
            except STORE_FAILURES as e:
                self._degrade(e, "while reading which code has stored results")
        return True  # (no cache any more: every task runs)

    async def commit(self, i: int, value: Any, size: int | None) -> int | None:
        if self.broken is None:
            try:
                return await super().commit(i, value, size)
            except STORE_FAILURES as e:
                self._degrade(e, "while storing a result")
        self.reran.add(i)
        return size
