"""The result cache of one run: look up before a task runs, commit after it succeeds.

The engine calls the :class:`~nbflow.core.protocols.ResultCache` protocol, which this
class implements:

* :meth:`RunCache.lookup` before calling the backend.  It builds the task's **cache key**
  (:mod:`.keys`: ``hash(code fingerprint, input content hashes with argument names,
  result-affecting options)``), and if the store has a result for it, loads and verifies
  it; the engine then completes the task with ``TaskCompleted(cached=True)`` and never
  calls the backend.
* :meth:`RunCache.commit` after a successful call.  It computes the **content hash of the
  value** (once, before any downstream task can see, let alone mutate, the value), and
  when the task is cacheable serialises it, writes the file (big values, in a worker
  thread: temp file, fsync, rename) and queues the journal rows that commit it.

Because a downstream key is built from the content hashes of its upstream *values*, a
task whose upstream re-ran but produced an equal value hits (early cutoff).

A miss is not computed at once when another process on the same store may be computing
the same key: :meth:`RunCache.lookup` then takes the key's lease, or waits for the live
run that holds it and serves its result as a hit (:mod:`.lease`); the lease is given up
after :meth:`RunCache.commit` stored the result, or through :meth:`RunCache.on_event`
when the task ends without one.

Every lookup leaves a **reason** a person can read (:mod:`.explain`): ``"never ran"``,
``"code of clean changed (function normalize)"``, ``"input df changed"``, ``"forced"``
(:mod:`.rerun`), ``"cache off"``, or for a hit ``"code and inputs unchanged"``.  The reason
compares the new key's parts with those recorded for the same task (workflow name + task
key) the last time it was stored; :meth:`RunCache.explain` gives the full comparison.

This module is the I/O between those pure parts and the store.  Integrity: a stored result
whose checksum fails is reported (a warning naming the task), dropped, and recomputed;
with ``strict=True`` :meth:`lookup` raises :class:`StoreIntegrityError` and the engine ends
the run with it.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
import warnings
from typing import Any

import anyio

from ..core import events as ev
from ..core.codeinfo import nondeterministic_calls
from ..core.errors import NbflowStoreWarning, StoreError, StoreIntegrityError, Unhashable
from ..core.explain import Explanation
from ..core.files import File
from ..core.kinds import COLLECT, FIRST, GATHER
from ..core.protocols import RunView
from ..core.ref import Ref
from ..core.remote import Remote, has_remote, remotes_in
from ..core.sizes import output_size
from ..core.states import COMPLETED
from . import explain as explaining
from . import hashing, serialize, signing
from .blobs import BlobCorrupt, BlobMissing
from .explain import NodeCache, Prev
from .journal import dumps
from .keys import KeyBuilder, cache_key, collect_digest, file_products, has_files
from .lease import Leases, leases_of
from .lease import enabled as leases_enabled
from .rerun import Rerun
from .store import INLINE_MAX, PUT_CODE, PUT_FINGERPRINT, CacheEntry, Store

__all__ = ["NodeCache", "RunCache"]

_JOINS = (COLLECT, GATHER, FIRST)  # nodes whose value is made of other nodes' values

log = logging.getLogger("nbflow.store")


class RunCache:
    """The result cache of one run (``nbflow.core.protocols.ResultCache``).

    Made by the composition point for a run (``run_id``, the workflow's name and graph), bound
    to the run's scheduler state (:meth:`bind`), then asked by the engine before each task
    runs (:meth:`lookup`) and told after it succeeded (:meth:`commit`).
    """

    def __init__(self, store: Store, *, run_id: str, workflow: Any, strict: bool = False,
                 rerun: Any = None, lease: bool | None = None, lease_ttl: float | None = None) -> None:
        self.store = store
        self.run_id = run_id
        self.graph = workflow  # the traced workflow (to tell its Refs from others')
        self.strict = strict
        self.rerun = rerun
        self.workflow = workflow.name
        self.sched: RunView = _NOT_BOUND
        self.nodes: dict[int, NodeCache] = {}
        self.keys = KeyBuilder()
        self._index: dict[str, int] = {}  # task key -> node (see _node_index)
        self.digests = self.keys.digests  # node -> content hash of its value
        self.unhashable = self.keys.unhashable  # node -> why its value has no hash
        self.reran: set[int] = set()
        self.forced: Rerun | None = None
        self._conn: Any = None
        self._saved_blobs: set[str] = set()
        self._synced = False
        self._prev: dict[str, Prev] | None = None
        self._code_parts: dict[str, dict[str, str] | None] = {}
        self._recorded_code: set[str] = set()
        self._code_known: dict[str, bool] = {}  # code digest -> a stored result was made by it
        self._nondet: dict[int, tuple[Any, list[str]]] = {}
        # Leases (.lease): the keys this run is computing, by node; None: leases are off.
        # (``lease``/``lease_ttl``: the run's options; None: NBFLOW_LEASE / NBFLOW_LEASE_TTL)
        self.leases: Leases | None = leases_of(store) if leases_enabled(lease) else None
        self.lease_ttl = lease_ttl
        self.held: dict[int, str] = {}  # node -> key it computes (leased or in flight)
        self._registered = False
        self._root_id: tuple[int, int] | bool | None = False  # (see _root_ident; False: not yet)

    # -- set-up --------------------------------------------------------------------------

    def bind(self, view: RunView) -> None:
        """Read the run's nodes and results from ``view``; resolves ``rerun=`` (raising
        ``WorkflowDefinitionError`` for a name that is not in the workflow)."""
        self.sched = view
        if self.rerun:
            self.forced = Rerun(self.rerun, view.nodes, self.graph, self.workflow)
        # The run reads the globals of its tasks now, once: every task of the run is keyed
        # on the values they had when it started, whatever an earlier task does to them.
        for node in view.nodes:
            spec = getattr(node.task, "spec", None)
            if spec is not None and spec.cache:
                self.keys.code_of(spec.fn)
        if self.leases is not None:  # this process runs a cached run: others may see it
            try:
                self.leases.run_started(self.run_id, self.lease_ttl)
                self._registered = True
            except (sqlite3.Error, OSError, StoreError) as e:
                self.leases = None
                log.warning("nbflow: leases are off for run %s: %s", self.run_id, e)

    def _nondeterministic(self, fn: Any) -> list[str]:
        hit = self._nondet.get(id(fn))
        if hit is None:
            hit = self._nondet[id(fn)] = (fn, nondeterministic_calls(fn))
        return hit[1]

    def forced_reason(self, i: int) -> str | None:
        """Why ``rerun=`` forces node ``i`` to run (None: it does not)."""
        if self.forced is None:
            return None
        return self.forced.reason(i, self.sched.nodes, self.sched.succs)

    def reader(self) -> Any:
        if self._conn is None:
            self._conn = self.store.journal.reader()
        return self._conn

    def close(self) -> None:
        """Release the read connection and any lease still held (the run has finished)."""
        self.held.clear()
        if self.leases is not None and self._registered:
            self._registered = False
            self.leases.run_finished(self.run_id)
        memo = getattr(self.store, "_file_memo", None)
        if memo is not None:
            memo.close()
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def will_run(self, i: int) -> bool:
        """Is node ``i`` sure to run, whatever its inputs turn out to be (so running it
        before its lookup changes nothing)?  True when the task is not cached, when
        ``rerun=`` forces it, or when no result made by its code was ever stored: a key is
        built from the code's digest, and every stored result records that digest in the
        ``code`` table (one primary-key read per distinct function, remembered for the
        run).  Never while another process shares the store (it might store the key
        meanwhile).  A backend may then submit the task before its inputs are done
        (``engine.backends.dask_ahead``)."""
        spec = self.sched.nodes[i].task.spec
        if not spec.cache:
            return True
        if self.leases is not None and self.leases.leasing:
            return False
        if self.forced is not None and self.forced_reason(i) is not None:
            return True
        digest = self.keys.code_of(spec.fn).digest
        if digest in self._recorded_code:  # (this run stored a result of that code)
            return False
        known = self._code_known.get(digest)
        if known is None:
            row = self.reader().execute("SELECT 1 FROM code WHERE digest = ?", (digest,)).fetchone()
            known = self._code_known[digest] = row is not None
        return not known

    def worker_prepare(self, i: int) -> tuple[Any, tuple[Any, ...]] | None:
        """What node ``i``'s task does with its value on the Dask worker that runs it, for
        this cache (``engine.backends.dask_cache``): hash it and, when the result will be
        stored and the worker sees the store's disk, serialise and write its blob.  The
        facts come back with the result, so :meth:`commit` needs no round trip to the
        worker.  None: the commit asks the worker afterwards (a task that writes files:
        its products are hashed here)."""
        spec = self.sched.nodes[i].task.spec
        if spec.writes:
            return None
        info = self.nodes.get(i)
        if info is not None:  # (looked up already: it is stored when it has a key)
            store_it = info.key is not None
        else:  # (submitted before its lookup: stored unless the task is not cached)
            store_it = bool(spec.cache) and (spec.cache_explicit or not self._nondeterministic(spec.fn))
        ident = self._root_ident()
        return _prepare_in_task, (self.store.blobs, store_it and ident is not None,
                                  str(signing.key_path()), ident)

    def _root_ident(self) -> tuple[int, int] | None:
        """(device, inode) of the blob directory, which a worker compares with its own view
        of the same path to know it is this machine's directory (None: it cannot be made)."""
        if self._root_id is False:
            root = self.store.blobs.root
            try:
                root.mkdir(parents=True, exist_ok=True)
                st = root.stat()
                self._root_id = (st.st_dev, st.st_ino)
            except OSError:
                self._root_id = None
        return self._root_id  # type: ignore[return-value]

    # -- keys ----------------------------------------------------------------------------

    async def _ensure_digest(self, j: int) -> None:
        if j in self.digests:
            return
        sched = self.sched
        node = sched.nodes[j]
        if node.kind in _JOINS:  # from its parts' hashes (known already), not its value
            await self._join_digest(j, node)
            return
        value = sched.results[j]
        try:
            if isinstance(value, Remote):  # hashed where it lives, not brought here
                d = await anyio.to_thread.run_sync(value.on_worker, hashing.value_hash)
            elif has_remote(value):  # a list of remote results (a map's output): by its parts,
                # each hashed where it lives
                await self._learn_remote_digests(remotes_in(value))
                d = self.keys.remote_digest(value)
            elif hashing.is_small(value, sched.output_bytes[j]):
                d = hashing.value_hash(value)
            else:
                d = await anyio.to_thread.run_sync(hashing.value_hash, value)
        except (Unhashable, RecursionError) as e:
            self.digests[j] = None
            self.unhashable[j] = f"the result of {node.key} cannot be hashed ({e})"
            return
        self.digests[j] = d

    async def _join_digest(self, j: int, node: Ref) -> None:
        """The content hash of a collect, gather or first node from its parts' hashes.  A
        gather's value is the list of the parts that completed (and plain values), a
        first's the part it took: hashed from what is already known of them, it is the
        same whether the parts are remote results, values here, or served from the cache
        (:func:`.keys.collect_digest` is what the list hashes to as a value)."""
        sched = self.sched
        parts: list[Any] = []
        for p in node.args:
            if type(p) is not Ref:
                parts.append(p)
            elif node.kind == COLLECT or sched.state[p.index] == COMPLETED:
                await self._ensure_digest(p.index)
                parts.append(p)
            if parts and node.kind == FIRST:  # (a first's value is the first such part)
                break
        digests: list[str] = []
        for p in parts:
            if type(p) is Ref:
                d = self.digests.get(p.index)
                if d is None:
                    self.digests[j] = None
                    self.unhashable[j] = f"the result of {p.key} cannot be hashed"
                    return
            else:
                try:
                    d = hashing.value_hash(p)
                except (Unhashable, RecursionError) as e:
                    self.digests[j] = None
                    self.unhashable[j] = f"a value given to {node.key} cannot be hashed ({e})"
                    return
            digests.append(d)
        if node.kind != FIRST:
            self.digests[j] = collect_digest(digests)
        elif digests:
            self.digests[j] = digests[0]
        else:  # (not reached: a first that took nothing was skipped, and has no consumer)
            self.digests[j] = None
            self.unhashable[j] = f"{node.key} took no value"

    async def _hash_remote_args(self, ref: Ref) -> None:
        """Content hashes of the remote results among ``ref``'s arguments that are values,
        not Refs: an item of a map over another map's output is the producer item's remote
        result itself.  Hashed where it lives (never brought here), once per producer: its
        node's digest when the cache has it, else asked of its worker."""
        found = remotes_in(ref.args)
        if ref.kwargs:
            remotes_in(ref.kwargs, found)
        await self._learn_remote_digests(found)

    async def _learn_remote_digests(self, found: list[Remote]) -> None:
        """Content hashes of remote results (into ``keys.remote_digests``), once per producer."""
        known = self.keys.remote_digests
        for r in found:
            if r.key in known:
                continue
            j = self._node_index(r.key)
            if j is not None and self.sched.results[j] is r:
                await self._ensure_digest(j)
                d = self.digests.get(j)
            else:
                try:
                    d = await anyio.to_thread.run_sync(r.on_worker, hashing.value_hash)
                except (Unhashable, RecursionError):
                    d = None
            if d is not None:
                known[r.key] = d

    def _node_index(self, key: str) -> int | None:
        nodes = self.sched.nodes
        if len(self._index) != len(nodes):
            self._index = {r.key: r.index for r in nodes}
        return self._index.get(key)

    # -- the lookup hook -----------------------------------------------------------------

    async def lookup(self, i: int) -> tuple[Any, int | None] | None:
        """A hit's ``(value, output_bytes)``, or None: the task must run (see ``reason``)."""
        sched = self.sched
        ref = sched.nodes[i]
        spec = ref.task.spec
        info = self.nodes[i] = NodeCache()
        if not spec.cache:
            info.reason = "cache off"
            return None
        if not spec.cache_explicit:
            calls = self._nondeterministic(spec.fn)
            if calls:
                info.reason = (f"not cached: calls {', '.join(calls[:2])} without a seed (a new value "
                               "each run); pass @nf.task(cache=True) to cache it anyway")
                return None
        refs = KeyBuilder.arg_refs(ref) if ref.nested else ()
        digests = self.digests
        for j in refs:
            if j not in digests:
                await self._ensure_digest(j)
        if getattr(sched, "has_remote", False):  # remote results passed as plain values
            await self._hash_remote_args(ref)
        try:
            info.code = self.keys.code_of(spec.fn)
            if has_files(ref):  # file contents are hashed off the event loop
                inputs = await anyio.to_thread.run_sync(self.keys.inputs, ref)
            else:
                inputs = self.keys.inputs(ref)
        except (Unhashable, RecursionError) as e:
            name, *why = e.args if isinstance(e, Unhashable) and len(e.args) > 1 else ("?", e)
            info.reason = f"input {name} cannot be hashed"
            warnings.warn(
                f"nbflow: task {ref.key!r}: input {name!r} cannot be hashed ({'; '.join(map(str, why))}), "
                "so its result is not cached; pass a picklable value, or mark the task "
                "@nf.task(cache=False)",
                NbflowStoreWarning, stacklevel=2,
            )
            return None
        info.inputs = inputs
        info.options = self.keys.options(spec)
        info.key = cache_key(info.code.digest, info.options, inputs)
        if refs and self.reran:
            info.upstream_reran = [sched.nodes[j].key for j in refs if self._reran(j)]
        forced = self.forced_reason(i) if self.forced is not None else None
        if forced is not None:
            info.forced_by = forced
            info.reason = "forced"
            return None
        info.prev = self.previous().get(ref.key)
        if not self._synced:  # once per run: learn which keys other runs stored meanwhile
            self._synced = True
            self.store.sync_keys(self.reader())
        entry = self.store.find(self.reader(), info.key)
        if entry is None and self.leases is not None:  # another process may be computing it
            entry = await self._lease(i, ref, info)
        if entry is None:
            info.reason = explaining.miss_reason(ref.name, info, self.parts_of)
            if info.waited_for is not None:
                info.reason += f"; waited for {info.waited_for}, which stopped without storing it"
            return None
        try:
            if entry.inline is not None:
                value = serialize.loads(self.store.load(entry))
            else:
                value = await anyio.to_thread.run_sync(lambda: serialize.loads(self.store.load(entry)))
            if type(value) is Products:  # a task with file products: are they as it left them?
                stale = await anyio.to_thread.run_sync(value.stale)
                if stale is not None:
                    info.reason = stale
                    return None
                value = value.value
        except BlobMissing:
            self.store.forget(entry.blob)
            info.reason = "stored result is missing (removed by gc or by hand)"
            return None
        except BlobCorrupt as e:
            self.store.forget(entry.blob)
            msg = (f"the stored result of task {ref.key!r} (workflow {self.workflow!r}) failed its "
                   f"integrity check ({entry.blob}: {e})")
            if self.strict:
                raise StoreIntegrityError(msg + "; strict=True, so the run stops") from None
            warnings.warn(f"nbflow: {msg}; it is recomputed", NbflowStoreWarning, stacklevel=2)
            info.reason = "stored result corrupt (checksum mismatch)"
            return None
        except Exception as e:  # e.g. the class of a pickled result no longer exists
            self.store.forget(entry.blob)
            info.reason = f"stored result cannot be loaded ({type(e).__name__}: {e})"
            return None
        self.digests[i] = entry.value_digest
        if entry.value_digest is None:
            self.unhashable[i] = f"the result of {ref.key} cannot be hashed"
        info.cached = True
        info.blob = entry.blob
        info.size = entry.size
        info.reason = explaining.hit_reason(info)
        if info.waited_for is not None:
            info.reason = f"waited for {info.waited_for}, which computed it; {info.reason}"
        if info.prev is None or info.prev.cache_key != info.key:
            self._record_fingerprint(ref, info)
        # output_bytes in the measure of the backend the task runs on (core.sizes), as a
        # computed result's: the stored blob's size is a serialised size, another measure
        return value, self._size_of(i, value)

    def _size_of(self, i: int, value: Any) -> int | None:
        """Node ``i``'s ``output_bytes`` for ``value``, measured as its backend measures a
        computed result (Dask's ``sizeof`` on Dask; see :mod:`nbflow.core.sizes`)."""
        classes = getattr(self.sched, "class_of", None)
        backend = getattr(classes[i], "backend", None) if classes is not None else None
        measure = getattr(backend, "size_of", None)
        return measure(value) if measure is not None else output_size(value)

    async def _lease(self, i: int, ref: Ref, info: NodeCache) -> CacheEntry | None:
        """After a miss: take the key's lease (None: compute it here), or wait for the live
        run that holds it and return the entry it stored (see :mod:`.lease`)."""
        leases, key = self.leases, info.key
        assert leases is not None and key is not None
        if not leases.computing(key, self.run_id):  # alone on the store: no lease needed
            self.held[i] = key
            return None
        await leases.until_ready(self.reader())
        while True:
            got = await anyio.to_thread.run_sync(leases.acquire, key, self.run_id, ref.key)
            if got is True:
                self.held[i] = key
                return None
            if got is not False:  # a live run is computing it: wait for its result
                info.waited_for = got.describe()
                log.info("nbflow: task %s waits for %s, which is computing the same result",
                         ref.key, info.waited_for)
                if await leases.wait(self.reader(), key) == "gone":
                    continue  # its holder stopped without storing it: take it over
            self.store.sync_keys(self.reader())
            return self.store.find(self.reader(), key)

    def release(self, i: int) -> None:
        """Node ``i``'s result is stored, or it ended without one: give up its lease."""
        key = self.held.pop(i, None)
        if key is not None and self.leases is not None:
            self.leases.done(key)

    def on_event(self, e: Any) -> None:
        """Subscriber: a task that ends without a stored result (failed, skipped, cancelled)
        gives up its lease."""
        if not self.held:
            return
        t = type(e)
        if t is ev.TaskFailed or t is ev.TaskCancelled or t is ev.TaskSkipped:
            self.release(e.index)

    on_event.accepts_batches = True  # type: ignore[attr-defined]  # (a TaskBatch is never one of those)

    def _reran(self, j: int) -> bool:
        """Did node j execute in this run (for a collect: did any of its parts)?"""
        if j in self.reran:
            return True
        node = self.sched.nodes[j]
        if node.kind == COLLECT:
            return any(self._reran(p.index) for p in node.args)
        return False

    # -- the commit hook -----------------------------------------------------------------

    async def commit(self, i: int, value: Any, size: int | None) -> int | None:
        """After a successful call: hash the value and, if cacheable, store it.

        Returns ``output_bytes``: ``size``, the backend's measure (never the serialised
        size, which is another measure: :mod:`nbflow.core.sizes`).
        Never raises for a value that cannot be stored: it warns and the task stays
        uncached.
        """
        try:
            return await self._commit(i, value, size)
        finally:
            if self.held:
                self.release(i)  # (queued after the rows that store the result)

    async def _commit(self, i: int, value: Any, size: int | None) -> int | None:
        self.reran.add(i)
        info = self.nodes.get(i)
        store_it = info is not None and info.key is not None
        spec = self.sched.nodes[i].task.spec
        products = file_products(spec) if store_it and spec.writes else []
        if isinstance(value, Remote):  # left on a worker: hashed (and written) there
            out = await anyio.to_thread.run_sync(_prepare_remote, self.store, value, store_it,
                                                 products)
        elif hashing.is_small(value, size) and not products:
            out = _prepare(self.store, value, store_it)
        else:
            out = await anyio.to_thread.run_sync(_prepare, self.store, value, store_it, products)
        digest, hash_error, data, blob, store_error = out[:5]
        n = out[5] if len(out) > 5 else (len(data) if data is not None else None)
        self.digests[i] = digest
        if hash_error is not None:
            self.unhashable[i] = f"the result of {self.sched.nodes[i].key} cannot be hashed ({hash_error})"
        if not store_it:
            return size
        ref = self.sched.nodes[i]
        if store_error is not None or blob is None or n is None:
            info.unstored = store_error  # type: ignore[union-attr]
            _warn_at_task(
                ref,
                f"nbflow: the result of task {ref.key!r} cannot be stored ({store_error}); it will "
                "run again next time. Return a picklable value, or mark the task @nf.task(cache=False)",
            )
            return size
        first = blob not in self._saved_blobs  # (a result equal to an earlier one is one row)
        if first:
            self._saved_blobs.add(blob)
        self.store.save(info.key, blob, data, n, digest, ref.name, self.run_id, time.time(),  # type: ignore[union-attr,arg-type]
                        new_blob=first)
        info.blob = blob  # type: ignore[union-attr]
        info.size = n  # type: ignore[union-attr]
        self._record_fingerprint(ref, info)  # type: ignore[arg-type]
        return size

    def _record_fingerprint(self, ref: Ref, info: NodeCache) -> None:
        code = info.code
        put = self.store.journal.put
        if code.digest not in self._recorded_code:  # type: ignore[union-attr]
            self._recorded_code.add(code.digest)  # type: ignore[union-attr]
            put(PUT_CODE, (code.digest, code.name, dumps(code.parts), dumps(list(code.notes))))  # type: ignore[union-attr]
        put(PUT_FINGERPRINT, (self.workflow, ref.key, ref.name, info.key, code.digest,  # type: ignore[union-attr]
                              info.inputs, info.options, self.run_id, time.time()))

    # -- reasons -------------------------------------------------------------------------

    def previous(self) -> dict[str, Prev]:
        if self._prev is None:
            # (no flush needed: a run returns only once its rows are committed)
            rows = self.reader().execute(
                "SELECT key, cache_key, code, inputs, options, run_id FROM fingerprints WHERE workflow = ?",
                (self.workflow,),
            ).fetchall()
            self._prev = {k: Prev(ck, c, json.loads(inp or "{}"), o, r) for k, ck, c, inp, o, r in rows}
        return self._prev

    def parts_of(self, digest: str) -> dict[str, str] | None:
        if digest not in self._code_parts:
            row = self.reader().execute("SELECT parts FROM code WHERE digest = ?", (digest,)).fetchone()
            self._code_parts[digest] = json.loads(row[0]) if row and row[0] else None
        return self._code_parts[digest]

    # -- what the Run shows --------------------------------------------------------------

    def cached(self, i: int) -> bool:
        """Was node ``i`` served from the cache?"""
        info = self.nodes.get(i)
        return info is not None and info.cached

    def info(self, i: int) -> tuple[str | None, str | None, str | None]:
        """``(reason, cache key, stored result id)`` of node ``i`` (what its events carry)."""
        info = self.nodes.get(i)
        return (None, None, None) if info is None else (info.reason, info.key, info.blob)

    def explain(self, i: int) -> Explanation:
        """The full reason for node ``i``: what was compared, and what differed."""
        return explaining.explain(self.sched.nodes[i], self.nodes.get(i), self.sched.state[i],
                                  self.parts_of, self.store.blobs.path)


