"""``%%workflow --plan`` / ``--check``: what would run, without running anything.

Shows the traced graph and the list of tasks.  Cache hits and misses (with their reasons)
come from the run store: when ``nbflow.store`` provides ``plan(wf, cache=..., rerun=...)``
returning rows with ``key``, ``decision`` (``hit`` / ``miss`` / ``maybe`` / ``collect``)
and ``reason``, they are shown; without a store the output says that cache information
needs it.  ``--check`` adds the findings of
``nf.check(wf)`` (static analysis) when that function exists.

Both also show the predicted placement on a Dask cluster (:func:`nbflow.plan`, from the
locality room): the worker each task would run on under the placement rule, the bytes that
would move between workers, against round-robin, from the store's history of durations and
output sizes.  With ``--workers N`` the cluster has N workers, else 4.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Any

import pandas as pd

from . import render
from .graphview import GraphView
from .model import RunModel

if TYPE_CHECKING:
    from ..workflow import Workflow

NO_STORE = ("Cache hits and misses: unknown. Cache information needs the run store (nbflow.store), "
            "which this installation does not have yet; every task would run.")
NO_STORE_PLAN = ("Cache hits and misses: not known before running in this version (the run store "
                 "offers no plan yet); cached results are reused when the workflow runs.")
NO_CHECK = "Static checks: nf.check() is not available in this version of nbflow."


def _store() -> Any:
    """``nbflow.store`` when this installation has it (the engine imports it for every run)."""
    if importlib.util.find_spec("nbflow.store") is None:
        return None
    try:
        return importlib.import_module("nbflow.store")
    except ImportError:
        return None


def _store_plan(wf: Workflow, cache: bool, rerun: list[str] | None) -> pd.DataFrame | None:
    fn = getattr(_store(), "plan", None)
    if not callable(fn):
        return None
    return pd.DataFrame(fn(wf, cache=cache, rerun=rerun or None))


def _checker() -> Any:
    """``nf.check`` (nbflow.check.check) when this nbflow has it."""
    try:
        mod = importlib.import_module("nbflow.check")
    except ImportError:
        return None
    fn = getattr(mod, "check", None)
    return fn if callable(fn) else None


def _checks(wf: Workflow) -> pd.DataFrame | None:
    fn = _checker()
    if fn is None:
        return None
    rows = [
        {"severity": getattr(f, "severity", ""), "code": getattr(f, "code", ""),
         "tasks": ", ".join(getattr(f, "tasks", ()) or ()), "message": getattr(f, "message", str(f))}
        for f in fn(wf)
    ]
    return pd.DataFrame(rows, columns=["severity", "code", "tasks", "message"])


def task_list(wf: Workflow) -> pd.DataFrame:
    nodes = wf.nodes
    rows = []
    for r in nodes:
        deps = [nodes[d].key for d in r.deps]
        shown = ", ".join(deps[:5]) + (f", … (+{len(deps) - 5})" if len(deps) > 5 else "")
        kind = {"map": "map over a Ref (expands at run time)",
                "collect": "collects a map"}.get(r.kind, "task")
        rows.append({"key": r.key, "task": r.name, "kind": kind, "depends on": shown})
    return pd.DataFrame(rows, columns=["key", "task", "kind", "depends on"])


def _placement(wf: Workflow, workers: int | None) -> Any:
    """The locality room's placement forecast (None if it cannot be made)."""
    from ..locality.plan import plan

    try:
        return plan(wf, workers=workers, cache=False)
    except Exception:  # a forecast must never break --plan
        return None


