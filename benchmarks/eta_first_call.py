"""What the first ``run.eta()`` of a kernel costs the kernel, on a large history.

A copy of the widget benchmark's seeded store (``--seed``, filled to ``--history`` rows of
earlier runs of the same 2 000-task workflow on first use: ``benchmarks/widget.py``), a new
run of that workflow (tasks of ``--spin-ms`` of GIL-holding work, so it is still going when
asked), and its first ``run.eta()``: the CPU time of the calling thread (what the kernel's
cell pays: a fit or a scoring made in this thread counts, one made in a helper process
does not), the process's CPU time over the call (all threads: the run's tasks too), the
wall time, and whether the band came back calibrated.  Then, once the band's calibration
has been worked out (``wait_for_scores``), the same for a second run's first call (a
kernel's later run: the fit and the calibration are shared).

Output: one JSON document (``--json OUT`` also writes it), with the machine and load.

Command: ``.venv/bin/python benchmarks/eta_first_call.py --seed /tmp/widget-seed --json OUT``
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from typing import Any

try:
    from . import _harness
except ImportError:  # run as a script
    import _harness


def first_call(run: Any) -> dict[str, Any]:
    """Thread CPU, process CPU and wall time of ``run.eta()``, and what it said."""
    t0, c0, w0 = time.thread_time(), time.process_time(), time.perf_counter()
    e = run.eta()
    return {"thread_cpu_s": round(time.thread_time() - t0, 3),
            "process_cpu_s": round(time.process_time() - c0, 3),
            "wall_s": round(time.perf_counter() - w0, 3), "eta": str(e),
            "calibrated": getattr(e, "calibrated", "n/a")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", required=True, help="the widget benchmark's seeded store (filled if short)")
    ap.add_argument("--history", type=int, default=30_000)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--spin-ms", type=float, default=3.0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import widget as wb

    import nbflow as nf

    rows = wb.seed_store(args.seed, args.history, args.n, 4)
    wb._set_spin(args.spin_ms)
    out: dict[str, Any] = {"benchmark": "eta_first_call", "machine": _harness.machine_info(nf.__version__),
                           "history_rows": rows, "loadavg_before": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="nbflow-eta-first-") as tmp:
        home = os.path.join(tmp, "store")
        shutil.copytree(args.seed, home)
        with _harness.nbflow_home(home):
            run = wb.build("work", args.n).start(workers=4, cache=False)
            out["first_run"] = first_call(run)
            run.wait()
            try:
                from nbflow.predict import eta_scores
            except ImportError:  # (code before the calibration moved to a helper process)
                eta_scores = None
            if eta_scores is not None:
                eta_scores.wait_for_scores()
                run = wb.build("work", args.n).start(workers=4, cache=False)
                out["next_run"] = first_call(run)
                run.wait()
                eta_scores.drop_score_pool()
            from nbflow.predict import fitting

            fitting.drop_fit_pool()
    out["loadavg_after"] = os.getloadavg()
    _harness.emit_json(out, args.json)


if __name__ == "__main__":
    main()
