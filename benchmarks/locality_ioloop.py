"""What the client process's IO loop does for nbflow: runs to profile, and the table.

On a ``LocalCluster`` Dask's scheduler and client share one thread of the notebook's
process, the IO loop.  This script runs one workload of ``benchmarks/locality.py`` N
times on one cluster (two warm-up runs first), so that ``py-spy`` (not installed by the
project; a measuring tool) can be attached after the warm-up, and then turns py-spy's
raw output into the per-function table of ``benchmarks/RESULTS.md`` (inclusive samples
of the IO loop thread, ms per run at 1 kHz, for the functions on nbflow's per-task path)::

    # terminal 1 (waits for the file /tmp/go after the warm-up; writes /tmp/go.start first)
    PROF_GO=/tmp/go .venv/bin/python benchmarks/locality_ioloop.py run chains 30
    # terminal 2, once /tmp/go.start exists
    py-spy record -r 1000 --threads --format raw -o /tmp/after.txt --pid PID &  touch /tmp/go
    # the table, two profiles side by side
    .venv/bin/python benchmarks/locality_ioloop.py table /tmp/before.txt /tmp/after.txt 30

Under load py-spy's "active" samples include time a thread waits for a core or for the
GIL, so the table is a share of the loop's time, not CPU seconds.
"""

from __future__ import annotations

import collections
import os
import re
import sys
import time

FOCUS = ["Scheduler.handle_task_finished", "Scheduler.log_worker_event", "Scheduler.log_event",
         "Client._handle_report", "Client._handle_event", "_on_located", "Watcher._wait",
         "Watcher._hand", "Watcher.announced", "LooseRestrictions.transition",
         "LooseRestrictions._send", "Scheduler.update_graph", "SchedulerState._transition",
         "BatchedSend._background_send", "run_on_scheduler", "Server._handle_comm",
         "PeriodicCallback._run", "SystemMonitor.update", "TCP.write", "TCP.read"]


def _load(path: str, thread: str = "IO loop") -> tuple[int, collections.Counter[str]]:
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    with open(path) as f:
        for line in f:
            line = line.rstrip()
            if not line:
                continue
            stack, n = line.rsplit(" ", 1)
            frames = stack.split(";")
            if thread not in frames[0]:
                continue
            total += int(n)
            names = {re.sub(r" \(.*$", "", fr) for fr in frames[1:]}
            for fn in FOCUS:
                if any(x == fn or x.endswith(fn) for x in names):
                    incl[fn] += int(n)
    return total, incl


def table(paths: list[str], runs: int) -> None:
    got = [_load(p) for p in paths]
    print(f"{'IO loop, inclusive ms per run':40s}" + "".join(f"{os.path.basename(p):>16s}" for p in paths))
    print(f"{'(all samples)':40s}" + "".join(f"{t / runs:16.2f}" for t, _ in got))
    for fn in FOCUS:
        print(f"{fn:40s}" + "".join(f"{c[fn] / runs:16.2f}" for _, c in got))


def run(name: str, n: int) -> None:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import _harness
    from locality import WORKLOADS, trace_spec

    from nbflow import locality

    go = os.environ.get("PROF_GO")
    with _harness.nbflow_home(), _harness.local_cluster() as client:
        spec = WORKLOADS[name]()
        t0 = time.process_time()
        for i in range(n + 2):
            if i == 2:
                if go:
                    open(go + ".start", "w").close()
                    while not os.path.exists(go):
                        time.sleep(0.05)
                t0 = time.process_time()
            wf, end = trace_spec("ioloop", spec)
            with locality.placement("locality", keep="reachable"):
                r = wf.run(backend=client, cache=False)
                r[end]
                agent = r.backends["dask"].placement
                if agent is not None:
                    agent.settle()
        sys.__stderr__.write(f"client CPU per run: {(time.process_time() - t0) / n * 1e3:.1f} ms\n")


if __name__ == "__main__":
    if sys.argv[1:2] == ["table"]:
        table(sys.argv[2:-1], int(sys.argv[-1]))
    else:
        run(sys.argv[2] if len(sys.argv) > 2 else "chains", int(sys.argv[3]) if len(sys.argv) > 3 else 30)
