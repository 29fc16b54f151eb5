"""What any band rule of a stated kind can reach on the two coverage misses of predict_eval.

``predict_eval.py`` scores the 80% intervals of :class:`nbflow.predict.Predictor` per
application (leave one instance out).  Two applications stay outside 75-85% coverage, and
this script measures, on the same folds, what a band *could* do there and what the
training data can tell a rule about it:

* **same-size answers** (``--family seismology``): calls answered by the same-size memory
  (an input size seen before: the same file read again) get the band of the family's
  model.  Kind of rule: *a symmetric band of log half-width w for those answers* (the
  model's answers keep theirs).  Reported: the coverage of the family for each ``w``, the
  range of ``w`` that lands in 75-85%, and the half-width each source of training
  evidence would give: the model's held-out residuals (today's band), the log differences
  of calls that share a size *within* the training run (the only same-size evidence one run
  holds), and the same-size errors of the *other* applications across their runs (a prior
  learned elsewhere, as ``run_sd`` is).
* **a step that moved between runs** (``--family srasearch``): kind of rule: *a normal run
  effect of sd sigma added to the band of every family fitted on one run* (what the
  predictor does with its ``run_sd`` prior).  Reported: the coverage of every application
  whose history is one run, per sigma, so the sigma that a miss needs can be read against
  what it does to the others; and, for the narrower rule *widen only steps whose calls all
  read inputs of one size* (no within-run signal to learn from), how far such steps of the
  other applications moved between their runs.

Every quantity is computed on training data or on the other applications, except the
coverage itself (that is the figure being bounded).  Usage::

    python benchmarks/predict_bounds.py DIR [--json OUT]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from nbflow.predict.bands import conformal_bounds, run_spread
from nbflow.predict.model import Predictor, _exact_sizes
from nbflow.predict.observations import observations_from_wfformat

if __package__:
    from . import _harness
else:
    import _harness

SIGNIFICANT_S = 0.05
WIDTHS = np.round(np.arange(0.3, 1.61, 0.05), 2)
SIGMAS = (None, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8)


def _folds(part: pd.DataFrame) -> list[tuple[pd.DataFrame, pd.DataFrame]]:
    return [(part[part["instance"] != i], part[part["instance"] == i]) for i in pd.unique(part["instance"])]


def _log_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(a, 1e-3)) - np.log(np.maximum(b, 1e-3))


def _half_width(resid: np.ndarray) -> float:
    """Symmetric log half-width of the split-conformal 80% band of ``resid`` (both signs)."""
    r = np.asarray(resid, dtype=float)
    if not len(r):
        return float("nan")
    lo, hi = conformal_bounds(np.concatenate([r, -r]))
    return float((hi - lo) / 2)


def within_run_same_size(train: pd.DataFrame) -> np.ndarray:
    """Log differences between calls of one task that share an input size in one run."""
    out: list[float] = []
    for _, rows in train.groupby(["instance", "task", "input_bytes"]):
        y = rows["duration_s"].to_numpy(float)
        if len(y) > 1:
            ly = np.log(np.maximum(y, 1e-3))
            out.extend((ly[:, None] - ly[None, :])[np.triu_indices(len(y), 1)].tolist())
    return np.asarray(out)


def cross_run_same_size(obs: pd.DataFrame) -> pd.DataFrame:
    """Same-size errors across runs: every call whose size the task's *other* runs saw
    (a size that singles out few calls, as the predictor's memory keeps them), against the
    median of those calls.  Columns ``app``, ``task``, ``log_error``."""
    rows = []
    for (app, task), part in obs.groupby(["app", "task"]):
        if part["instance"].nunique() < 2:
            continue
        x = part["input_bytes"].fillna(0).to_numpy(float)
        y = part["duration_s"].to_numpy(float)
        inst = part["instance"].to_numpy()
        for i in pd.unique(inst):
            te = inst == i
            seen = _exact_sizes(x[~te], y[~te])
            hit = np.array([seen.get(float(v), np.nan) for v in x[te]])
            ok = ~np.isnan(hit) & (y[te] > SIGNIFICANT_S)
            rows.extend((app, task, v) for v in _log_diff(y[te][ok], hit[ok]))
    return pd.DataFrame(rows, columns=["app", "task", "log_error"])


def same_size_bound(obs: pd.DataFrame, app: str) -> dict[str, object]:
    """Coverage of ``app`` against the half-width of its same-size answers' band."""
    part = obs[obs["app"] == app]
    others = obs[obs["app"] != app]
    prior = run_spread(others)
    ys, los, his, same, point, model_resid, dup = [], [], [], [], [], [], []
    for train, test in _folds(part):
        p = Predictor(run_sd=prior).fit(train)
        out = p.predict(test)
        ys.append(test["duration_s"].to_numpy(float))
        los.append(out["duration_lo"].to_numpy())
        his.append(out["duration_hi"].to_numpy())
        same.append((out["model"] == "same size").to_numpy())
        point.append(out["duration_s"].to_numpy())
        for fam in p.families.values():
            if fam.exact:
                model_resid.append(fam.resid_offline)
        dup.append(within_run_same_size(train))
    y, lo, hi = np.concatenate(ys), np.concatenate(los), np.concatenate(his)
    ss, pt = np.concatenate(same), np.concatenate(point)
    keep = y > SIGNIFICANT_S

    def cover(lo_a: np.ndarray, hi_a: np.ndarray, sel: np.ndarray) -> float:
        ok = (lo_a <= y * (1 + 1e-9)) & (y <= hi_a * (1 + 1e-9))
        return float(ok[sel & keep].mean() * 100)

    def cover_at(w: float) -> float:
        lo_w = np.where(ss, pt * np.exp(-w), lo)
        hi_w = np.where(ss, pt * np.exp(w), hi)
        return cover(lo_w, hi_w, np.ones_like(keep))

    sweep = {float(w): cover_at(float(w)) for w in WIDTHS}
    ok_w = [w for w, c in sweep.items() if 75 <= c <= 85]
    errors = _log_diff(y, pt)
    cross = cross_run_same_size(others)
    by_app = cross.groupby("app")["log_error"]
    # Each other application counted equally (as bands.run_shifts counts workflows).
    equal = np.concatenate([np.resize(v.to_numpy(), 200) for _, v in by_app]) if len(cross) else np.empty(0)
    today = np.log(hi[ss]) - np.log(lo[ss])
    evidence = {
        "today_model_band_mean": float(np.mean(today) / 2) if len(today) else float("nan"),
        "model_held_out_residuals": _half_width(np.concatenate(model_resid)) if model_resid else float("nan"),
        "within_run_same_size_pairs": _half_width(np.concatenate(dup)),
        "other_apps_same_size_by_calls": _half_width(cross["log_error"].to_numpy()),
        "other_apps_same_size_each_app_equal": _half_width(equal),
    }
    return {
        "tasks": int(keep.sum()),
        "same_size_answers": int((ss & keep).sum()),
        "coverage_now": cover(lo, hi, np.ones_like(keep)),
        "coverage_same_size_now": cover(lo, hi, ss),
        "coverage_model_answers": cover(lo, hi, ~ss),
        "coverage_by_half_width": sweep,
        "half_width_range_75_85": [min(ok_w), max(ok_w)] if ok_w else None,
        # What the held-out run's same-size errors themselves would need (an oracle):
        "oracle_half_width": _half_width(errors[ss & keep]),
        "evidence_half_width": evidence,
        # The family's coverage if the same-size answers got each evidence's band:
        "coverage_at_evidence": {k: cover_at(v) for k, v in evidence.items() if np.isfinite(v)},
        "coverage_at_oracle": cover_at(_half_width(errors[ss & keep])),
        "within_run_same_size_pairs": int(sum(len(d) for d in dup)),
        "other_apps_same_size_calls": {str(k): len(v) for k, v in by_app},
    }


def one_run_sigma_sweep(obs: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Coverage of every application whose held-out folds fit on one run, per run-effect sd.

    ``None`` is the prior the evaluation learns from the other applications (today)."""
    out: dict[str, dict[str, float]] = {}
    for app, part in obs.groupby("app"):
        if part["instance"].nunique() != 2:
            continue
        prior = run_spread(obs[obs["app"] != app])
        row = {}
        for sigma in SIGMAS:
            ys, ins = [], []
            for train, test in _folds(part):
                res = Predictor(run_sd=prior if sigma is None else sigma).fit(train).predict(test)
                y = test["duration_s"].to_numpy(float)
                ys.append(y)
                ins.append((res["duration_lo"].to_numpy() <= y * (1 + 1e-9))
                           & (y <= res["duration_hi"].to_numpy() * (1 + 1e-9)))
            y, inside = np.concatenate(ys), np.concatenate(ins)
            row["learned" if sigma is None else str(sigma)] = float(inside[y > SIGNIFICANT_S].mean() * 100)
        out[str(app)] = row
    return out


def alike_step_shifts(obs: pd.DataFrame) -> pd.DataFrame:
    """Steps with several calls per run that all read inputs of one size: how far their
    median log duration moved between runs (max - min over runs)."""
    rows = []
    for (app, task), part in obs.groupby(["app", "task"]):
        g = part.groupby("instance")
        if len(g) < 2 or g.size().min() < 2 or g["input_bytes"].nunique().max() > 1:
            continue
        med = np.log(np.maximum(g["duration_s"].median().to_numpy(float), 1e-3))
        rows.append((app, task, int(g.size().min()), float(med.max() - med.min())))
    return pd.DataFrame(rows, columns=["app", "task", "calls_per_run", "shift"])


def moved_step_need(obs: pd.DataFrame, app: str, step: str) -> dict[str, object]:
    """How wide ``step``'s band must be for ``app`` to reach 75% coverage, all else covered."""
    part = obs[obs["app"] == app]
    prior = run_spread(obs[obs["app"] != app])
    ys, inside, is_step, err = [], [], [], []
    for train, test in _folds(part):
        res = Predictor(run_sd=prior).fit(train).predict(test)
        y = test["duration_s"].to_numpy(float)
        ys.append(y)
        inside.append((res["duration_lo"].to_numpy() <= y) & (y <= res["duration_hi"].to_numpy()))
        is_step.append((test["task"] == step).to_numpy())
        err.append(_log_diff(y, res["duration_s"].to_numpy()))
    y, ins, st, e = (np.concatenate(v) for v in (ys, inside, is_step, err))
    keep = y > SIGNIFICANT_S
    n = int(keep.sum())
    need = int(np.ceil(0.75 * n))
    rest = int((ins & ~st & keep).sum())  # covered outside the step, as today
    others_all = int((~st & keep).sum())
    step_abs = np.sort(np.abs(e[st & keep]))
    # The step's calls that must be covered if everything else were, and the |log error| of
    # the k-th best of them: the smallest symmetric half-width that gets there.
    k_all = max(need - others_all, 0)
    k_now = max(need - rest, 0)
    return {
        "tasks": n, "needed_inside": need, "step_calls": len(step_abs),
        "inside_outside_step_now": rest, "outside_step": others_all,
        "half_width_needed_if_rest_all_covered": float(step_abs[k_all - 1]) if k_all else 0.0,
        "half_width_needed_with_rest_as_now": (float(step_abs[k_now - 1])
                                               if 0 < k_now <= len(step_abs) else None),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", type=Path, help="directory of WfFormat 1.5 .json traces")
    ap.add_argument("--same-size", default="seismology", help="application whose same-size band is bounded")
    ap.add_argument("--moved", default="srasearch:fasterq-dump", help="APP:STEP whose shift is bounded")
    ap.add_argument("--json", type=Path, help="write the figures here as well")
    args = ap.parse_args(argv)
    obs = observations_from_wfformat(args.dir)
    if obs.empty:
        print(f"no *.json traces in {args.dir}", file=sys.stderr)
        return 2
    obs["app"] = obs["instance"].str.split("-").str[0]
    app, _, step = args.moved.partition(":")
    alike = alike_step_shifts(obs)
    result = {
        "dir": args.dir.name,
        "same_size": {args.same_size: same_size_bound(obs, args.same_size)},
        "moved_step": {args.moved: moved_step_need(obs, app, step)},
        "alike_steps_of_other_apps": alike[alike["app"] != app].to_dict(orient="records"),
        "one_run_coverage_by_sigma": one_run_sigma_sweep(obs),
    }
    _harness.emit_json(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
