"""Benchmarks of batch runs.  Prints JSON.

    .venv/bin/python benchmarks/batch.py [--json benchmarks/batch.json] [--n 50] [--workers 2] [--repeat 3]

Two measurements, each against a baseline taken in the same run:

* ``overhead``: ``nbflow run tiny.ipynb`` against ``papermill tiny.ipynb out.ipynb`` on the
  same notebook (one parameter, one small ``%%workflow``), both as fresh command-line
  processes, alternated, ``--repeat`` times each; medians and their ratio.
* ``pool``: ``--n`` tiny notebooks (each with its own parameter value, so nothing is
  cached) run as ``nf.notebook`` tasks of one workflow with ``workers=--workers``, against
  the same notebooks run one after another with ``papermill.execute_notebook`` in one
  process.  Target: pool time <= 2 x (sequential time / workers).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

CELLS = [
    'import nbflow as nf\ni = nf.param("i", 0)',
    "@nf.task\ndef double(x):\n    return 2 * x",
    "%%workflow tiny\ny = double(i)",
    'nf.output("y", y)',
]


def tiny_notebook(path: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(CELLS[0], metadata={"tags": ["parameters"]})]
    nb.cells += [nbformat.v4.new_code_cell(c) for c in CELLS[1:]]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))
    return path


def _timed(cmd: list[str], env: dict[str, str], cwd: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - t0


def overhead(work: Path, repeat: int) -> dict[str, object]:
    nb = tiny_notebook(work / "tiny.ipynb")
    env = {**os.environ, "NBFLOW_HOME": str(work / "store-overhead")}
    runs: dict[str, list[float]] = {"papermill": [], "nbflow run": []}
    for k in range(repeat):
        runs["papermill"].append(
            _timed(
                [sys.executable, "-m", "papermill", str(nb), str(work / "pm.ipynb"), "-p", "i", str(k)],
                env,
                work,
            )
        )
        runs["nbflow run"].append(
            _timed(
                [
                    sys.executable,
                    "-m",
                    "nbflow.cli",
                    "run",
                    str(nb),
                    "-o",
                    str(work / "nf.ipynb"),
                    "-q",
                    "-p",
                    "i",
                    str(k),
                ],
                env,
                work,
            )
        )
    med = {k: statistics.median(v) for k, v in runs.items()}
    return {
        "samples_s": runs,
        "median_s": med,
        "ratio": med["nbflow run"] / med["papermill"],
        "extra_s": med["nbflow run"] - med["papermill"],
    }


def pool(work: Path, n: int, workers: int) -> dict[str, object]:
    import papermill

    nb = tiny_notebook(work / "pooled.ipynb")
    os.environ["NBFLOW_HOME"] = str(work / "store-pool")
    t0 = time.perf_counter()
    for i in range(n):
        papermill.execute_notebook(
            str(nb),
            str(work / f"seq-{i}.ipynb"),
            parameters={"i": i},
            progress_bar=False,
            kernel_name="python3",
        )
    sequential = time.perf_counter() - t0

    import nbflow as nf

    with nf.Workflow("pool") as wf:
        refs = [
            nf.notebook(nb, parameters={"i": 1000 + i}, output_path=str(work / f"pool-{i}.ipynb"))
            for i in range(n)
        ]
    t0 = time.perf_counter()
    run = wf.run(workers=workers)
    pooled = time.perf_counter() - t0
    assert all(run[r]["y"] == 2 * (1000 + i) for i, r in enumerate(refs))
    target = 2 * sequential / workers
    return {
        "notebooks": n,
        "workers": workers,
        "sequential_papermill_s": sequential,
        "pool_s": pooled,
        "per_notebook_sequential_s": sequential / n,
        "per_notebook_pool_s": pooled / n,
        "pool_over_sequential_per_worker": pooled / (sequential / workers),
        "target": "<= 2",
        "met": pooled <= target,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", help="write the results here too")
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="nbflow-bench-batch-") as d:
        work = Path(d)
        result = {
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "load_avg_1m_at_start": os.getloadavg()[0],
            },
            "overhead": overhead(work, args.repeat),
            "pool": pool(work, args.n, args.workers),
        }
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