def _with_placement(tasks: pd.DataFrame, placed: pd.DataFrame,
                    loops: Any = ()) -> pd.DataFrame:
    """The task list with each task's predicted worker and bytes, in the placement's row
    order: a map over a Ref followed by the items it is expected to have, an ``nf.loop``
    (keys in ``loops``) by its expected iterations (rows the traced graph does not hold;
    :func:`nbflow.plan` counts them from the newest run)."""
    cols = ["key", "task", "worker", "output_bytes", "input_bytes_moved"]
    out = placed[cols].merge(tasks.drop(columns="task"), on="key", how="left")
    folded = out["task"].fillna("").eq("")  # (a row standing for many items: fold_items)
    out.loc[folded, ["kind", "depends on"]] = ""
    item = out["kind"].isna() & ~folded
    if item.any():
        out.loc[item, "kind"] = "expected item (count from the newest run)"
        out.loc[item, "depends on"] = ""
        if "decision" in out.columns:
            out.loc[item, "decision"] = "maybe"
            out.loc[item, "reason"] = "an expected item of a map over a Ref: known only when it runs"
        rounds = item & out["key"].map(lambda k: str(k).split("[", 1)[0] in loops)
        if rounds.any():
            out.loc[rounds, "kind"] = "expected iteration (count from the newest run)"
            if "decision" in out.columns:
                out.loc[rounds, "reason"] = "an expected iteration of an nf.loop: known only when it runs"
    return out[[*tasks.columns, *(c for c in cols if c not in tasks.columns)]]


def plan_bundle(wf: Workflow, *, check: bool, cache: bool = True,
                rerun: list[str] | None = None, workers: int | None = None) -> dict[str, Any]:
    """The ``text/plain`` + ``text/html`` output of ``--plan`` (and ``--check``)."""
    model = RunModel(wf)
    model.status = "planned"
    graph = GraphView(model)
    tasks = task_list(wf)
    n_maps = sum(1 for r in wf.nodes if r.kind == "map")
    head = (f"Plan for workflow {wf.name!r}: {len(wf.nodes)} tasks"
            + (f" ({n_maps} map(s) over a Ref add tasks when they run)" if n_maps else "")
            + ". Nothing was run.")
    notes = [head]
    if not cache:
        notes.append("Cache disabled (--no-cache): every task would run.")
    else:
        cache_df = _store_plan(wf, cache, rerun)
        if cache_df is None:
            notes.append(NO_STORE if _store() is None else NO_STORE_PLAN)
        elif not cache_df.empty:
            counts = cache_df["decision"].value_counts()
            notes.append("Cache: " + ", ".join(f"{counts[d]} {d}" for d in ("hit", "miss", "maybe")
                                               if d in counts)
                         + " (maybe: decided when the inputs are known)")
            if "hit" in counts:
                notes.append("Tasks that hit are placed below as if they ran: a hit runs nothing "
                             "on the cluster, so the run may move fewer bytes.")
            tasks = tasks.merge(cache_df[["key", "decision", "reason"]], on="key", how="left")
    placed = _placement(wf, workers)
    if placed is not None:
        notes.append(placed.summary())
        notes.extend(placed.notes)
        from ..locality.plan import fold_items

        tasks = _with_placement(tasks, fold_items(placed.tasks, {**placed.maps, **placed.loops}),
                                set(placed.loops))
    checks_df = None
    if check:
        checks_df = _checks(wf)
        if checks_df is None:
            notes.append(NO_CHECK)
        elif checks_df.empty:
            notes.append("Static checks: no findings.")
    text = "\n".join(notes)
    html_parts = [f"<div class='nbflow-plan'><p>{'<br>'.join(render.esc(n) for n in notes)}</p>"]
    if checks_df is not None and not checks_df.empty:
        text += "\n\nStatic checks:\n" + "\n".join(
            f"  {r.severity} {r.code} [{r.tasks}]: {r.message}" for r in checks_df.itertuples())
        html_parts.append("<b>Static checks</b>" + checks_df.to_html(index=False, border=0))
    shown = [c for c in ("key", "task", "decision", "reason", "worker", "input_bytes_moved",
                         "depends on") if c in tasks.columns]
    text += "\n\n" + tasks[shown].to_string(index=False)
    note = graph.note
    if note:
        html_parts.append(f"<div style='color:#8d6e63;font-size:12px'>{render.esc(note)}</div>")
    html_parts.append(f"<div style='overflow:auto;max-height:640px'>{graph.svg()}</div>")
    html_parts.append(f"<details open><summary><b>Tasks ({len(tasks)})</b></summary>"
                      f"{tasks.to_html(index=False, border=0)}</details></div>")
    return {"text/plain": text, "text/html": "".join(html_parts)}
