"""Prediction room: real workflow traces (WfFormat) and makespan simulation.

- :mod:`nbflow.predict.wfformat` loads WfCommons WfFormat 1.5 traces into a :class:`Trace`.
- :mod:`nbflow.predict.simulate` replays a DAG with the engine's dispatch policy and zero
  overhead (:func:`simulate`), for benchmarks and ETAs.
"""

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
    "Schedule",
    "Trace",
    "TraceTask",
    "WfFormatError",
    "category_of",
    "load_trace",
    "parse_trace",
    "simulate",
]
