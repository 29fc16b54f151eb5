"""The result cache of one run: look up before a task runs, commit after it succeeds.

The scheduler calls two hooks (and nothing else) from its ``_execute``:

* :meth:`RunCache.lookup` before calling the backend.  It builds the task's **cache key**,
  ``hash(code fingerprint, input content hashes with argument names, result-affecting
  options)``, and if the store has a result for it, loads and verifies it; the scheduler
  then completes the task with ``TaskCompleted(cached=True)`` and never calls the backend.
* :meth:`RunCache.commit` after a successful call.  It computes the **content hash of the
  value** (once, before any downstream task can see, let alone mutate, the value), and
  when the task is cacheable serialises it, writes the file (big values, in a worker
  thread: temp file, fsync, rename) and queues the journal rows that commit it.

Because a downstream key is built from the content hashes of its upstream *values*, a
task whose upstream re-ran but produced an equal value hits (early cutoff).

Every lookup leaves a **reason** a person can read: ``"never ran"``, ``"code of clean
changed (function normalize)"``, ``"input df changed"``, ``"forced"``, ``"cache off"``,
or for a hit ``"code and inputs unchanged"``.  The reason compares the new key's parts
with those recorded for the same task (workflow name + task key) the last time it was
stored; :meth:`RunCache.explain` gives the full comparison.

Integrity: a stored result whose checksum fails is reported (a warning naming the task),
dropped, and recomputed; with ``strict=True`` the run fails with
:class:`StoreIntegrityError` instead.
"""

from __future__ import annotations

import inspect
import json
import time
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import anyio

from ..engine.backends.base import cheap_size
from ..engine.errors import NbflowError, WorkflowDefinitionError
from ..engine.graph import COLLECT, MAP, TASK, UNDO, Ref
from . import hashing, serialize
from .blobs import BlobCorrupt, BlobMissing
from .fingerprint import CodeFingerprint, code_fingerprint, diff_parts
from .journal import dumps
from .store import INLINE_MAX, PUT_CODE, PUT_FINGERPRINT, NbflowStoreWarning, Store

if TYPE_CHECKING:
    from ..engine.run import Run
    from ..engine.scheduler import Scheduler

KEY_FORMAT = "k1"  # bump to make every existing key miss (a change in how keys are built)
# TaskSpec fields that change a task's result, and so belong in its key.  No option of
# today's TaskSpec does (retries, timeouts, executors and resources do not change what a
# function returns); a ``version=`` option, when it exists, is picked up here.
RESULT_OPTIONS = ("version",)
_CONTAINERS = (list, tuple, dict, set, frozenset)


class StoreIntegrityError(NbflowError):
    """A stored result failed its checksum and the run was started with ``strict=True``."""


class _Prev(NamedTuple):
    cache_key: str
    code: str
    inputs: dict[str, str]
    options: str
    run_id: str


@dataclass(slots=True)
class NodeCache:
    """What the cache knows about one node of this run."""

    cached: bool = False
    reason: str | None = None
    key: str | None = None
    code: CodeFingerprint | None = None
    inputs: dict[str, str] | None = None
    options: str | None = None
    blob: str | None = None
    size: int | None = None
    prev: _Prev | None = None
    forced_by: str | None = None
    upstream_reran: list[str] = field(default_factory=list)
    unstored: str | None = None