def _prepare(store: Store, value: Any, store_it: bool,
             products: list[tuple[str, File]] | None = None) -> tuple[Any, ...]:
    """Hash (and serialise, and write if big) a result; runs in a worker thread if big.
    A task's file products are stored with its value, with their content digests."""
    digest = hash_error = data = blob = store_error = None
    try:
        digest = hashing.value_hash(value)
    except (Unhashable, RecursionError) as e:
        hash_error = str(e)
    if store_it:
        try:
            stored = Products(value, {name: hashing.FILES.of(f) for name, f in products}) \
                if products else value
            data = serialize.dumps(stored)
            blob = hashing.digest(data)
            if len(data) > INLINE_MAX:
                store.blobs.write(blob, data)
        except (serialize.SerializationError, RecursionError, OSError) as e:
            store_error = f"{type(e).__name__}: {e}"
            data = blob = None
    return digest, hash_error, data, blob, store_error


def _prepare_remote(store: Store, value: Remote, store_it: bool,
                    products: list[tuple[str, File]] | None = None) -> tuple[Any, ...]:
    """:func:`_prepare` for a result left on a Dask worker.  When the worker sees the
    store's disk (a local cluster), it hashes, serialises and writes the blob itself and
    sends back only the small facts; otherwise the value is fetched once and prepared here.
    Returns :func:`_prepare`'s tuple plus the serialised size."""
    facts = value.prepared  # what the task did on its worker (engine.backends.dask_cache)
    if facts is not None and not products and len(facts) == 7 and (facts[6] or not store_it):
        return facts[:6]
    root = store.blobs.root
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError:
        pass
    if not products and value.shares_disk(str(root)):  # (same machine: the same user's key)
        return value.on_worker(_prepare_on_worker, store.blobs, store_it, str(signing.key_path()))
    out = _prepare(store, value.fetch(), store_it, products)
    return (*out, len(out[2]) if out[2] is not None else None)


