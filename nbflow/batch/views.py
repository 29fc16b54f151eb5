"""``nbflow report``, ``nbflow show`` and ``nbflow explain``: stored runs on the terminal.

``show`` prints a run's (or a batch run's) summary, tasks and errors as text; ``explain``
says why one task of a stored run ran or was served from the cache, comparing its cache key
with the same task's key in the previous run of the same workflow; ``report`` writes the
HTML file of :mod:`.report`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path
from typing import Any

from ..store.history import load_run
from . import records


def _home(args: argparse.Namespace) -> None:
    if getattr(args, "home", None):
        os.environ["NBFLOW_HOME"] = args.home


def cmd_report(args: argparse.Namespace) -> int:
    from .report import render_html

    _home(args)
    text = render_html(args.run)
    out = Path(args.html or f"nbflow-report-{args.run}.html")
    out.write_text(text, encoding="utf-8")
    print(out)
    return 0


def _run_text(run: Any, params: dict[str, Any]) -> str:
    from ..notebook.render import summary_text
    from ..notebook.stored import error_text, model_of

    model = model_of(run)
    lines = [f"run {run.id}  workflow {run.name}  {run.status}", summary_text(model)]
    if params:
        lines.append("parameters: " + " ".join(f"{k}={v!r}" for k, v in params.items()))
    tasks = run.tasks[["key", "state", "attempts", "duration_s", "cached", "reason", "error"]]
    lines += ["", tasks.to_string(index=False, max_colwidth=60)]
    for key, err in run.errors().items():
        lines += ["", f"{key} failed:", error_text(err)]
    return "\n".join(lines)


def cmd_show(args: argparse.Namespace) -> int:
    _home(args)
    store = records.require_store()
    params = records.params_of_runs(store)
    batch = records.batch(store, args.run) if args.run.startswith("b") else None
    if batch is not None:
        print(f"batch {batch['id']}  {batch['status']}  notebook {batch['notebook']}")
        print(f"  output {batch['output']}, duration {batch['duration_s'] or math.nan:.2f} s")
        print(f"  parameters {json.dumps(batch['parameters'], default=str)}")
        if batch["error"]:
            print(f"  error: {batch['error']}")
        for r in records.runs_of_batch(store, batch["id"]):
            print()
            print(_run_text(load_run(r), params.get(r, {})))
        return 0
    run = load_run(args.run)
    print(_run_text(run, params.get(run.id, {})))
    return 0


def explain_text(run_id: str, task: str) -> str:
    """Why task ``task`` (a key, or a task name) of stored run ``run_id`` ran or hit the cache."""
    run = load_run(run_id)
    store = run.store
    rows = store.journal.query(
        "SELECT t.key, n.task, t.attempt, t.state, t.cached, t.reason, t.cache_key, t.blob, t.duration_s, "
        "t.error FROM task_runs t JOIN nodes n ON n.run_id = t.run_id AND n.idx = t.idx "
        "WHERE t.run_id = ? AND (t.key = ? OR n.task = ?) ORDER BY t.idx, t.attempt",
        (run.id, task, task),
    )
    if not rows:
        raise KeyError(f"no task {task!r} in run {run.id} (give a key such as 'clean-0' or a task name)")
    out = []
    for key in dict.fromkeys(r[0] for r in rows):
        mine = [r for r in rows if r[0] == key]
        final = mine[-1]
        _, name, attempt, state, cached, reason, cache_key, blob, dur, error = final
        verb = "served from the cache" if cached else ("ran" if state in ("completed", "failed") else state)
        out.append(f"{key} (task {name}): {verb}: {reason or 'no reason recorded'}")
        out.append(
            f"  state     {state} after {attempt} attempt(s)" + (f", {dur:.3f} s" if dur is not None else "")
        )
        before = store.journal.query(
            "SELECT t.run_id, t.cache_key FROM task_runs t JOIN runs r ON r.id = t.run_id "
            "WHERE r.name = ? AND t.key = ? AND r.start < ? AND t.cache_key IS NOT NULL "
            "ORDER BY r.start DESC LIMIT 1",
            (run.name, key, run.started_at),
        )
        if cache_key:
            prev = (
                f" (before: {before[0][1]}, run {before[0][0]})" if before else " (no earlier run stored one)"
            )
            same = " — unchanged" if before and before[0][1] == cache_key else ""
            out.append(f"  cache key {cache_key}{prev}{same}")
        fp = store.journal.query(
            "SELECT code, inputs FROM fingerprints WHERE workflow = ? AND key = ? AND run_id = ?",
            (run.name, key, run.id),
        )
        if fp:
            out.append(f"  code      {fp[0][0]}")
            inputs = json.loads(fp[0][1] or "{}")
            out.append("  inputs    " + (", ".join(f"{k} {v}" for k, v in inputs.items()) or "none"))
        if blob:
            out.append(f"  result    {blob}")
        if error:
            out.append("  error     " + str(error).strip().splitlines()[-1])
    return "\n".join(out)


def cmd_explain(args: argparse.Namespace) -> int:
    _home(args)
    print(explain_text(args.run, args.task))
    return 0