class RunCache:
    """The cache hooks of one run (created by the Run, called by its Scheduler)."""

    def __init__(self, store: Store, run: Run) -> None:
        self.store = store
        self.run = run
        self.strict = bool(getattr(run, "strict", False))
        self.workflow = run.name
        self.sched: Scheduler | None = None
        self.nodes: dict[int, NodeCache] = {}
        self.digests: dict[int, str | None] = {}
        self.unhashable: dict[int, str] = {}
        self.reran: set[int] = set()
        self._conn: Any = None
        self._code: dict[int, tuple[Any, CodeFingerprint]] = {}
        self._params: dict[int, tuple[Any, list[str], str | None]] = {}
        self._opts: dict[int, tuple[Any, str]] = {}
        self._saved_blobs: set[str] = set()
        self._synced = False
        self._prev: dict[str, _Prev] | None = None
        self._code_parts: dict[str, dict[str, str] | None] = {}
        self._recorded_code: set[str] = set()
        self._n0 = 0
        self._forced: list[bool] = []
        self._forced_by: list[str | None] = []
        self._forced_names: set[str] = set()

    # -- set-up --------------------------------------------------------------------------

    def attach(self, sched: Scheduler) -> None:
        self.sched = sched
        self._n0 = len(sched.nodes)
        if getattr(self.run, "rerun", None):
            self._resolve_rerun(self.run.rerun)

    def _resolve_rerun(self, items: Any) -> None:
        from ..engine.spec import Task

        nodes = self.sched.nodes  # type: ignore[union-attr]
        if isinstance(items, (str, Ref, Task)):
            items = [items]
        roots: dict[int, str] = {}
        names: set[str] = set()
        task_names = {r.task.spec.name for r in nodes if r.task is not None}
        keys = {r.key: r.index for r in nodes}
        for it in items:
            if type(it) is Ref:
                if it.wf is not self.run.workflow:
                    raise WorkflowDefinitionError(f"rerun: {it.key} belongs to another workflow")
                roots[it.index] = it.key
            elif isinstance(it, Task):
                if it.spec.name not in task_names:
                    raise WorkflowDefinitionError(
                        f"rerun: task {it.spec.name!r} is not in workflow {self.workflow!r}")
                names.add(it.spec.name)
            elif isinstance(it, str):
                if it in keys:
                    roots[keys[it]] = it
                elif it in task_names:
                    names.add(it)
                else:
                    raise WorkflowDefinitionError(
                        f"rerun: no task or task key {it!r} in workflow {self.workflow!r} "
                        f"(tasks: {sorted(task_names)[:20]})"
                    )
            else:
                raise TypeError(f"rerun takes tasks, task names, task keys or Refs, not {type(it).__name__}")
        self._forced_names = names
        n = self._n0
        forced = [False] * n
        by: list[str | None] = [None] * n
        for i in _topological(nodes):
            r = nodes[i]
            if i in roots:
                by[i] = roots[i]
            elif r.task is not None and r.task.spec.name in names:
                by[i] = r.task.spec.name
            else:
                for d in r.deps:
                    if forced[d]:
                        by[i] = f"{nodes[d].key} (upstream)" if by[d] and "upstream" not in by[d] else by[d]
                        break
            forced[i] = by[i] is not None
        self._forced, self._forced_by = forced, by

    def _forced_reason(self, i: int) -> str | None:
        if not self._forced and not self._forced_names:
            return None
        if i < self._n0:
            return self._forced_by[i]
        sched = self.sched
        ref = sched.nodes[i]  # type: ignore[union-attr]
        if ref.task is not None and ref.task.spec.name in self._forced_names:
            return ref.task.spec.name
        for s in sched.succs[i]:  # type: ignore[union-attr]  # an expanded map item: its map
            if s < self._n0 and self._forced[s]:
                return self._forced_by[s]
        return None

    def _reader(self) -> Any:
        if self._conn is None:
            self._conn = self.store.journal.reader()
        return self._conn

    def close(self) -> None:
        """Release the read connection (the run has finished)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    # -- keys ----------------------------------------------------------------------------

    def _code_of(self, fn: Any) -> CodeFingerprint:
        hit = self._code.get(id(fn))
        if hit is None:
            hit = self._code[id(fn)] = (fn, code_fingerprint(fn))
        return hit[1]

    def _param_names(self, fn: Any) -> tuple[list[str], str | None]:
        hit = self._params.get(id(fn))
        if hit is None:
            names: list[str] = []
            var: str | None = None
            try:
                for p in inspect.signature(fn).parameters.values():
                    if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
                        names.append(p.name)
                    elif p.kind == p.VAR_POSITIONAL:
                        var = p.name
            except (TypeError, ValueError):
                pass
            hit = self._params[id(fn)] = (fn, names, var)
        return hit[1], hit[2]

    def _arg_refs(self, ref: Ref) -> list[int]:
        if ref.nested == 0:
            return []
        out: list[int] = []
        stack: list[Any] = list(ref.args) + (list(ref.kwargs.values()) if ref.kwargs else [])
        while stack:
            a = stack.pop()
            t = type(a)
            if t is Ref:
                out.append(a.index)
            elif ref.nested == 2 and t in _CONTAINERS:
                stack.extend(a.values() if t is dict else a)
        return out

    async def _ensure_digest(self, j: int) -> None:
        if j in self.digests:
            return
        sched = self.sched
        node = sched.nodes[j]  # type: ignore[union-attr]
        if node.kind == COLLECT:
            for p in node.args:
                await self._ensure_digest(p.index)
            bad = [p.key for p in node.args if self.digests.get(p.index) is None]
            if bad:
                self.digests[j] = None
                self.unhashable[j] = f"the result of {bad[0]} cannot be hashed"
            else:
                self.digests[j] = hashing.combine("collect", *[self.digests[p.index] for p in node.args])
            return
        value = sched.results[j]  # type: ignore[union-attr]
        try:
            if hashing.is_small(value, sched.output_bytes[j]):  # type: ignore[union-attr]
                d = hashing.value_hash(value)
            else:
                d = await anyio.to_thread.run_sync(hashing.value_hash, value)
        except (hashing.Unhashable, RecursionError) as e:
            self.digests[j] = None
            self.unhashable[j] = f"the result of {node.key} cannot be hashed ({e})"
            return
        self.digests[j] = d

    def _input_digest(self, a: Any, nested: int) -> str:
        t = type(a)
        if t is Ref:
            d = self.digests.get(a.index)
            if d is None:
                raise hashing.Unhashable(self.unhashable.get(a.index, "no content hash"))
            return d
        if nested == 2 and t in _CONTAINERS:
            if t is dict:
                items = [hashing.value_hash(k) + self._input_digest(v, 2) for k, v in a.items()]
                return hashing.combine("d", *items)
            parts = [self._input_digest(x, 2) for x in a]
            if t is set or t is frozenset:
                parts.sort()
            return hashing.combine(t.__name__, *parts)
        return hashing.value_hash(a)

    def _options(self, spec: Any) -> str:
        hit = self._opts.get(id(spec))
        if hit is None:
            vals = [f"{n}={getattr(spec, n, None)!r}" for n in RESULT_OPTIONS]
            hit = self._opts[id(spec)] = (spec, hashing.combine(KEY_FORMAT, *vals))
        return hit[1]

    def _inputs(self, ref: Ref) -> dict[str, str]:
        """Argument name -> content hash of every input (raises Unhashable, naming it)."""
        names, var = self._param_names(ref.task.spec.fn)  # type: ignore[union-attr]
        nested = ref.nested
        digests = self.digests
        out: dict[str, str] = {}
        name = "?"
        try:
            for k, a in enumerate(ref.args):
                name = names[k] if k < len(names) else (f"{var}[{k - len(names)}]" if var else f"arg{k}")
                if type(a) is Ref:
                    d = digests.get(a.index)
                    out[name] = d if d is not None else self._input_digest(a, nested)
                else:
                    out[name] = self._input_digest(a, nested)
            if ref.kwargs:
                for name, a in sorted(ref.kwargs.items()):
                    out[name] = self._input_digest(a, nested)
        except hashing.Unhashable as e:
            e.args = (name, *e.args)
            raise
        return out

    # -- the lookup hook -----------------------------------------------------------------

    async def lookup(self, i: int) -> tuple[Any, int | None] | None:
        """A hit's ``(value, output_bytes)``, or None: the task must run (see ``reason``)."""
        sched = self.sched
        ref = sched.nodes[i]  # type: ignore[union-attr]
        spec = ref.task.spec  # type: ignore[union-attr]
        info = self.nodes[i] = NodeCache()
        if not spec.cache:
            info.reason = "cache off"
            return None
        refs = self._arg_refs(ref) if ref.nested else ()
        digests = self.digests
        for j in refs:
            if j not in digests:
                await self._ensure_digest(j)
        try:
            info.code = self._code_of(spec.fn)
            inputs = self._inputs(ref)
        except (hashing.Unhashable, RecursionError) as e:
            name, *why = e.args if isinstance(e, hashing.Unhashable) and len(e.args) > 1 else ("?", e)
            info.reason = f"input {name} cannot be hashed"
            warnings.warn(
                f"nbflow: task {ref.key!r}: input {name!r} cannot be hashed ({'; '.join(map(str, why))}), "
                "so its result is not cached; pass a picklable value, or mark the task "
                "@nf.task(cache=False)",
                NbflowStoreWarning, stacklevel=2,
            )
            return None
        info.inputs = inputs
        info.options = self._options(spec)
        info.key = hashing.combine("key", info.code.digest, info.options,
                                   *[f"{k}={v}" for k, v in inputs.items()])
        if refs and self.reran:
            info.upstream_reran = [sched.nodes[j].key for j in refs if self._reran(j)]  # type: ignore[union-attr]
        forced = self._forced_reason(i) if self._forced or self._forced_names else None
        if forced is not None:
            info.forced_by = forced
            info.reason = "forced"
            return None
        info.prev = self._previous().get(ref.key)
        if not self._synced:  # once per run: learn which keys other runs stored meanwhile
            self._synced = True
            self.store.sync_keys(self._reader())
        entry = self.store.find(self._reader(), info.key)
        if entry is None:
            info.reason = self._miss_reason(ref.name, info)
            return None
        try:
            if entry.inline is not None:
                value = serialize.loads(self.store.load(entry))
            else:
                value = await anyio.to_thread.run_sync(lambda: serialize.loads(self.store.load(entry)))
        except BlobMissing:
            self.store.forget(entry.blob)
            info.reason = "stored result is missing (removed by gc or by hand)"
            return None
        except BlobCorrupt as e:
            self.store.forget(entry.blob)
            msg = (f"the stored result of task {ref.key!r} (workflow {self.workflow!r}) failed its "
                   f"integrity check ({entry.blob}: {e})")
            if self.strict:
                await self._fail_run(StoreIntegrityError(msg + "; strict=True, so the run stops"))
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
        info.reason = self._hit_reason(info)
        if info.prev is None or info.prev.cache_key != info.key:
            self._record_fingerprint(ref, info)
        size = cheap_size(value)
        return value, size if size is not None else entry.size

    def _reran(self, j: int) -> bool:
        """Did node j execute in this run (for a collect: did any of its parts)?"""
        if j in self.reran:
            return True
        node = self.sched.nodes[j]  # type: ignore[union-attr]
        if node.kind == COLLECT:
            return any(self._reran(p.index) for p in node.args)
        return False

    async def _fail_run(self, error: BaseException) -> None:
        run = self.run
        if run.error is None:
            run.error = error
        scope = getattr(run, "_scope", None)
        if scope is not None:
            scope.cancel()
        else:  # pragma: no cover - a run always has its scope while tasks run
            self.sched.tg.cancel_scope.cancel()  # type: ignore[union-attr]
        await anyio.lowlevel.checkpoint()  # raises the cancellation right here

    # -- the commit hook -----------------------------------------------------------------

    async def commit(self, i: int, value: Any, size: int | None) -> int | None:
        """After a successful call: hash the value and, if cacheable, store it.

        Returns ``output_bytes`` (the serialised size when the backend did not know one).
        Never raises for a value that cannot be stored: it warns and the task stays
        uncached.
        """
        self.reran.add(i)
        info = self.nodes.get(i)
        store_it = info is not None and info.key is not None
        if hashing.is_small(value, size):
            out = _prepare(self.store, value, store_it)
        else:
            out = await anyio.to_thread.run_sync(_prepare, self.store, value, store_it)
        digest, hash_error, data, blob, store_error = out
        self.digests[i] = digest
        if hash_error is not None:
            self.unhashable[i] = f"the result of {self.sched.nodes[i].key} cannot be hashed ({hash_error})"  # type: ignore[union-attr]
        if not store_it:
            return size
        ref = self.sched.nodes[i]  # type: ignore[union-attr]
        if store_error is not None or blob is None or data is None:
            info.unstored = store_error  # type: ignore[union-attr]
            warnings.warn(
                f"nbflow: the result of task {ref.key!r} cannot be stored ({store_error}); it will "
                "run again next time. Return a picklable value, or mark the task @nf.task(cache=False)",
                NbflowStoreWarning, stacklevel=2,
            )
            return size
        n = len(data)
        first = blob not in self._saved_blobs  # (a result equal to an earlier one is one row)
        if first:
            self._saved_blobs.add(blob)
        self.store.save(info.key, blob, data, n, digest, ref.name, self.run.id, time.time(),  # type: ignore[union-attr,arg-type]
                        new_blob=first)
        info.blob = blob  # type: ignore[union-attr]
        info.size = n  # type: ignore[union-attr]
        self._record_fingerprint(ref, info)  # type: ignore[arg-type]
        return size if size is not None else n

    def _record_fingerprint(self, ref: Ref, info: NodeCache) -> None:
        code = info.code
        put = self.store.journal.put
        if code.digest not in self._recorded_code:  # type: ignore[union-attr]
            self._recorded_code.add(code.digest)  # type: ignore[union-attr]
            put(PUT_CODE, (code.digest, code.name, dumps(code.parts), dumps(list(code.notes))))  # type: ignore[union-attr]
        put(PUT_FINGERPRINT, (self.workflow, ref.key, ref.name, info.key, code.digest,  # type: ignore[union-attr]
                              info.inputs, info.options, self.run.id, time.time()))

    # -- reasons -------------------------------------------------------------------------

    def _previous(self) -> dict[str, _Prev]:
        if self._prev is None:
            # (no flush needed: a run returns only once its rows are committed)
            rows = self._reader().execute(
                "SELECT key, cache_key, code, inputs, options, run_id FROM fingerprints WHERE workflow = ?",
                (self.workflow,),
            ).fetchall()
            self._prev = {k: _Prev(ck, c, json.loads(inp or "{}"), o, r) for k, ck, c, inp, o, r in rows}
        return self._prev

    def _parts_of(self, digest: str) -> dict[str, str] | None:
        if digest not in self._code_parts:
            row = self._reader().execute("SELECT parts FROM code WHERE digest = ?", (digest,)).fetchone()
            self._code_parts[digest] = json.loads(row[0]) if row and row[0] else None
        return self._code_parts[digest]

    def _code_changes(self, info: NodeCache) -> list[tuple[str, str | None, str | None]]:
        if info.prev is None or info.code is None or info.prev.code == info.code.digest:
            return []
        old = self._parts_of(info.prev.code)
        if old is None:
            return [("code", info.prev.code, info.code.digest)]
        return diff_parts(old, info.code.parts)

    def _input_changes(self, info: NodeCache) -> list[tuple[str, str | None, str | None]]:
        if info.prev is None or info.inputs is None:
            return []
        return diff_parts(info.prev.inputs, info.inputs)

    def _miss_reason(self, task: str, info: NodeCache) -> str:
        prev = info.prev
        if prev is None:
            return self._with_notes("never ran", info)
        if prev.cache_key == info.key:
            return "stored result is missing (removed by gc, or its run stopped before saving it)"
        why = []
        code = self._code_changes(info)
        if code or (info.code is not None and prev.code != info.code.digest):
            own = f"function {info.code.name}" if info.code else ""
            others = [label for label, _, _ in code if label != own]
            detail = ", ".join(others[:2]) + (", ..." if len(others) > 2 else "")
            why.append(f"code of {task} changed" + (f" ({detail})" if others else ""))
        changed = [label for label, _, _ in self._input_changes(info)]
        if changed:
            noun = "input" if len(changed) == 1 else "inputs"
            why.append(f"{noun} {', '.join(changed[:3])}{', ...' if len(changed) > 3 else ''} changed")
        if prev.options != info.options:
            why.append("options changed")
        if not why:
            why.append("cache key format changed")
        return self._with_notes("; ".join(why), info)

    def _with_notes(self, reason: str, info: NodeCache) -> str:
        if info.code is not None and info.code.notes:
            return f"{reason} [{'; '.join(info.code.notes)}]"
        return reason

    def _hit_reason(self, info: NodeCache) -> str:
        if info.upstream_reran:
            return (f"inputs unchanged although {', '.join(info.upstream_reran[:2])} re-ran "
                    "(early cutoff)")
        if info.prev is not None and info.prev.cache_key != info.key:
            return "code and inputs match an earlier stored result"
        return "code and inputs unchanged"

    # -- what the Run shows --------------------------------------------------------------

    def cached_column(self, n: int) -> list[bool]:
        nodes = self.nodes
        return [nodes[i].cached if i in nodes else False for i in range(n)]

    def reason_column(self, n: int) -> list[str | None]:
        nodes = self.nodes
        return [nodes[i].reason if i in nodes else None for i in range(n)]

    def explain(self, i: int) -> Explanation:
        """The full reason for node ``i``: what was compared, and what differed."""
        sched = self.sched
        ref = sched.nodes[i]  # type: ignore[union-attr]
        info = self.nodes.get(i)
        if ref.kind in (COLLECT, MAP):
            return Explanation(ref.key, ref.name, False, "collects the results of its items; never cached",
                               [], f"{ref.key}: collects the results of its items (not cached itself)")
        if info is None and (ref.kind not in (TASK, UNDO) or ref.task is None):
            what = f"a {ref.kind} node, resolved by the scheduler itself (not cached)"
            return Explanation(ref.key, ref.name, False, None, [], f"{ref.key}: {what}")
        if info is None:
            state = sched.state[i]  # type: ignore[union-attr]
            return Explanation(ref.key, ref.name, False, None, [], f"{ref.key}: not looked up ({state})")
        lines = []
        verdict = "cache hit" if info.cached else "ran"
        lines.append(f"{ref.key} (task {ref.name}): {verdict}: {info.reason}")
        changes: list[tuple[str, str | None, str | None]] = []
        if info.forced_by is not None:
            lines.append(f"  forced    by rerun={info.forced_by!r}")
        if info.code is not None:
            code = self._code_changes(info)
            changes += [(f"code: {label}", a, b) for label, a, b in code]
            if info.prev is None:
                lines.append(f"  code      {_short(info.code.digest)} (nothing stored before to compare)")
            elif code:
                lines.append("  code      changed:")
                lines += [f"              {label}: {_short(a)} -> {_short(b)}" for label, a, b in code]
            elif info.prev.code != info.code.digest:
                lines.append(f"  code      changed: {_short(info.prev.code)} -> {_short(info.code.digest)}")
            else:
                lines.append(f"  code      unchanged ({_short(info.code.digest)})")
            for note in info.code.notes:
                lines.append(f"  note      {note}")
        if info.inputs is not None:
            inp = self._input_changes(info)
            changes += [(f"input {label}", a, b) for label, a, b in inp]
            if inp:
                lines.append("  inputs    changed:")
                lines += [f"              {label}: {_short(a)} -> {_short(b)}" for label, a, b in inp]
            elif info.inputs:
                lines.append("  inputs    " + ("unchanged: " if info.prev else "")
                             + ", ".join(f"{k} {_short(v)}" for k, v in info.inputs.items()))
            else:
                lines.append("  inputs    none")
            if info.upstream_reran:
                lines.append(f"  upstream  re-ran this run: {', '.join(info.upstream_reran)}")
        if info.prev is not None and info.options is not None and info.prev.options != info.options:
            changes.append(("options", info.prev.options, info.options))
            lines.append(f"  options   changed: {_short(info.prev.options)} -> {_short(info.options)}")
        if info.key is not None:
            before = f" (before: {_short(info.prev.cache_key)}, run {info.prev.run_id})" if info.prev else ""
            lines.append(f"  cache key {_short(info.key)}{before}")
        if info.blob is not None:
            where = "inline in the journal" if (info.size or 0) <= INLINE_MAX else \
                str(self.store.blobs.path(info.blob))
            lines.append(f"  result    {info.size} bytes, {where}")
        elif info.unstored:
            lines.append(f"  result    not stored: {info.unstored}")
        return Explanation(ref.key, ref.name, info.cached, info.reason, changes, "\n".join(lines))


