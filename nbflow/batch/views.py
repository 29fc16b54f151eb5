"""``nbflow report``, ``nbflow show`` and ``nbflow explain``: stored runs on the terminal.

``show`` prints a run's (or a batch run's) summary, tasks and errors as text; ``explain``
prints ``StoredRun.explain`` (why one task of a stored run ran or was served from the cache,
its cache key against the same task's key in the previous run of the same workflow), so the
command and ``nf.load_run(id).explain(key)`` word it alike; ``report`` writes the HTML file
of :mod:`.report`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import reprlib
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


# Parameters shown in a line of text: a value resolved from another notebook's outputs (a
# whole DataFrame's repr) would fill the terminal, so long values are shortened with "...".
_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 40


def short_repr(value: Any) -> str:
    """``repr(value)``, long strings and containers shortened (for parameters in tables)."""
    return _SHORT.repr(value)


def _run_text(run: Any, params: dict[str, Any]) -> str:
    from ..notebook.render import summary_text
    from ..notebook.stored import error_text, model_of

    model = model_of(run)
    lines = [f"run {run.id}  workflow {run.name}  {run.status}", summary_text(model)]
    if params:
        lines.append("parameters: " + " ".join(f"{k}={short_repr(v)}" for k, v in params.items()))
    tasks = run.tasks[["key", "state", "attempts", "duration_s", "cached", "reason", "error"]]
    # no reason or no error is an empty cell, not "None" / "NaN" on every line
    tasks = tasks.assign(**{c: [v if isinstance(v, str) else "" for v in tasks[c]]
                            for c in ("reason", "error")})
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
    """Why task ``task`` (a key, or a task name) of stored run ``run_id`` ran or hit the cache:
    the text of ``nf.load_run(run_id).explain(task)``, so the terminal and Python give the
    same words (the reason the run recorded, its digests, its cache key against the previous
    run's)."""
    return str(load_run(run_id).explain(task))


def cmd_explain(args: argparse.Namespace) -> int:
    _home(args)
    print(explain_text(args.run, args.task))
    return 0
