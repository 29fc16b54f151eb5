"""A workflow's history reads in a store that holds many workflows (prints JSON).

One store serves a user's or a project's every workflow: papermill batches and sweeps write
hundreds of runs to it.  A run's preparation asks about *its* workflow's recent runs; this
measures what that costs as the *other* workflows' runs grow, with and without the journal's
``runs(name, start)`` index (schema 11), in one invocation:

* the store: the *fan* workflow's 20 runs (a 10-task graph, run for real, ``cache=False``),
  and ``--workflows`` other workflows with 1, 10 and 100 runs each (1x, 10x, 100x).  Their
  rows are copies of three real runs (a 5-task chain, a 20-item map, a 3-task graph:
  ``runs``, ``nodes``, ``task_runs``, ``events``, ``task_means``, ``fingerprints``) made by
  SQLite in the same store, each with its own id, workflow name and start time; the start
  times are spread evenly over the fan's, so the others' runs are interleaved with the fan's
  as a shared store's are;
* *after*: the store as this nbflow keeps it; *before*: a copy of it (SQLite's backup)
  without the index, which is what an nbflow of schema 10 reads (no query changed);
* per sample, the fan's ``prepare`` history parts (as ``history_reads.py`` times them: the
  process's CPU, SQLite statements and virtual-machine steps in hundreds, counted with a
  progress handler, which do not depend on the machine's load) and the dashboard's list of
  the fan's runs (``list_runs(name="fan")``, its first page of 50); before and after
  alternated (:func:`_harness.alternate`).

::

    python benchmarks/history_scale.py --repeat 15 --json benchmarks/history_scale.json
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import _harness
import history_reads as hr

nf = hr.nf

_COPIED = ("runs", "nodes", "task_runs", "events", "task_means")


@nf.task(name="step")
def step(x: int) -> int:
    return x + 1


def _templates() -> list[str]:
    """Three real runs of other shapes, whose rows the other workflows' runs copy."""
    with nf.Workflow("template-chain") as a:
        x = step(0)
        for _ in range(4):
            x = step(x)
    with nf.Workflow("template-map") as b:
        step.map(list(range(20)))
    with nf.Workflow("template-small") as c:
        hr.work(hr.leaf(1))
        hr.leaf(2)
    return [wf.run(cache=False).id for wf in (a, b, c)]


def _copy_runs(db: sqlite3.Connection, templates: list[str], first: int, count: int, workflows: int,
               span: tuple[float, float], total: int) -> None:
    """Runs ``first .. first+count-1`` of the other workflows, copied from ``templates``:
    run ``i`` belongs to workflow ``i % workflows`` and starts at its place among ``total``
    runs spread evenly over ``span``."""
    cols = {t: [r[1] for r in db.execute(f"PRAGMA table_info({t})")] for t in (*_COPIED, "fingerprints")}

    def select(table: str, swap: dict[str, str]) -> str:
        return ", ".join(swap.get(c, c) for c in cols[table])

    lo, hi = span
    db.execute("BEGIN")
    for i in range(first, first + count):
        run_id, name = f"other-{i:07d}", f"other-{i % workflows:03d}"
        start = lo + (hi - lo) * (i * 7919 % total + 0.5) / total  # (a fixed shuffle of the places)
        src = templates[i % len(templates)]
        own = {"id": "?", "name": "?", "start": "?", "end": "? + COALESCE(duration_s, 0)"}
        db.execute(f"INSERT INTO runs SELECT {select('runs', own)} FROM runs WHERE id = ?",
                   (run_id, name, start, start, src))
        for table in _COPIED[1:]:
            db.execute(f"INSERT INTO {table} SELECT {select(table, {'run_id': '?'})} FROM {table} "
                       "WHERE run_id = ?", (run_id, src))
        db.execute(f"INSERT OR REPLACE INTO fingerprints SELECT "
                   f"{select('fingerprints', {'workflow': '?', 'run_id': '?'})} FROM fingerprints "
                   "WHERE run_id = ?", (name, run_id, src))
    db.execute("COMMIT")


def _without_index(home: Path, copy: Path) -> None:
    """``copy``: the store at ``home`` as an nbflow of schema 10 reads it (no name index)."""
    copy.mkdir(mode=0o700, exist_ok=True)
    target = copy / "journal.sqlite"
    for suffix in ("", "-wal", "-shm"):
        Path(str(target) + suffix).unlink(missing_ok=True)
    src = sqlite3.connect(home / "journal.sqlite")
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)
        dst.execute("DROP INDEX runs_name_start")
        dst.commit()
    finally:
        src.close()
        dst.close()
    target.chmod(0o600)


def _step() -> int:
    hr._seen["steps"] += 1
    return 0


