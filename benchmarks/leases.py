"""Leases: what two identical runs at once cost, and what leases cost a process alone.

    .venv/bin/python benchmarks/leases.py [--json benchmarks/leases.json] [--quick]

Two measurements, each compared within the same run:

* ``duplicate``: two processes start the same workflow on one store at the same moment
  (``--tasks`` independent tasks of ``--work`` seconds each, summed by one more task;
  ``--workers`` per process).  With leases on and off (``NBFLOW_LEASE``), alternated:
  the number of task executions across both processes (each process appends to a log as
  a task runs) and the wall time until both are done.  Target: with leases, every task
  executes exactly once (``executions == tasks + 1``).
* ``alone``: one process, a fresh store per sample, a chain of ``--n`` async no-op tasks
  with the cache on, leases on and off alternated (``_harness.alternate``), median wall
  time.  A process alone on its store takes no leases (it only registers once per run),
  so the ratio should stay near 1; target ≤ 1.1.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness

SCRIPT = '''\
import os, sys, time
from pathlib import Path
import nbflow as nf

LOG = Path(os.environ["EXEC_LOG"])
WORK = float(os.environ["WORK"])

@nf.task
def work(i):
    with open(LOG, "a") as f:
        f.write(f"work-{i}\\n")
    time.sleep(WORK)
    return i

@nf.task
def total(xs):
    with open(LOG, "a") as f:
        f.write("total\\n")
    return sum(xs)

go = Path(os.environ["GO_FILE"])
while not go.exists():
    time.sleep(0.005)
with nf.Workflow("bench-leases") as wf:
    t = total([work(i) for i in range(int(os.environ["TASKS"]))])
run = wf.run(workers=int(os.environ["WORKERS"]))
assert run.status == "completed"
'''


def duplicate_sample(lease: bool, tasks: int, work: float, workers: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="nbflow-bench-leases-") as tmp:
        d = Path(tmp)
        script = d / "pipeline.py"
        script.write_text(SCRIPT)
        env = dict(os.environ, NBFLOW_HOME=str(d / "store"), EXEC_LOG=str(d / "exec.log"),
                   GO_FILE=str(d / "go"), WORK=str(work), TASKS=str(tasks), WORKERS=str(workers),
                   NBFLOW_LEASE="on" if lease else "off")
        procs = [subprocess.Popen([sys.executable, str(script)], env=env) for _ in range(2)]
        time.sleep(3.0)  # both have imported nbflow and wait for the go file
        t0 = time.perf_counter()
        (d / "go").touch()
        for p in procs:
            if p.wait(timeout=600) != 0:
                raise SystemExit("a benchmark process failed")
        wall = time.perf_counter() - t0
        executions = len((d / "exec.log").read_text().split())
    return {"executions": executions, "wall_s": wall}


def alone_samplers(n: int) -> dict[str, Any]:
    nf = _harness.import_nbflow()

    @nf.task
    async def noop(i: int, *deps: object) -> None:
        return None

    def sample(lease: bool) -> float:
        os.environ["NBFLOW_LEASE"] = "on" if lease else "off"
        with _harness.nbflow_home(replace=True):
            def go() -> None:
                with nf.Workflow("alone") as wf:
                    prev = noop(0)
                    for i in range(1, n):
                        prev = noop(i, prev)
                assert wf.run().status == "completed"
            return _harness.timed(go)

    return {"leases_on": lambda: sample(True), "leases_off": lambda: sample(False)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tasks", type=int, default=8)
    p.add_argument("--work", type=float, default=0.5, help="seconds per task")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--n", type=int, default=2000, help="no-op tasks in the 'alone' chain")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="fewer tasks and samples (a smoke test)")
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args(argv)
    if args.quick:
        args.tasks, args.work, args.n, args.repeat = 4, 0.2, 300, 1
    log = _harness.progress("leases")
    dup: dict[str, list[dict[str, float]]] = {"leases_on": [], "leases_off": []}
    for _, order in _harness.rotations(list(dup), args.repeat):
        for name in order:
            dup[name].append(duplicate_sample(name == "leases_on", args.tasks, args.work, args.workers))
            log(f"duplicate {name}: {dup[name][-1]}")
    samplers = alone_samplers(args.n)
    for warm in samplers.values():  # imports, thread pools, the first store
        warm()
    alone = _harness.alternate(samplers, args.repeat, log=log)
    on = statistics.median(alone["leases_on"])
    off = statistics.median(alone["leases_off"])
    expected = args.tasks + 1
    execs_on = max(s["executions"] for s in dup["leases_on"])
    results = {
        "params": vars(args),
        "duplicate": {
            name: {"executions": [s["executions"] for s in ss],
                   "wall_median_s": statistics.median(s["wall_s"] for s in ss)}
            for name, ss in dup.items()},
        "alone": {"leases_on_median_s": on, "leases_off_median_s": off,
                  "us_per_task_on": on / args.n * 1e6, "us_per_task_off": off / args.n * 1e6},
        "targets": {
            "duplicate.executions_with_leases": _harness.target(execs_on, expected, "<=", expected=expected),
            "alone.on_over_off": _harness.target(_harness.ratio(on, off), 1.1, "<="),
        },
        "machine": _harness.machine_info(_harness.import_nbflow().__version__),
    }
    _harness.emit_json(results, args.json)


if __name__ == "__main__":
    main()
