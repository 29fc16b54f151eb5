"""CPU that the run store's journal costs per task: the whole process, and its writer thread.

Two workloads, each run ``--repeat`` times with the store on (a fresh store in a temporary
directory; the runs of one workload build up history, as a notebook's do):

- ``map``: one batched ``task.map`` of ``--n`` no-op items (chunks: one ``events`` row each);
- ``tasks``: ``--tasks`` no-op thread tasks in 20 layers (each waits for 1-3 of the layer
  before): rows per task, no batching.

For each run: the process's CPU time per item from tracing to reading the results
(``time.process_time``, all threads), and the journal writer thread's own CPU
(``time.thread_time`` around its main loop).  CPU, not wall time: on a loaded machine it is
the figure that stays put.  Point ``PYTHONPATH`` at another tree to compare versions::

    .venv/bin/python benchmarks/journal_cpu.py --repeat 3          # ~1 min quiet
    PYTHONPATH=/tmp/old .venv/bin/python benchmarks/journal_cpu.py --repeat 3

Prints one JSON object (medians and every sample, the load average before and after).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time
from typing import Any


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--n", type=int, default=100_000, help="items of the batched map")
    p.add_argument("--tasks", type=int, default=2_000, help="thread tasks of the layered graph")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    os.environ["NBFLOW_HOME"] = tempfile.mkdtemp(prefix="nbflow-journal-cpu-")
    os.environ.pop("NBFLOW_STORE", None)

    import nbflow as nf
    from nbflow.store import journal

    writer = [0.0]
    main_loop = journal.Journal._main

    def timed_main(self: Any) -> None:
        t0 = time.thread_time()
        try:
            main_loop(self)
        finally:
            writer[0] += time.thread_time() - t0

    journal.Journal._main = timed_main  # type: ignore[method-assign]

    @nf.task
    def noop(*parents: Any) -> None:
        return None

    def batched() -> int:
        with nf.Workflow("journal-cpu-map") as wf:
            ref = noop.map(list(range(args.n)))
        run = wf.run(cache=False)
        run[ref]
        return args.n

    def layered() -> int:
        rnd = random.Random(0)
        with nf.Workflow("journal-cpu-tasks") as wf:
            per = args.tasks // 20
            prev = [noop() for _ in range(per)]
            for _ in range(19):
                prev = [noop(*rnd.sample(prev, rnd.randint(1, 3))) for _ in range(per)]
        wf.run(cache=False)
        return per * 20

    out: dict[str, Any] = {"load_before": os.getloadavg(), "nbflow": os.path.dirname(nf.__file__)}
    for name, workload in (("map", batched), ("tasks", layered)):
        proc, wr = [], []
        for _ in range(args.repeat):
            writer[0] = 0.0
            c0 = time.process_time()
            n = workload()
            proc.append(1e6 * (time.process_time() - c0) / n)
            wr.append(1e6 * writer[0] / n)
        out[name] = {"process_cpu_us": round(statistics.median(proc), 2),
                     "writer_cpu_us": round(statistics.median(wr), 2),
                     "samples_process": [round(v, 2) for v in proc],
                     "samples_writer": [round(v, 2) for v in wr]}
    out["load_after"] = os.getloadavg()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
