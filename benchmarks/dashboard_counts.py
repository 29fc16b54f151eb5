"""What counting like every other view costs the dashboard's run list.

The dashboard's ``GET runs`` (``nbflow.server.reader.list_runs``) counts each listed run's
tasks through ``nbflow.core.counting.count_tasks``, joining each run's final attempt rows
with its nodes (for their kind: a waiting collector is *pending*) and, for a run with nodes
that have not ended, reading them one by one as ``nf.load_run`` does.

A store gets ``--runs`` runs of a map over ``--items`` items (cache off, so every run has
its own rows).  Timed, alternated round-robin, medians over ``--repeat``:

* **list**: ``list_runs(home, limit=50)``, the panel's first page, as served;
* **floor**: the same page with the plainest possible count, one ``GROUP BY`` over the
  attempt rows without kinds (what the list did before it counted like the other views;
  it showed no ``pending``/``running`` and did not tell a waiting collector apart).

Reported: both medians and list / floor.  No target: the list's own budget (renders within
1 s) is checked by ``benchmarks/dashboard.py``; this one says what the counting adds.

Command: ``.venv/bin/python benchmarks/dashboard_counts.py --json benchmarks/dashboard_counts.json``
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from pathlib import Path

import _harness as h

FLOOR_SQL = ("SELECT run_id, state, cached, COUNT(*) FROM task_runs WHERE run_id IN ({marks}) "
             "AND state != 'retried' GROUP BY run_id, state, cached")


def fill(nf: object, runs: int, items: int, log: object) -> None:
    import nbflow as nf

    @nf.task
    def inc(x: int) -> int:
        return x + 1

    @nf.task
    def total(xs: list[int]) -> int:
        return sum(xs)

    for r in range(runs):
        with nf.Workflow("counted") as wf:
            total(inc.map(list(range(r * items, (r + 1) * items))))
        wf.run(cache=False)
        log(f"run {r + 1}/{runs} stored")  # type: ignore[operator]


def floor_page(home: Path) -> None:
    """The first page with the plainest count (see the module docstring)."""
    conn = sqlite3.connect(f"file:{home / 'journal.sqlite'}?mode=ro", uri=True)
    try:
        ids = [r for (r,) in conn.execute("SELECT id FROM runs ORDER BY start DESC LIMIT 50")]
        marks = ",".join("?" * len(ids))
        conn.execute(FLOOR_SQL.format(marks=marks), ids).fetchall()
        conn.execute(f"SELECT run_id, COUNT(*) FROM nodes WHERE run_id IN ({marks}) GROUP BY run_id",
                     ids).fetchall()
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--items", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--json", metavar="OUT")
    args = ap.parse_args(argv)
    log = h.progress("dashboard_counts")
    nf = h.import_nbflow()
    from nbflow.server.reader import list_runs

    with h.nbflow_home(replace=True) as store:
        home = Path(store)
        fill(nf, args.runs, args.items, log)
        page = list_runs(home, limit=50)["runs"]
        assert all(r["done"] == r["tasks"] == args.items + 2 for r in page), page[:1]
        samples = h.alternate({"list": lambda: h.timed(lambda: list_runs(home, limit=50)),
                               "floor": lambda: h.timed(lambda: floor_page(home))},
                              args.repeat, log=log)
    med = {k: h.summarize(v, args.runs * (args.items + 2)) for k, v in samples.items()}
    doc = {"machine": h.machine_info(getattr(nf, "__version__", None)),
           "load_average": list(os.getloadavg()),
           "params": vars(args),
           "list": med["list"], "floor": med["floor"],
           "list_over_floor": h.ratio(med["list"]["median_s"], med["floor"]["median_s"])}
    h.emit_json(doc, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
