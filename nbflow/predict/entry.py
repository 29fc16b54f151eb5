"""Light entry points of the prediction room for ``nbflow``'s top level and ``nf.Run``.

``import nbflow`` must stay quick, and the predictor needs numpy and pandas: these wrappers
import :mod:`nbflow.predict.eta` only when called.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def forecast(
    wf: Any, workers: Sequence[int] = (1, 2, 4, 8, 16), predictor: Any = None, samples: int = 40,
) -> Any:
    """Predicted makespan of ``wf`` per worker count (an :class:`nbflow.predict.eta.Forecast`):
    median and 80% band per count, the critical path, the recommended worker count (the
    knee of the curve) and the tasks without history.  Nothing runs."""
    from nbflow.predict.eta import forecast as _forecast

    return _forecast(wf, workers=workers, predictor=predictor, samples=samples)


def run_eta(run: Any, predictor: Any = None, samples: int = 40) -> Any:
    """See :meth:`nbflow.Run.eta`."""
    from nbflow.predict.eta import run_eta as _run_eta

    return _run_eta(run, predictor=predictor, samples=samples)


def prediction_report(run: Any, predictor: Any = None) -> Any:
    """See :meth:`nbflow.Run.prediction_report`."""
    from nbflow.predict.report import prediction_report as _report

    return _report(run, predictor=predictor)


def eta_text(run: Any) -> str | None:
    """The run's ETA for a progress line (``"ETA 12 s (80%: 10–15 s)"``), or None without
    history.  Fewer simulations on big graphs keep it well under a second."""
    from nbflow.predict.eta import run_eta_text

    return run_eta_text(run)
