"""Prediction room: real workflow traces (WfFormat) and makespan simulation.

- :mod:`nbflow.predict.wfformat` loads WfCommons WfFormat 1.5 traces into a :class:`Trace`.
- :mod:`nbflow.predict.simulate` replays a DAG with the engine's dispatch policy and zero
  overhead (:func:`simulate`), for benchmarks and ETAs.
- :mod:`nbflow.predict.observations` turns traces into observation rows
  (:func:`observations_from_wfformat`), the shape :class:`Predictor`
  (:mod:`nbflow.predict.model`) learns task durations from.
"""

from nbflow.predict.model import PredictionError, Predictor
from nbflow.predict.observations import observations_from_wfformat
from nbflow.predict.simulate import Schedule, simulate
from nbflow.predict.wfformat import (
    IndexedGraph,
    Trace,
    TraceTask,
    WfFormatError,
    category_of,
    load_trace,
    parse_trace,
)

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
