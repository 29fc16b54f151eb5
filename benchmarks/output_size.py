"""What measuring a list's or a dict's ``output_bytes`` costs a task on threads or processes.

``nbflow.core.sizes.output_size`` measures a list, tuple, set or dict by Dask's rule for
them (ten items of a longer one, scaled), without Dask.  Per value, three ways are timed,
alternated round-robin within each repeat (``_harness.alternate``), each sample a batch of
calls:

* ``nbflow``: ``output_size`` as it is now;
* ``dask``: Dask's own ``dask.sizeof.sizeof`` (the figure it matches; the baseline);
* ``cheap_only``: ``cheap_size``, what ``output_size`` did for a collection before (None,
  at once): the cost the change adds to a task is ``nbflow`` minus this.

The values have 10,000 items: floats, NumPy arrays of 100 floats, a dict of floats, and a
list of 10,000 small dicts (two levels of sampling).  Also measured, in fresh
subprocesses, what importing ``dask.sizeof`` costs (what using Dask's function on a
thread run would cost its first list result): CPU and wall milliseconds.

    .venv/bin/python benchmarks/output_size.py --repeat 21 --json out.json
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from typing import Any

import _harness

N_ITEMS = 10_000


def _values() -> dict[str, Any]:
    import numpy as np

    return {
        "list_of_floats": [float(i) for i in range(N_ITEMS)],
        "list_of_arrays": [np.zeros(100) for _ in range(N_ITEMS)],
        "dict_of_floats": {f"k{i:05d}": float(i) for i in range(N_ITEMS)},
        "list_of_dicts": [{"a": float(i), "b": [1.0, 2.0]} for i in range(N_ITEMS)],
    }


def _batch(fn: Any, value: Any, calls: int) -> Any:
    def sample() -> float:
        t0 = time.perf_counter()
        for _ in range(calls):
            fn(value)
        return time.perf_counter() - t0

    return sample


def _import_cost(times: int) -> dict[str, Any]:
    """Milliseconds (CPU, wall) of ``import dask.sizeof`` in a fresh interpreter that has
    loaded NumPy and pandas already (as a notebook has)."""
    code = ("import time, numpy, pandas\n"
            "w, c = time.perf_counter(), time.process_time()\n"
            "import dask.sizeof\n"
            "print((time.process_time() - c) * 1e3, (time.perf_counter() - w) * 1e3)")
    cpu, wall = [], []
    for _ in range(times):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        c, w = map(float, out.stdout.split())
        cpu.append(c)
        wall.append(w)
    return {"cpu_ms_median": statistics.median(cpu), "wall_ms_median": statistics.median(wall),
            "cpu_ms": cpu, "wall_ms": wall}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--repeat", type=int, default=21, help="samples per way and value (>= 15)")
    p.add_argument("--calls", type=int, default=200, help="calls per sample")
    p.add_argument("--imports", type=int, default=7, help="fresh interpreters timing the import")
    p.add_argument("--json", default=None, help="also write the JSON here")
    args = p.parse_args()
    log = _harness.progress("output_size")
    nbflow = _harness.import_nbflow()
    from dask.sizeof import sizeof

    from nbflow.core.sizes import cheap_size, output_size

    results: dict[str, Any] = {}
    for name, value in _values().items():
        got, want = output_size(value), sizeof(value)
        samples = _harness.alternate({
            "nbflow": _batch(output_size, value, args.calls),
            "dask": _batch(sizeof, value, args.calls),
            "cheap_only": _batch(cheap_size, value, args.calls),
        }, args.repeat)
        per = {way: _harness.summarize(s, args.calls) for way, s in samples.items()}
        results[name] = {
            "output_bytes": {"nbflow": got, "dask": want},
            "us_per_call": {way: per[way]["us_per_task"] for way in per},
            "added_us_per_task": per["nbflow"]["us_per_task"] - per["cheap_only"]["us_per_task"],
            "ratio_nbflow_to_dask": _harness.ratio(per["nbflow"]["median_s"], per["dask"]["median_s"]),
            "samples": per,
        }
        log(f"{name}: nbflow {per['nbflow']['us_per_task']:.1f} us, dask {per['dask']['us_per_task']:.1f} us")
    doc = {
        "benchmark": "output_size",
        "machine": _harness.machine_info(getattr(nbflow, "__version__", None)),
        "repeat": args.repeat,
        "calls_per_sample": args.calls,
        "values": results,
        "import_dask_sizeof": _import_cost(args.imports),
    }
    _harness.emit_json(doc, args.json)


if __name__ == "__main__":
    main()