def _prepare(store: Store, value: Any, store_it: bool) -> tuple[Any, ...]:
    """Hash (and serialise, and write if big) a result; runs in a worker thread if big."""
    digest = hash_error = data = blob = store_error = None
    try:
        digest = hashing.value_hash(value)
    except (hashing.Unhashable, RecursionError) as e:
        hash_error = str(e)
    if store_it:
        try:
            data = serialize.dumps(value)
            blob = hashing.digest(data)
            if len(data) > INLINE_MAX:
                store.blobs.write(blob, data)
        except (serialize.SerializationError, RecursionError, OSError) as e:
            store_error = f"{type(e).__name__}: {e}"
            data = blob = None
    return digest, hash_error, data, blob, store_error


def _short(d: str | None) -> str:
    if d is None:
        return "(none)"
    return d if len(d) <= 13 else d[:13] + "…"


def _topological(nodes: list[Ref]) -> list[int]:
    n = len(nodes)
    indeg = [0] * n
    succs: list[list[int]] = [[] for _ in range(n)]
    for r in nodes:
        for d in r.deps:
            if d < n:
                indeg[r.index] += 1
                succs[d].append(r.index)
    order = [i for i in range(n) if indeg[i] == 0]
    k = 0
    while k < len(order):
        for s in succs[order[k]]:
            indeg[s] -= 1
            if indeg[s] == 0:
                order.append(s)
        k += 1
    return order