def _prepare_on_worker(value: Any, blobs: Any, store_it: bool, key_file: str) -> tuple[Any, ...]:
    """Runs on the worker: hash, and if cacheable serialise and write the blob (atomic,
    checksummed and signed with the user's key, like any blob); the bytes come back only
    when they are stored inline."""
    with signing.signing_as(key_file):
        return _prepare_signed(value, blobs, store_it)


def _prepare_in_task(value: Any, blobs: Any, store_it: bool, key_file: str,
                     ident: tuple[int, int] | None) -> tuple[Any, ...]:
    """Runs on the worker, in the task that made ``value``: :func:`_prepare_on_worker`'s
    facts, plus whether it stored the value, which it does only when the blob directory it
    sees is the one the cache named (same device and inode: the same machine's disk)."""
    if store_it:
        try:
            st = blobs.root.stat()
            store_it = ident is not None and (st.st_dev, st.st_ino) == tuple(ident)
        except OSError:
            store_it = False
    return (*_prepare_on_worker(value, blobs, store_it, key_file), store_it)


def _prepare_signed(value: Any, blobs: Any, store_it: bool) -> tuple[Any, ...]:
    digest = hash_error = data = blob = store_error = n = None
    try:
        digest = hashing.value_hash(value)
    except (Unhashable, RecursionError) as e:
        hash_error = str(e)
    if store_it:
        try:
            data = serialize.dumps(value)
            blob = hashing.digest(data)
            n = len(data)
            if n > INLINE_MAX:
                blobs.write(blob, data)
                data = None
        except (serialize.SerializationError, RecursionError, OSError) as e:
            store_error = f"{type(e).__name__}: {e}"
            data = blob = n = None
    return digest, hash_error, data, blob, store_error, n


