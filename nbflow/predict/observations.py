"""Observation rows: one row per finished task run, the shape every predictor consumes.

A duration model learns from *observations*: what ran (``task``, its category), what it
got (``input_bytes``) and how long it took (``duration_s``), grouped by the run it
belonged to (``instance``).  The journal's history and real workflow traces produce the
same rows, so one model serves both.

WfFormat traces record each task's runtime but no start times.  ``start_s`` is therefore
the task's *earliest* start in its graph: the heaviest runtime path from a root to it
(its parents' latest earliest finish).  That is when the task would start with unlimited
workers, and it orders a trace's tasks the way a real run would finish them, which is
what online correction needs ("which tasks of this run had finished when this one began").
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from nbflow.predict.wfformat import Trace, load_trace

__all__ = ["OBSERVATION_COLUMNS", "family_of", "observations_from_trace", "observations_from_wfformat"]

OBSERVATION_COLUMNS = [
    "instance",
    "task",
    "key",
    "input_bytes",
    "output_bytes",
    "duration_s",
    "start_s",
    "end_s",
]

_INSTANCE_SUFFIX = re.compile(r"[-_.]?\d+$")


def family_of(path_or_name: str | os.PathLike[str]) -> str:
    """The trace family of a file: its name without extension and trailing instance number.

    >>> family_of("blast-chameleon-small-003.json")
    'blast-chameleon-small'
    >>> family_of("helloworld-chain-5-chameleon.json")
    'helloworld-chain-5-chameleon'
    """
    stem = Path(path_or_name).name
    if stem.endswith(".json"):
        stem = stem[: -len(".json")]
    head = _INSTANCE_SUFFIX.sub("", stem)
    return head or stem


def observations_from_trace(trace: Trace, instance: str | None = None) -> pd.DataFrame:
    """Observation rows of one :class:`~nbflow.predict.wfformat.Trace` (file order)."""
    name = instance if instance is not None else (Path(trace.source).stem if trace.source else trace.name)
    finish: dict[str, float] = {}
    start: dict[str, float] = {}
    for tid in trace.topological_order():
        t = trace.task(tid)
        s = max((finish[p] for p in t.parents), default=0.0)
        start[tid] = s
        finish[tid] = s + t.runtime_s
    rows = [
        (
            name,
            t.category,
            t.id,
            int(t.input_bytes),
            int(t.output_bytes),
            float(t.runtime_s),
            start[t.id],
            finish[t.id],
        )
        for t in trace.tasks
    ]
    return pd.DataFrame(rows, columns=OBSERVATION_COLUMNS)


def observations_from_wfformat(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
) -> pd.DataFrame:
    """Turn WfFormat 1.5 trace files into observation rows, one per trace task.

    ``paths`` is one file, a directory (every ``*.json`` in it) or an iterable of files.
    Columns: ``instance`` (the file name without ``.json``), ``family`` (that name without
    its trailing instance number), ``task`` (the category: the name without ``_ID...``),
    ``key`` (the trace task id), ``input_bytes``, ``output_bytes``, ``duration_s``,
    ``start_s`` (earliest start in its graph) and ``end_s`` (``start_s + duration_s``).
    """
    if isinstance(paths, str | os.PathLike):
        p = Path(paths)
        files = sorted(p.glob("*.json")) if p.is_dir() else [p]
    else:
        files = [Path(x) for x in paths]
    frames = []
    for f in files:
        obs = observations_from_trace(load_trace(f), instance=f.stem)
        obs.insert(1, "family", family_of(f))
        frames.append(obs)
    if not frames:
        return pd.DataFrame(columns=[*OBSERVATION_COLUMNS[:1], "family", *OBSERVATION_COLUMNS[1:]])
    return pd.concat(frames, ignore_index=True)
