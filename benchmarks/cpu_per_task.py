"""CPU time per task of the nbflow that is importable, on async no-op graphs.

Meant for before/after comparisons of the scheduler on a busy machine: process CPU time
(``time.process_time``) is far less disturbed by other processes than wall-clock time, so
two versions measured one after the other compare fairly.  Point ``PYTHONPATH`` at the
tree to measure (an exported older commit, or the checkout) and alternate the versions::

    git archive <commit> nbflow | tar -x -C /tmp/old
    PYTHONPATH=/tmp/old .venv/bin/python benchmarks/cpu_per_task.py --scale
    .venv/bin/python benchmarks/cpu_per_task.py --scale

Graphs: ``chain`` (each task waits for the previous) and ``layered`` (100 layers, each task
waits for 1-3 random tasks of the layer before, seed 0), built outside the measured region;
``wf.run(cache=False)``; the figure is the median of three runs, in CPU microseconds per
task.  ``--scale`` measures 1k and 100k tasks (the scaling check), otherwise 10k.  Prints
one JSON object: ``{"<shape>/<n>": us_per_task, "nbflow": <path of the package>}``.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import time

import nbflow as nf


@nf.task
async def noop(*parents: object) -> None:
    return None


def build(shape: str, n: int) -> nf.Workflow:
    with nf.Workflow("cpu") as wf:
        if shape == "chain":
            x = noop()
            for _ in range(n - 1):
                x = noop(x)
        else:
            rnd = random.Random(0)
            per = n // 100
            prev = [noop() for _ in range(per)]
            for _ in range(99):
                prev = [noop(*rnd.sample(prev, rnd.randint(1, 3))) for _ in range(per)]
    return wf


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--scale", action="store_true", help="1k and 100k tasks instead of 10k")
    args = p.parse_args()
    out: dict[str, object] = {}
    for shape in ("chain", "layered"):
        for n in (1_000, 100_000) if args.scale else (10_000,):
            samples = []
            for _ in range(3):
                wf = build(shape, n)
                gc.collect()
                c0 = time.process_time()
                run = wf.run(cache=False)
                samples.append((time.process_time() - c0) / n * 1e6)
                if run.status != "completed":
                    raise SystemExit(f"run ended {run.status}")
            out[f"{shape}/{n}"] = round(sorted(samples)[1], 2)
    out["nbflow"] = nf.__file__
    print(json.dumps(out))


if __name__ == "__main__":
    main()
