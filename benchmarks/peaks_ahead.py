"""Memory admission's per-task peaks question: on the caller's path, or read ahead (prints JSON).

A run's preparation asks history whether any recent attempt recorded a peak of at least
``NBFLOW_PREDICTED_MEMORY_MIN`` (256 MiB); when one did (on a cluster a worker's resident
set often passes that), it groups the recent peaks by task (``nbflow.predict.memory``).
``nbflow.predict.ahead`` reads a graph's history questions after the previous run's rows are
committed (a Dask run's end-of-run read) so the next preparation is told them.  This
measures, on a store of ``--runs`` runs of a 10-task fan whose attempts recorded peaks above
the bound (set in the journal: threads record none; ``--leaf-mib 50``: none reaches it, as
on most Dask runs), alternated sample by sample:

* ``ahead``: the read-ahead is called (as a Dask run's end calls it), then the run is
  prepared and used what was read ahead;
* ``off``: the same read-ahead call, then the run is prepared with ``ahead.off()`` (it reads
  its history itself).

Per sample: the preparing thread's CPU (``time.thread_time``) in memory admission
(``apply_predicted_memory``) and in the whole ``prepare``, the statements the preparation
sent to SQLite, and the read-ahead call's own CPU.  Run it with ``PYTHONPATH`` at an older
checkout for the before figures (the same script: it uses only what both have)::

    python benchmarks/peaks_ahead.py --repeat 30 --json benchmarks/peaks-ahead.json
"""

from __future__ import annotations

import argparse
import functools
import gc
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import _harness
from history_reads import fan  # (the same fan: tasks leaf and work)

nf = _harness.import_nbflow()

MiB = 2**20
_seen = {"statements": 0}
_spent = {"memory": 0.0}


def _instrument() -> None:
    """Count the statements of every nbflow connection; time memory admission."""
    from nbflow import workflow
    from nbflow.store import journal

    real = journal.connect

    def counting(*a: Any, **k: Any) -> sqlite3.Connection:
        conn = real(*a, **k)
        conn.set_trace_callback(lambda _sql: _seen.__setitem__("statements", _seen["statements"] + 1))
        return conn

    journal.connect = counting
    orig = workflow.apply_predicted_memory

    def timed(*a: Any, **k: Any) -> Any:
        c0 = time.thread_time()
        try:
            return orig(*a, **k)
        finally:
            _spent["memory"] += time.thread_time() - c0

    workflow.apply_predicted_memory = functools.wraps(orig)(timed)


_LEAF_MIB = [300]


def set_peaks(path: Any) -> None:
    """Every recorded ``leaf`` attempt peaked at 300-400 MiB (``--leaf-mib``), ``work`` at
    100 MiB; every run's summary says it recorded peaks (as a run on Dask or processes does)."""
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT t.run_id, t.idx, t.attempt, n.task FROM task_runs t JOIN nodes n "
                          "ON n.run_id = t.run_id AND n.idx = t.idx").fetchall()
        for i, (run_id, idx, attempt, task) in enumerate(rows):
            peak = (_LEAF_MIB[0] + i % 100) * MiB if task == "leaf" else 100 * MiB
            db.execute("UPDATE task_runs SET peak_rss = ? WHERE run_id = ? AND idx = ? AND attempt = ?",
                       (peak, run_id, idx, attempt))
        db.execute("UPDATE task_means SET peaks = 1 WHERE task = ''")


def sample(mode: str, store: Any) -> dict[str, float]:
    from nbflow.predict import ahead
    from nbflow.workflow import prepare, run_options

    wf = fan()
    store.journal.flush()
    _seen["statements"] = 0
    c0 = time.thread_time()
    ahead.read_ahead(store)  # (as a Dask run's end calls it, once its rows are committed)
    read_ahead_ms = (time.thread_time() - c0) * 1e3
    read_ahead_statements = _seen["statements"]
    _spent["memory"] = 0.0
    _seen["statements"] = 0
    gc.collect()
    c0 = time.thread_time()
    if mode == "off":
        with ahead.off():
            run = prepare(wf, run_options(wf, cache=False))
    else:
        run = prepare(wf, run_options(wf, cache=False))
    prepare_ms = (time.thread_time() - c0) * 1e3
    out = {"memory_cpu_ms": _spent["memory"] * 1e3, "prepare_cpu_ms": prepare_ms,
           "statements": float(_seen["statements"]), "read_ahead_cpu_ms": read_ahead_ms,
           "read_ahead_statements": float(read_ahead_statements)}
    assert bool(run.predicted_memory) == (_LEAF_MIB[0] >= 256), "the peaks were not seen"
    run.start_in_thread()  # (a prepared run holds the journal's writer until it ends)
    run.wait()
    store.journal.flush()
    set_peaks(store.journal.path)  # (its attempts too: the window keeps its peaks)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=30)
    p.add_argument("--runs", type=int, default=30, help="runs of the fan stored first")
    p.add_argument("--leaf-mib", type=int, default=300,
                   help="the leaf's peaks start there (MiB; under 156: none reaches the 256 MiB bound)")
    p.add_argument("--json", dest="json_out", default=None)
    args = p.parse_args(argv)
    os.environ["NBFLOW_HOME"] = tempfile.mkdtemp(prefix="nbflow-peaks-")
    _LEAF_MIB[0] = args.leaf_mib
    _instrument()
    from nbflow.store.store import get_store

    load_before = os.getloadavg()
    for _ in range(args.runs):
        fan().run(cache=False)
    store = get_store()
    fan().run(cache=False)  # (names the graph for the read-ahead)
    store.journal.flush()
    set_peaks(store.journal.path)
    samplers: dict[str, Callable[[], dict[str, float]]] = {
        m: functools.partial(sample, m, store) for m in ("ahead", "off")}
    got = _harness.alternate(samplers, args.repeat, log=_harness.progress("peaks_ahead"))
    results = {m: {k: {"median": round(statistics.median(s[k] for s in samples), 3),
                       "min": round(min(s[k] for s in samples), 3)}
                   for k in samples[0]} for m, samples in got.items()}
    doc = {"benchmark": "peaks_ahead", "machine": _harness.machine_info(),
           "nbflow_path": os.path.dirname(nf.__file__), "params": vars(args), "results": results,
           "samples": got, "load_before": load_before, "load_after": os.getloadavg()}
    _harness.emit_json(doc, args.json_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
