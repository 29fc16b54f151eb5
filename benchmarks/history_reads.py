"""What a run's preparation spends reading its workflow's history (prints JSON).

Before a run starts, ``nbflow.workflow.prepare`` asks the store about the workflow's recent
runs: is there history, mean durations per task and per key (learned priorities), predicted
peaks (memory admission).  This measures those parts of ``prepare`` alone, in three cases:

* ``fan``: a 10-task graph with 20 runs of the same graph stored (a Dask *fan* run's start);
* ``map``: a 100 000-item map with the previous 100 000-item run stored (the batched map);
* ``small_after_map``: a 3-task graph of a workflow whose newest run was a 100 000-item map.

For each: the CPU time of the history parts (median and min of ``--repeat`` preparations,
ms, the process's CPU), and what SQLite did for them: statements and virtual-machine steps
(a progress handler, in thousands).  Steps do not depend on the machine's load, so they
compare two versions of the code on a busy machine too; run the same script with
``PYTHONPATH`` at an older checkout for the before figures::

    python benchmarks/history_reads.py --repeat 20 --json benchmarks/history_reads.json
"""

from __future__ import annotations

import argparse
import functools
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import _harness

nf = _harness.import_nbflow()

_seen = {"steps": 0, "statements": 0}
_spent = [0.0]


def _instrument() -> None:
    """Count SQLite's work on every nbflow connection, and time the history parts."""
    from nbflow import workflow
    from nbflow.store import journal

    real = journal.connect

    def counting(*a: Any, **k: Any) -> sqlite3.Connection:
        conn = real(*a, **k)

        def step() -> int:
            _seen["steps"] += 1
            return 0

        conn.set_progress_handler(step, 1000)
        conn.set_trace_callback(lambda _sql: _seen.__setitem__("statements", _seen["statements"] + 1))
        return conn

    journal.connect = counting
    for name in ("_has_history", "apply_learned_priorities", "apply_predicted_memory", "_predict_placement"):
        orig = getattr(workflow, name)

        def timed(*a: Any, _orig: Callable[..., Any] = orig, **k: Any) -> Any:
            c0 = time.process_time()
            try:
                return _orig(*a, **k)
            finally:
                _spent[0] += time.process_time() - c0

        setattr(workflow, name, functools.wraps(orig)(timed))


@nf.task(name="leaf")
def leaf(x: int) -> int:
    return x * 2


@nf.task(name="work")
def work(x: int) -> int:
    return x + 1


def fan() -> Any:
    with nf.Workflow("fan") as wf:
        xs = [leaf(i) for i in range(9)]
        work(len(xs))
    return wf


def big_map(n: int) -> Callable[[], Any]:
    def make() -> Any:
        with nf.Workflow("map") as wf:
            work.map(list(range(n)))
        return wf
    return make


def small_after_map() -> Any:
    with nf.Workflow("map") as wf:
        a = leaf(1)
        work(a)
        leaf(3)
    return wf


def measure(make: Callable[[], Any], repeat: int) -> dict[str, Any]:
    from nbflow.workflow import prepare, run_options

    cpu, steps, statements = [], [], []
    for _ in range(repeat):
        wf = make()
        _spent[0] = 0.0
        _seen.update(steps=0, statements=0)
        run = prepare(wf, run_options(wf, cache=False))
        cpu.append(_spent[0] * 1e3)
        steps.append(_seen["steps"])
        statements.append(_seen["statements"])
        assert run.learned_priorities, "history was not used"
        del run
    return {"history_cpu_ms_median": round(statistics.median(cpu), 3),
            "history_cpu_ms_min": round(min(cpu), 3),
            "sqlite_statements": statistics.median(statements),
            "sqlite_vm_steps_k": statistics.median(steps)}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--n", type=int, default=100_000, help="items of the long map")
    p.add_argument("--json", dest="json_out", default=None)
    args = p.parse_args(argv)
    os.environ["NBFLOW_HOME"] = tempfile.mkdtemp(prefix="nbflow-history-")
    _instrument()
    load_before = os.getloadavg()
    for _ in range(20):
        fan().run(cache=False)
    out: dict[str, Any] = {"fan": measure(fan, args.repeat)}
    big_map(args.n)().run(cache=False)
    out["map"] = measure(big_map(args.n), max(1, args.repeat // 5))
    per_item = out["map"]["history_cpu_ms_median"] * 1e3 / args.n
    out["map"]["history_cpu_us_per_item_median"] = round(per_item, 3)
    out["small_after_map"] = measure(small_after_map, args.repeat)
    doc = {"benchmark": "history_reads", "machine": _harness.machine_info(),
           "nbflow_path": os.path.dirname(nf.__file__), "params": vars(args), "results": out,
           "load_before": load_before, "load_after": os.getloadavg()}
    _harness.emit_json(doc, args.json_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
