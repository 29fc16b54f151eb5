"""``explain()`` of a run read back from the store, from what the journal recorded.

A live run explains a task from its cache's in-memory comparison (:mod:`.explain`).  A
stored run has the outcome of that comparison: each attempt's row keeps the short reason
the cache gave (``"code of clean changed"``, ``"input data.csv changed"``, ``"code and
inputs unchanged"``), the cache key and the stored result, and the fingerprint table keeps
the code digest and input digests the task had in that run (while no later run of the same
workflow replaced them).  This module turns those into the same
:class:`~nbflow.core.explain.Explanation` a live run gives, whose ``reason`` is the very
text the live run showed; the part-by-part ``changes`` are only known live, and are empty.
"""

from __future__ import annotations

import difflib
import json
from typing import TYPE_CHECKING, Any

from ..core.explain import Explanation
from ..core.kinds import CACHEABLE, COLLECT, MAP
from .explain import short

if TYPE_CHECKING:
    from .history import StoredRun


def explain_node(run: StoredRun, key: str, task: str, kind: str | None) -> Explanation:
    """Why task ``key`` of the stored ``run`` ran or was served from the cache."""
    if kind in (COLLECT, MAP):
        return Explanation(key, task, False, "collects the results of its items; never cached",
                           [], f"{key}: collects the results of its items (not cached itself)")
    if kind is not None and kind not in CACHEABLE:
        what = f"a {kind} node, resolved by the scheduler itself (not cached)"
        return Explanation(key, task, False, None, [], f"{key}: {what}")
    q = run.store.journal.query
    rows = q("SELECT attempt, state, cached, reason, cache_key, blob, duration_s, error FROM task_runs "
             "WHERE run_id = ? AND key = ? ORDER BY attempt", (run.id, key))
    final = [r for r in rows if r[1] != "retried"] or rows
    if not final:
        return Explanation(key, task, False, None, [], f"{key}: not looked up (it never started)")
    attempt, state, cached, reason, cache_key, blob, dur, error = final[-1]
    if state == "skipped":  # (a skipped task's row keeps why it was skipped as its error)
        return Explanation(key, task, False, None, [], f"{key}: skipped: {error}")
    reason = reason or "cache off"
    verdict = "cache hit" if cached else "ran"
    lines = [f"{key} (task {task}): {verdict}: {reason}"]
    lines.append(f"  state     {state} after {attempt} attempt(s)"
                 + (f", {dur:.3f} s" if dur is not None else ""))
    fp = q("SELECT code, inputs FROM fingerprints WHERE workflow = ? AND key = ? AND run_id = ?",
           (run.name, key, run.id))
    if fp:
        lines.append(f"  code      {short(fp[0][0])}")
        inputs = json.loads(fp[0][1] or "{}")
        lines.append("  inputs    " + (", ".join(f"{k} {short(v)}" for k, v in inputs.items()) or "none"))
    if cache_key:
        before = q("SELECT t.run_id, t.cache_key FROM task_runs t JOIN runs r ON r.id = t.run_id "
                   "WHERE r.name = ? AND t.key = ? AND r.start < ? AND t.cache_key IS NOT NULL "
                   "ORDER BY r.start DESC LIMIT 1", (run.name, key, run.started_at))
        prev = f" (before: {short(before[0][1])}, run {before[0][0]})" if before else ""
        same = " - unchanged" if before and before[0][1] == cache_key else ""
        lines.append(f"  cache key {short(cache_key)}{prev}{same}")
    if blob:
        lines.append(f"  result    stored ({short(blob)})")
    if error:
        lines.append("  error     " + str(error).strip().splitlines()[-1])
    return Explanation(key, task, bool(cached), reason, [], "\n".join(lines))


def targets(run: StoredRun, what: Any) -> list[int]:
    """Node positions ``what`` names: a Ref (its key), a task key, a task name, or a Task."""
    rows = run._load()
    key = getattr(what, "key", None)
    spec = getattr(what, "spec", None)
    name = key if isinstance(key, str) else (spec.name if spec is not None else what)
    if not isinstance(name, str):
        raise TypeError(f"explain takes a Ref, a task key, a task name or a Task, not {what!r}")
    found = [j for j, k in enumerate(rows["key"]) if k == name]
    if not found:
        found = [j for j, (t, kind) in enumerate(zip(rows["task"], rows["kind"], strict=True))
                 if t == name and kind not in (MAP, COLLECT)]
    if not found:
        tasks = sorted({t for t, kind in zip(rows["task"], rows["kind"], strict=True)
                        if isinstance(t, str) and kind not in (MAP, COLLECT)})
        close = difflib.get_close_matches(name, [*tasks, *rows["key"]], n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        more = ", ..." if len(tasks) > 20 else ""
        raise KeyError(f"no task or task key {name!r} in run {run.id} (its tasks: "
                       f"{', '.join(tasks[:20]) or 'none'}{more}){hint}")
    return found
