"""Accuracy of ``run.eta()`` on replayed WfFormat traces.

For every trace of a family with at least two instances (family as in
``predict_eval.py``; ``--group app`` by default here, since few file families have two
instances), a :class:`nbflow.predict.Predictor` is fitted on the family's *other*
instances, then the trace is replayed through nbflow (one async task per trace task,
sleeping its runtime times a scale that makes the trace's median task 20 ms, on
``--workers`` workers).  When 25%, 50% and 75% of the tasks have finished, the run's state
is snapshotted (cheaply, inside an event subscriber) and, after the run, the ETA of each
snapshot is computed and compared with the time the run really still took from there.

Reported per trace and as medians over traces: ``|eta - true| / true`` at each mark, and
whether the true remaining time fell inside the 80% band; also the error of the same snapshot
without the run's own pace (``eta_of(..., pace=False)``).  Target: median error <= 15% at 50%.

The replay's own noise is measured beside it: ``true_over_exact`` is the true remaining time
over the ETA a *perfect* prediction gives for the same snapshot (every task's asked sleep,
simulated with no overhead), and ``finished_overshoot`` the finished tasks' measured over
asked sleep; on a loaded machine both are well above 1, and that part of an ETA's error is
the machine's, not the predictor's.  ``--save FILE`` keeps the replays (snapshots and end
times) and ``--load FILE`` scores them again without replaying, so two ways of drawing can
be compared on the very same snapshots.

A family whose other instances are a single run cannot show how much runs differ; its
predictor gets priors learned on the *other* families only: ``run_sd``
(:func:`nbflow.predict.bands.run_spread`), ``work_sd``
(:func:`nbflow.predict.bands.total_spread` of their held-out total-work errors) and
``run_shifts`` (:func:`nbflow.predict.bands.run_shifts`; ``--no-shifts`` leaves it out).

Usage::

    python benchmarks/eta_eval.py DIR [--group app|file] [--workers 4] [--json OUT]
                                      [--save REPLAYS | --load REPLAYS] [--no-shifts]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

if __package__:
    from . import _harness
else:
    import _harness

REPO = Path(__file__).resolve().parents[1]
TARGET_MEDIAN_S = 0.020
MARKS = (0.25, 0.5, 0.75)


def replay_workflow(nf: Any, trace: Any, scale: float) -> Any:
    import anyio

    tasks = {}
    for c in trace.categories():
        @nf.task(name=c)
        async def work(seconds: float, *deps: object) -> None:
            await anyio.sleep(seconds)
        tasks[c] = work
    refs: dict[str, Any] = {}
    with nf.Workflow(trace.name) as wf:
        for tid in trace.topological_order():
            t = trace.task(tid)
            refs[tid] = tasks[t.category](t.runtime_s * scale, *[refs[p] for p in t.parents])
    return wf


def replay(nf: Any, path: Path, workers: int) -> dict[str, Any]:
    """Replay the trace at ``path`` once; the run's snapshots at the marks and when its work ended."""
    from nbflow.predict import load_trace
    from nbflow.predict.eta import snapshot

    trace = load_trace(path)
    runtimes = sorted(t.runtime_s for t in trace.tasks if t.runtime_s > 0)
    scale = TARGET_MEDIAN_S / statistics.median(runtimes) if runtimes else 1.0
    wf = replay_workflow(nf, trace, scale)
    n = len(trace)
    marks = {max(1, round(m * n)): m for m in MARKS}
    snaps: dict[float, Any] = {}
    done = 0

    def factory(run: Any) -> Any:
        def listen(e: Any) -> None:
            nonlocal done
            if type(e).__name__ == "TaskCompleted":
                done += 1
                if done in marks:
                    snaps[marks[done]] = snapshot(run)
        return listen

    off = nf.on_run(factory)
    try:
        run = wf.run(workers=workers, cache=False)
    finally:
        off()
    # The work ends when its last task ends (closing the run, e.g. committing the journal,
    # comes after and is not what an ETA predicts).
    end = float(run.tasks["end"].max().timestamp())
    # What each task was asked to sleep, in the run's node order (the nodes are the trace's
    # tasks in its topological order): the replay's own noise is measured against it.
    asked = [trace.task(tid).runtime_s * scale for tid in trace.topological_order()]
    return {"trace": path.stem, "tasks": n, "scale": scale, "snaps": snaps, "end": end, "asked": asked}


class _Exact:
    """A stand-in predictor that knows every duration (carried in ``input_bytes``): the ETA
    of a perfect prediction, which leaves only what the replay itself adds (sleeps that
    overshoot, the engine's own time)."""

    def predict(self, rows: Any, finished: Any = None) -> Any:
        import pandas as pd

        d = rows["input_bytes"].to_numpy(dtype=float)
        return pd.DataFrame({"duration_s": d, "source": "history"}, index=rows.index)

    def sample(self, rows: Any, n: int = 40, finished: Any = None, seed: int | None = 0) -> Any:
        import numpy as np

        return np.tile(rows["input_bytes"].to_numpy(dtype=float), (1, 1))