@dataclass(frozen=True)
class Explanation:
    """Why a task ran or hit the cache: ``reason`` in short, ``changes`` part by part.

    ``changes`` lists ``(part, before, now)`` for every fingerprint part that differs from
    what was stored last time (``"code: function normalize"``, ``"input df"``, ...).
    ``str()`` gives the full text.
    """

    key: str
    task: str
    cached: bool
    reason: str | None
    changes: list[tuple[str, str | None, str | None]]
    text: str

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return self.text

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(self.text)


@dataclass(frozen=True)
class Explanations:
    """Explanations of several nodes (a task name that matched more than one)."""

    items: list[Explanation]

    def __str__(self) -> str:
        return "\n\n".join(e.text for e in self.items)

    __repr__ = __str__

    def __iter__(self) -> Any:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, k: int) -> Explanation:
        return self.items[k]

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(str(self))


def explain(run: Run, what: Any) -> Explanation | Explanations:
    """``run.explain(what)``: see :meth:`RunCache.explain`.  ``what`` is a Ref, a task key,
    a task name or a Task; a name matching several tasks gives :class:`Explanations`."""
    from ..engine.spec import Task

    sched = run._sched
    nodes = sched.nodes
    if type(what) is Ref:
        if what.wf is not run.workflow:
            raise KeyError(f"{what.key} belongs to workflow {what.wf.name!r}, not to this run's")
        targets = [what.index]
    else:
        name = what.spec.name if isinstance(what, Task) else what
        if not isinstance(name, str):
            raise TypeError(f"explain takes a Ref, a task key, a task name or a Task, not {what!r}")
        targets = [r.index for r in nodes if r.key == name]
        if not targets:
            targets = [r.index for r in nodes if r.task is not None and r.task.spec.name == name
                       and r.kind != MAP]
        if not targets:
            raise KeyError(f"no task or task key {name!r} in run {run.id}")
    cache: RunCache | None = getattr(run, "_cache", None)
    out = []
    for i in targets:
        if cache is not None:
            out.append(cache.explain(i))
        else:
            why = "wf.run(cache=False)" if not run.cache else "no usable store (see the warning)"
            r = nodes[i]
            out.append(Explanation(r.key, r.name, False, "cache off", [], f"{r.key}: ran: cache off ({why})"))
    return out[0] if len(out) == 1 else Explanations(out)
