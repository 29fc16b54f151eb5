"""Cost of the copies a run's readers take (``TaskStates.records``), against reading live.

Since Session 14 (B), ``run.state_now()`` (what a live ETA reads, on the run's own thread,
from an event subscriber) and the columns of ``run.tasks`` are built from one copy of the
run's records: every list copied by a slice and cut to one length, ``errors`` and
``reasons`` copied by ``dict.copy`` (see ``nbflow/engine/taskstate.py``).  The baseline is
the readers as they were before, kept here verbatim (reading the live lists and dicts), on
the same finished run, alternated call by call (:func:`_harness.alternate`).

The run: ``--n`` items of a map over a Ref, one in ``--fail-every`` failing (``on_error=
"skip"``), so the dicts copied are not empty.  Each sample calls a reader ``--calls`` times;
the figure is the median over ``--repeat`` samples, per call.

Usage::

    python benchmarks/reader_copies.py [--n 2000] [--fail-every 10] [--calls 50] [--repeat 31] [--json OUT]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

if __package__:
    from . import _harness
else:
    import _harness


def old_state_now(run: Any) -> dict[str, list[Any]]:
    """``Run.state_now`` before Session 14 (B): the live lists, read one after another."""
    s = run._sched
    n = len(s.nodes)
    known = s.metrics.input_bytes
    cache = run.result_cache
    return {
        "nodes": list(s.nodes), "state": list(s.state), "start": list(s.start),
        "duration": list(s.duration), "level": list(s.level),
        "input_bytes": [float(b) if (b := known.get(i)) is not None else math.nan for i in range(n)],
        "cached": [cache.cached(i) for i in range(n)] if cache is not None else [False] * n,
    }


def old_rows(run: Any) -> dict[str, list[Any]]:
    """``Run._rows`` (the columns of ``run.tasks``) before Session 14 (B)."""
    from nbflow.core.kinds import INLINE, MAP

    s = run._sched
    n = len(s.nodes)
    cache = run.result_cache
    errors: list[str | None] = [None] * n
    for i, e in s.errors.items():
        errors[i] = f"{type(e).__name__}: {e}"
    for i, r in s.reasons.items():
        errors[i] = r
    return {
        "key": [r.key for r in s.nodes], "task": [r.name for r in s.nodes],
        "state": list(s.state), "attempts": list(s.attempts), "start": list(s.start),
        "end": list(s.end), "duration_s": list(s.duration),
        "cached": [cache.cached(i) for i in range(n)] if cache is not None else [False] * n,
        "output_bytes": list(s.output_bytes), "error": errors,
        "executor": [e or "inline" for e in s.executor],
        "reason": [cache.info(i)[0] for i in range(n)] if cache is not None
        else ["cache off" if r.kind not in INLINE and r.kind != MAP else None for r in s.nodes],
        **s.metrics.columns(n),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--fail-every", type=int, default=10)
    ap.add_argument("--calls", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=31)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    os.environ.setdefault("NBFLOW_HOME", tempfile.mkdtemp(prefix="nbflow-readers-"))
    log = _harness.progress("reader_copies")
    import nbflow as nf

    every = args.fail_every

    @nf.task
    def items(n: int) -> list[int]:
        return list(range(n))

    @nf.task
    def item(x: int) -> int:
        if x % every == 0:
            raise ValueError(x)
        return x

    with nf.Workflow("reader-copies") as wf:
        item.map(items(args.n), on_error="skip")
    run = wf.run(cache=False)
    assert old_rows(run) == run._rows(), "the readers must read the same columns"
    assert old_state_now(run).keys() == run.state_now().keys()

    def calls(fn: Any) -> Any:
        def sample() -> float:
            return _harness.timed(lambda: [fn(run) for _ in range(args.calls)]) / args.calls
        return sample

    samplers = {
        "state_now: copy (now)": calls(lambda r: r.state_now()),
        "state_now: live (before)": calls(old_state_now),
        "tasks' columns: copy (now)": calls(lambda r: r._rows()),
        "tasks' columns: live (before)": calls(old_rows),
    }
    got = _harness.alternate(samplers, args.repeat, log=log)
    med = {name: _harness.summarize(s, 1)["median_s"] for name, s in got.items()}
    out = {
        "benchmark": "reader_copies",
        "machine": _harness.machine_info(nf.__version__),
        "args": vars(args) | {"json": str(args.json) if args.json else None},
        "nodes": len(run.nodes), "failed": len(run.errors()),
        "median_us_per_call": {k: v * 1e6 for k, v in med.items()},
        "ratio_copy_over_live": {
            "state_now": _harness.ratio(med["state_now: copy (now)"], med["state_now: live (before)"]),
            "tasks' columns": _harness.ratio(med["tasks' columns: copy (now)"],
                                             med["tasks' columns: live (before)"]),
        },
        "samples_s": got,
    }
    _harness.emit_json(out, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