def fit_scaled(train: Any, scale: float, run_sd: float | None, work_sd: float | None, shifts: Any) -> Any:
    """A predictor fitted on ``train`` with its times scaled as the replay's were."""
    from nbflow.predict import Predictor

    train = train.copy()
    for c in ("duration_s", "start_s", "end_s"):
        train[c] *= scale
    return Predictor(run_sd=run_sd, work_sd=work_sd, run_shifts=shifts).fit(train)


def own_scores(part: Any, inst: str, replays: dict[str, Any],
               priors: tuple[Any, Any, Any]) -> list[list[float]]:
    """The calibration scores the store holding the *other* instances of ``inst``'s family
    can compute on its own: each of those runs' ETAs at the marks (one list per run), from a
    predictor fitted on the rest of them (neither ``inst`` nor the run scored), against its
    true remaining time."""
    from nbflow.predict.eta import eta_of
    from nbflow.predict.eta_calibration import band_score

    others = [i for i in dict.fromkeys(part["instance"]) if i != inst]
    out = []
    for j in others:
        rest = part[part["instance"].isin([i for i in others if i != j])]
        if rest.empty or j not in replays:
            continue
        rep = replays[j]
        predictor = fit_scaled(rest, rep["scale"], *priors)
        scores = []
        for _, snap in sorted(rep["snaps"].items()):
            e = eta_of(snap, predictor)
            true = rep["end"] - snap.taken_at
            scores.append(band_score(e.remaining_s, e.remaining_lo, e.remaining_hi, true))
        out.append(scores)
    return out


def calibrated(rows: list[dict[str, Any]], family: dict[str, str], own: dict[str, list[list[float]]]) -> None:
    """Replace each row's band by the one stretched by the conformal correction the store
    would learn (:func:`nbflow.predict.eta_calibration.calibration_at`), from its own
    family's past ETAs (``own``) and, as the prior, the scores of every *other* family's
    traces; the simulated band is kept as ``raw_*``."""
    from nbflow.predict.eta import Eta
    from nbflow.predict.eta_calibration import calibrate, calibration_at

    keys = [f"at_{int(m * 100)}" for m in MARKS]
    for r in rows:
        fam = family[r["trace"]]
        pool = [[o[k]["score"] if k in o else float("nan") for k in keys]
                for o in rows if family[o["trace"]] != fam]
        r["calibration"] = {"own_scores": own.get(r["trace"], [])}
        for m, k in zip(MARKS, keys, strict=True):
            if k not in r:
                continue
            cal = calibration_at(own.get(r["trace"], []), pool, done_share=m)
            x = r[k]
            e = calibrate(Eta(x["eta_s"], x["lo_s"], x["hi_s"], 0.0, 0, 0), cal)
            x["raw_in_band"], x["raw_lo_s"], x["raw_hi_s"] = x["in_band"], x["lo_s"], x["hi_s"]
            x["lo_s"], x["hi_s"], x["scale"] = e.remaining_lo, e.remaining_hi, cal.scale
            x["in_band"] = bool(e.remaining_lo <= x["true_s"] <= e.remaining_hi)


