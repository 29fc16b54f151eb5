"""Where a kernel's first watched run spends CPU for its ETA that a later run does not.

A *cold* watched run (a new copy of a seeded store: no fit in this process yet, so the run
starts the fit and the band's calibration in the helper processes) and a *warm* one (the
fit shared), alternated ``--pairs`` times, each under yappi with its CPU clock on every
thread of this process (the helpers are other processes: not counted).  Printed: the
process's CPU per run (under yappi: slower than without), the kernel CPU of the ETA's
entry points per run, and the functions whose CPU differs most between the two.  This
is the attribution behind ``benchmarks/widget.py``'s ``history-cold`` figure (function
CPU survives a loaded machine better than a whole run's ratio does).

Command (``--seed``: a store seeded by ``benchmarks/widget.py --seed DIR``)::

    .venv/bin/python benchmarks/widget_cold_cpu.py --seed /tmp/widget-seed --pairs 3
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

ENTRY_POINTS = ("quick_predictor", "_history_rows", "fit_in_process", "eta_of", "current", "_submit",
                "_collect", "shared_predictor", "_predictor", "scores_for", "band_of", "query")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", required=True, help="a seeded store (benchmarks/widget.py --seed)")
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--n", type=int, default=2000)
    args = ap.parse_args()
    import widget as bench
    import yappi

    from nbflow.predict import eta as eta_mod
    from nbflow.predict import eta_scores, fitting

    bench.install_counting_comm()
    bench.set_fit_worth(0)  # the fit starts with the run, as in widget.py --fit-worth-s 0
    tmp = tempfile.TemporaryDirectory(prefix="nbflow-cold-cpu-")
    warm_at = os.path.join(tmp.name, "warm")
    with bench.sample_store(args.seed, at=warm_at):  # warm-up: helpers started, the warm fit shared
        bench.run_plain(bench.build("work", 200), 4)
        bench.run_watched(bench.build("work", 200), 4)
        bench._fit_shared(eta_mod)
        bench.run_watched(bench.build("work", 200), 4)
        fitting.wait_for_fits()
    with bench.sample_store(args.seed):
        bench.run_watched(bench.build("work", 200), 4)
        fitting.wait_for_fits()
    stats: dict[tuple[str, str, int], dict[str, float]] = {}
    total: dict[str, list[float]] = {"cold": [], "warm": []}
    for _ in range(args.pairs):
        for label in ("cold", "warm"):
            wf = bench.build("work", args.n)
            gc.collect()
            with bench.sample_store(args.seed, at=warm_at if label == "warm" else None):
                yappi.set_clock_type("cpu")
                yappi.clear_stats()
                yappi.start(builtins=False)
                cpu = time.process_time()
                bench.run_watched(wf, 4)
                total[label].append(time.process_time() - cpu)
                yappi.stop()
                for f in yappi.get_func_stats():
                    if "nbflow" in f.module:
                        key = (f.module.split("nbflow/", 1)[-1], f.name, f.lineno)
                        d = stats.setdefault(key, {"cold": 0.0, "warm": 0.0})
                        d[label] += f.ttot / args.pairs
                fitting.wait_for_fits()
    print("load", [round(x, 1) for x in os.getloadavg()])
    print("process CPU per watched run (median, under yappi), s:",
          {k: round(statistics.median(v), 3) for k, v in total.items()})
    print("kernel CPU per watched run (mean), cold / warm, s:")
    for k, v in sorted(stats.items()):
        if k[1].split(".")[-1] in ENTRY_POINTS:
            print(f"  {k[1]:28s} {v['cold']:.4f} / {v['warm']:.4f}   {k[0]}:{k[2]}")
    print("largest differences (cold - warm), s:")
    for k, v in sorted(stats.items(), key=lambda kv: -(kv[1]["cold"] - kv[1]["warm"]))[:20]:
        print(f"  {v['cold'] - v['warm']:+.4f}  {k[1]}  {k[0]}:{k[2]}")
    fitting.drop_fit_pool()
    eta_scores.drop_score_pool()
    tmp.cleanup()


if __name__ == "__main__":
    main()