def _sample(home: Path) -> Callable[[], dict[str, Any]]:
    from nbflow.server.reader import list_runs

    def one() -> dict[str, Any]:
        os.environ["NBFLOW_HOME"] = str(home)
        got = hr.measure(hr.fan, 1)
        hr._seen.update(steps=0, statements=0)
        c0 = time.process_time()
        page = list_runs(home, name="fan")
        got["dashboard_cpu_ms"] = (time.process_time() - c0) * 1e3
        got["dashboard_vm_steps"] = hr._seen["steps"]
        assert page["total"] == 20, page["total"]
        return got

    return one


def _summary(samples: list[dict[str, Any]]) -> dict[str, Any]:
    def med(k: str) -> float:
        return round(statistics.median(s[k] for s in samples), 3)

    return {"prepare_history_cpu_ms_median": med("history_cpu_ms_median"),
            "prepare_history_cpu_ms_min": round(min(s["history_cpu_ms_median"] for s in samples), 3),
            "prepare_sqlite_statements": med("sqlite_statements"),
            "prepare_sqlite_vm_steps_100": med("sqlite_vm_steps_k"),
            "dashboard_cpu_ms_median": med("dashboard_cpu_ms"),
            "dashboard_sqlite_vm_steps_100": med("dashboard_vm_steps")}


def _plan(home: Path) -> str:
    from nbflow.store.recent import _RUNS_SQL

    db = sqlite3.connect(home / "journal.sqlite")
    try:
        return " | ".join(r[3] for r in db.execute("EXPLAIN QUERY PLAN " + _RUNS_SQL, ("fan", "", 20)))
    finally:
        db.close()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=15)
    p.add_argument("--workflows", type=int, default=100, help="other workflows in the store")
    p.add_argument("--scales", default="1,10,100", help="runs per other workflow, in turn")
    p.add_argument("--json", dest="json_out", default=None)
    args = p.parse_args(argv)
    log = _harness.progress("history_scale")
    root = Path(tempfile.mkdtemp(prefix="nbflow-scale-"))
    after = root / "after"
    os.environ["NBFLOW_HOME"] = str(after)
    hr._instrument()
    from nbflow.server import reader
    from nbflow.store import journal

    counted = journal.connect

    def finer(*a: Any, **k: Any) -> sqlite3.Connection:
        conn = counted(*a, **k)
        conn.set_progress_handler(_step, 100)  # (hundreds, not thousands: the after figures are small)
        return conn

    journal.connect = reader.connect = finer  # (the dashboard's connections counted too)
    load_before = os.getloadavg()
    t0 = time.time()
    for _ in range(20):
        hr.fan().run(cache=False)
    templates = _templates()
    from nbflow.store.store import get_store

    store = get_store()
    assert store is not None
    store.journal.flush()
    span = (t0, time.time())
    scales = [int(s) for s in args.scales.split(",")]
    total = args.workflows * max(scales)
    out: dict[str, Any] = {}
    made = 0
    for scale in scales:
        others = args.workflows * scale
        db = sqlite3.connect(after / "journal.sqlite", isolation_level=None)
        try:
            _copy_runs(db, templates, made, others - made, args.workflows, span, total)
        finally:
            db.close()
        made = others
        before = root / f"before-{scale}x"  # (a new store each time: no reader of the old file)
        _without_index(after, before)
        log(f"{others} other runs: measuring")
        samplers = {"before": _sample(before), "after": _sample(after)}
        for warm in samplers.values():  # (opening each store, once, is not a history read)
            warm()
        got = _harness.alternate(samplers, args.repeat)
        res = {k: _summary(v) for k, v in got.items()}
        b, a = res["before"], res["after"]
        res["other_runs"] = others
        res["plan_before"], res["plan_after"] = _plan(before), _plan(after)
        res["ratio_before_over_after"] = {
            "prepare_history_cpu": _harness.ratio(b["prepare_history_cpu_ms_median"],
                                                  a["prepare_history_cpu_ms_median"]),
            "prepare_vm_steps": _harness.ratio(b["prepare_sqlite_vm_steps_100"],
                                               a["prepare_sqlite_vm_steps_100"]),
            "dashboard_cpu": _harness.ratio(b["dashboard_cpu_ms_median"], a["dashboard_cpu_ms_median"]),
            "dashboard_vm_steps": _harness.ratio(b["dashboard_sqlite_vm_steps_100"],
                                                 a["dashboard_sqlite_vm_steps_100"]),
        }
        out[f"{scale}x"] = res
    doc = {"benchmark": "history_scale", "machine": _harness.machine_info(),
           "nbflow_path": os.path.dirname(nf.__file__), "params": vars(args), "results": out,
           "load_before": load_before, "load_after": os.getloadavg()}
    _harness.emit_json(doc, args.json_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