class _NotBound:
    """Stands for the run's state until :meth:`RunCache.bind` is called."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError("RunCache.bind(view) must be called before the cache is used")


_NOT_BOUND: Any = _NotBound()


class Products:
    """A stored result of a task that writes files: its value and, per product, the digest
    of the content it wrote (Snakemake's rule: a missing or changed product re-runs it)."""

    __slots__ = ("digests", "value")

    def __init__(self, value: Any, digests: dict[str, str]) -> None:
        self.value = value
        self.digests = digests

    def __reduce__(self) -> tuple[Any, ...]:
        return (Products, (self.value, self.digests))

    def stale(self) -> str | None:
        """Why the products are not as the task left them (None: they are)."""
        for name, digest in self.digests.items():
            f = File(name[5:] if name.startswith("file:") else name)
            if not f.files():
                return f"its product {name} is missing"
            if hashing.FILES.of(f) != digest:
                return f"its product {name} changed since the task wrote it"
        return None


def _warn_at_task(ref: Any, message: str) -> None:
    """Warn about a task's result at the task's own definition: the warning is raised on the
    run's thread, where a stack level would name nbflow's line, not the user's function."""
    fn = getattr(getattr(getattr(ref, "task", None), "spec", None), "fn", None)
    code = getattr(fn, "__code__", None)
    if code is None:
        warnings.warn(message, NbflowStoreWarning, stacklevel=3)
        return
    warnings.warn_explicit(message, NbflowStoreWarning, code.co_filename, code.co_firstlineno,
                           module=getattr(fn, "__module__", None))
