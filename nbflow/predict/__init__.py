"""Prediction room: real workflow traces (WfFormat) and makespan simulation.

- :mod:`nbflow.predict.wfformat` loads WfCommons WfFormat 1.5 traces into a :class:`Trace`.
- :mod:`nbflow.predict.simulate` replays a DAG with the engine's dispatch policy and zero
  overhead (:func:`simulate`), for benchmarks and ETAs.
- :mod:`nbflow.predict.observations` turns traces into observation rows
  (:func:`observations_from_wfformat`), the shape :class:`Predictor`
  (:mod:`nbflow.predict.model`) learns task durations from.
"""

from typing import Any

from nbflow.predict.simulate import Schedule, simulate  # light: no third-party imports

__all__ = [
    "IndexedGraph",
    "PredictionError",
    "Predictor",
    "Schedule",
    "Trace",
    "TraceTask",
    "WfFormatError",
    "category_of",
    "load_trace",
    "observations_from_wfformat",
    "parse_trace",
    "simulate",
]

# Imported on first use (numpy, pandas, networkx are not light), so ``import nbflow``
# (which imports nbflow.predict.history for nf.history) stays light.
_LAZY = {
    "IndexedGraph": "nbflow.predict.wfformat",
    "Trace": "nbflow.predict.wfformat",
    "TraceTask": "nbflow.predict.wfformat",
    "WfFormatError": "nbflow.predict.wfformat",
    "category_of": "nbflow.predict.wfformat",
    "load_trace": "nbflow.predict.wfformat",
    "parse_trace": "nbflow.predict.wfformat",
    "PredictionError": "nbflow.predict.model",
    "Predictor": "nbflow.predict.model",
    "observations_from_wfformat": "nbflow.predict.observations",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'nbflow.predict' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value