def score(obs: Any, rep: dict[str, Any], run_sd: float | None = None, work_sd: float | None = None,
          shifts: Any = None) -> dict[str, Any]:
    """The ETAs of one replay's snapshots from a predictor fitted on the other instances."""
    import dataclasses

    from nbflow.predict.eta import eta_of
    from nbflow.predict.eta_calibration import band_score

    inst, scale = rep["trace"], rep["scale"]
    predictor = fit_scaled(obs[obs["instance"] != inst], scale, run_sd, work_sd, shifts)
    out: dict[str, Any] = {"trace": inst, "tasks": rep["tasks"], "scale": scale}
    for m, snap in sorted(rep["snaps"].items()):
        e = eta_of(snap, predictor)
        plain = eta_of(snap, predictor, pace=False)  # the same moment without the run's pace
        exact = eta_of(dataclasses.replace(snap, input_bytes=list(rep["asked"][:len(snap.keys)])),
                       _Exact(), samples=1, pace=False)  # type: ignore[arg-type]
        true = rep["end"] - snap.taken_at
        fin = [i for i, st in enumerate(snap.states)
               if st == "completed" and snap.durations[i] == snap.durations[i]]
        over = sum(snap.durations[i] for i in fin) / max(sum(rep["asked"][i] for i in fin), 1e-9)
        out[f"at_{int(m * 100)}"] = {
            "eta_s": e.remaining_s, "lo_s": e.remaining_lo, "hi_s": e.remaining_hi, "true_s": true,
            "abs_error": abs(e.remaining_s - true) / true if true > 0 else None,
            "in_band": bool(e.remaining_lo <= true <= e.remaining_hi),
            "score": band_score(e.remaining_s, e.remaining_lo, e.remaining_hi, true),
            "abs_error_without_pace": abs(plain.remaining_s - true) / true if true > 0 else None,
            # the replay's own noise: true remaining over a perfect prediction's ETA, and the
            # finished tasks' measured over asked sleep
            "exact_s": exact.remaining_s,
            "true_over_exact": true / exact.remaining_s if exact.remaining_s > 0 else None,
            "finished_overshoot": over,
        }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", type=Path)
    ap.add_argument("--group", choices=("app", "file"), default="app")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--save", type=Path, help="keep the replays (snapshots, end times) in this pickle")
    ap.add_argument("--load", type=Path, help="score the replays of an earlier --save instead of replaying")
    ap.add_argument("--no-shifts", action="store_true",
                    help="no run_shifts prior from the other families (single-run histories draw normals)")
    ap.add_argument("--no-calibration", action="store_true",
                    help="report the simulated band as it is, without the store's conformal correction")
    args = ap.parse_args(argv)
    os.environ.setdefault("NBFLOW_HOME", tempfile.mkdtemp(prefix="nbflow-eta-"))
    import nbflow as nf
    from nbflow.predict import observations_from_wfformat
    from nbflow.predict.bands import run_shifts, run_spread, total_spread, work_errors

    obs = observations_from_wfformat(args.dir)
    if args.group == "app":
        obs["family"] = obs["instance"].str.split("-").str[0]
    rows = []
    errors = work_errors(obs, by="family")  # held-out error of each run's total, per family
    replays: dict[str, Any] = {}
    family: dict[str, str] = {}
    own: dict[str, list[list[float]]] = {}
    if args.load is not None:  # score replays taken before (quick: nothing runs)
        with open(args.load, "rb") as f:
            replays = pickle.load(f)
    for _fam, part in obs.groupby("family", sort=True):
        instances = list(dict.fromkeys(part["instance"]))
        if len(instances) < 2:
            continue
        # How much runs differ (per task family, and in their total work), learned from
        # the *other* families only, for histories of a single run (as in predict_eval.py).
        run_sd = run_spread(obs[obs["family"] != _fam])
        work_sd = total_spread(errors[errors["group"] != _fam])
        shifts = run_shifts(obs[obs["family"] != _fam]) if not args.no_shifts else None
        for inst in instances:
            if inst not in replays:
                replays[inst] = replay(nf, args.dir / f"{inst}.json", args.workers)
        for inst in instances:
            r = score(part, replays[inst], run_sd, work_sd, shifts)
            print(json.dumps(r), file=sys.stderr)
            rows.append(r)
            family[inst] = str(_fam)
            if not args.no_calibration:
                own[inst] = own_scores(part, inst, replays, (run_sd, work_sd, shifts))
    if not args.no_calibration:
        calibrated(rows, family, own)
    if args.save is not None:
        with open(args.save, "wb") as f:
            pickle.dump(replays, f)
    summary = {}
    for m in MARKS:
        k = f"at_{int(m * 100)}"
        errs = [r[k]["abs_error"] for r in rows if k in r and r[k]["abs_error"] is not None]
        band = [r[k]["in_band"] for r in rows if k in r]
        plain = [r[k]["abs_error_without_pace"] for r in rows
                 if k in r and r[k]["abs_error_without_pace"] is not None]
        raw = [r[k].get("raw_in_band", r[k]["in_band"]) for r in rows if k in r]
        at = [r[k] for r in rows if k in r and r[k]["true_s"] > 0]
        width = [(x["hi_s"] - x["lo_s"]) / x["true_s"] for x in at]
        raw_width = [(x.get("raw_hi_s", x["hi_s"]) - x.get("raw_lo_s", x["lo_s"])) / x["true_s"] for x in at]
        summary[k] = {
            "median_abs_error": statistics.median(errs) if errs else None,
            "in_band_share_uncalibrated": sum(raw) / len(raw) if raw else None,
            # the band's width over the true remaining time (median over traces): wider bands show here
            "median_band_width_over_true": statistics.median(width) if width else None,
            "median_band_width_over_true_uncalibrated": statistics.median(raw_width) if raw_width else None,
            "median_abs_error_without_pace": statistics.median(plain) if plain else None,
            "in_band_share": sum(band) / len(band) if band else None,
            "traces": len(errs),
            # the replay's own noise (see score): true remaining over a perfect prediction's
            "median_true_over_exact": statistics.median(
                r[k]["true_over_exact"] for r in rows if k in r and r[k]["true_over_exact"] is not None),
        }
    med50 = summary["at_50"]["median_abs_error"]
    # (the folder's name only: the results must not depend on where it is)
    result = {"dir": args.dir.name, "group": args.group, "workers": args.workers,
              "calibrated": not args.no_calibration, "loadavg": os.getloadavg(), "summary": summary,
              "target_median_at_50_le_15pct": med50 is not None and med50 <= 0.15, "traces": rows}
    _harness.emit_json(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
