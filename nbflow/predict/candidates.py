"""Candidate duration models of one task family, as functions of input size.

Each candidate is fitted on one family's observations (input sizes ``x`` in bytes and
durations ``y`` in seconds) and predicts durations for new sizes.  The
:class:`~nbflow.predict.model.Predictor` fits all of them, measures each on held-out
data and keeps the best per family, so a family whose runtime does not depend on its
input gets the median, a family that scans its input gets a linear or power law, and a
family with a lumpy relation (several kinds of input hidden in one task) gets the
neighbours in log size.

Durations are positive; predictions are clipped at :data:`FLOOR_S` so that ratios and
logarithms stay finite.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["CANDIDATES", "FLOOR_S", "Fitted", "fit_knn", "fit_linear", "fit_mean", "fit_median", "fit_power"]

FLOOR_S = 1e-3

Fitted = Callable[[np.ndarray], np.ndarray]


def _logx(x: np.ndarray) -> np.ndarray:
    return np.log1p(np.maximum(np.asarray(x, dtype=float), 0.0))


def fit_median(x: np.ndarray, y: np.ndarray) -> Fitted:
    """Constant: the median duration (runtime independent of input)."""
    m = float(np.median(y))

    def predict(xq: np.ndarray) -> np.ndarray:
        return np.full(len(xq), max(m, FLOOR_S))

    return predict


def fit_mean(x: np.ndarray, y: np.ndarray) -> Fitted:
    """Constant: the mean duration.

    A family mixing kinds of call in shares that vary from run to run has a median that
    jumps between the kinds while its mean stays between them; which point has the lower
    relative error on new runs is not a matter of skew alone, so held-out error decides.
    """
    m = float(np.mean(y))

    def predict(xq: np.ndarray) -> np.ndarray:
        return np.full(len(xq), max(m, FLOOR_S))

    return predict


def _varies(x: np.ndarray) -> bool:
    # Sizes within 1% of each other carry no signal; a slope fitted on them is noise that
    # explodes as soon as a new size is 2% away.
    x = np.asarray(x, dtype=float)
    return len(x) >= 3 and np.ptp(x) > 0.01 * max(float(np.mean(np.abs(x))), 1.0)


def _clamp(y: np.ndarray) -> tuple[float, float]:
    # Extrapolation is allowed, within reason: a law fitted on a range of sizes is not
    # trusted to predict more than 4x beyond the durations it has seen.
    y = np.asarray(y, dtype=float)
    return max(float(np.min(y)) / 4.0, FLOOR_S), max(float(np.max(y)) * 4.0, FLOOR_S)


def fit_linear(x: np.ndarray, y: np.ndarray) -> Fitted:
    """Least squares ``a + b * input_bytes`` (median when the sizes do not vary)."""
    x = np.asarray(x, dtype=float)
    if not _varies(x):
        return fit_median(x, y)
    b, a = np.polyfit(x, y, 1)
    lo, hi = _clamp(y)

    def predict(xq: np.ndarray) -> np.ndarray:
        return np.clip(a + b * np.asarray(xq, dtype=float), lo, hi)

    return predict


def fit_power(x: np.ndarray, y: np.ndarray) -> Fitted:
    """Power law ``c * (1 + input_bytes) ** k``, fitted in log-log space."""
    if not _varies(x):
        return fit_median(x, y)
    lx = _logx(x)
    k, logc = np.polyfit(lx, np.log(np.maximum(y, FLOOR_S)), 1)
    lo, hi = _clamp(y)

    def predict(xq: np.ndarray) -> np.ndarray:
        return np.clip(np.exp(np.minimum(logc + k * _logx(xq), 700.0)), lo, hi)

    return predict


def fit_knn(x: np.ndarray, y: np.ndarray) -> Fitted:
    """Median duration of the ``k`` nearest observations in log input size.

    ``k`` grows with the square root of the sample (3..15): small enough to follow a
    relation of any shape, large enough to average out machine noise.  Ties in distance
    (many tasks with the same input size) are all kept, so equal inputs give equal answers.
    """
    lx = _logx(x)
    ly = np.log(np.maximum(np.asarray(y, dtype=float), FLOOR_S))
    order = np.argsort(lx, kind="stable")
    lx, ly = lx[order], ly[order]
    n = len(lx)
    k = int(min(n, max(3, min(15, round(np.sqrt(n))))))

    def predict(xq: np.ndarray) -> np.ndarray:
        q = _logx(xq)
        out = np.empty(len(q))
        # Distances to every stored point: families are small (hundreds of rows at most
        # per query batch), so a dense distance matrix is simplest and fast enough.
        d = np.abs(q[:, None] - lx[None, :])
        part = np.partition(d, k - 1, axis=1)[:, k - 1]
        for i in range(len(q)):
            sel = d[i] <= part[i] + 1e-12
            out[i] = np.exp(np.median(ly[sel]))
        return np.maximum(out, FLOOR_S)

    return predict


CANDIDATES: dict[str, Callable[[np.ndarray, np.ndarray], Fitted]] = {
    "median": fit_median,
    "mean": fit_mean,
    "linear": fit_linear,
    "power": fit_power,
    "knn": fit_knn,
}
