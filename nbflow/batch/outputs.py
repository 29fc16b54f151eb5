"""``nf.output(name, value)`` and ``nf.outputs(run_id)``: named results out of notebooks.

A notebook records a value (a number, a DataFrame, a figure — anything the store can
serialize) under a name; it is stored in the ``outputs`` table, owned by the batch run when
the notebook runs under ``nbflow run`` (else by the latest workflow run of the kernel),
and also tagged with that workflow run.  ``nf.outputs(id)`` reads them back, in any
process, by batch id or workflow run id: what papermill users do with scrapbook's
``glue``, kept in nbflow's store.
"""

from __future__ import annotations

import os
import time
from typing import Any

from ..core.errors import NbflowError
from ..params import env
from ..store import serialize
from . import records


class OutputError(NbflowError):
    """An output that cannot be recorded or found."""


def _preview(value: Any) -> str:
    shape = getattr(value, "shape", None)
    text = repr(value)
    if shape is not None and hasattr(value, "columns"):
        text = f"{type(value).__name__} {shape[0]}x{shape[1]}: columns {list(value.columns)[:8]}"
    return text if len(text) <= 200 else text[:199] + "…"


def output(name: str, value: Any) -> None:
    """Record ``value`` as output ``name`` of this batch run (or of the latest workflow run)."""
    if not isinstance(name, str) or not name:
        raise OutputError(f"an output needs a non-empty string name, got {name!r}")
    from ..engine.run import last_run

    store = records.require_store()
    run = last_run()
    run_id = run.id if run is not None else None
    batch = env.batch_id()
    owner = batch or run_id
    if owner is None:
        raise OutputError(
            f"nf.output({name!r}, ...) has nothing to belong to: run it in a notebook run with "
            "`nbflow run`, or after a workflow run (wf.run() / %%workflow)"
        )
    try:
        data = serialize.dumps(value)
    except serialize.SerializationError as e:
        raise OutputError(
            f"output {name!r} cannot be stored ({e}); record a picklable value, e.g. a "
            "DataFrame, a number or a dict"
        ) from None
    store.journal.put(
        records.OUTPUT,
        (owner, name, run_id, batch, type(value).__name__, data, len(data), _preview(value), time.time()),
    )
    store.journal.flush()


def _resolve(store: Any, run_id: str) -> str:
    """The full id that ``run_id`` (a unique prefix is enough) names among output owners."""
    ids = {
        i
        for row in store.journal.query(
            "SELECT owner, run_id FROM outputs WHERE owner LIKE ? || '%' OR run_id LIKE ? || '%'",
            (run_id, run_id),
        )
        for i in row
        if i and i.startswith(run_id)
    }
    if run_id in ids or not ids:
        return run_id
    if len(ids) > 1:
        raise OutputError(
            f"{run_id!r} matches {len(ids)} runs with outputs: {sorted(ids)[:5]}; give more of the id"
        )
    return ids.pop()


def output_rows(run_id: str, home: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """The outputs recorded for a batch run or workflow run (no values loaded)."""
    store = records.require_store(home)
    run_id = _resolve(store, run_id)
    rows = store.journal.query(
        "SELECT owner, name, run_id, batch_id, type, size, preview, created FROM outputs "
        "WHERE owner = ? OR run_id = ? ORDER BY created",
        (run_id, run_id),
    )
    keys = ("owner", "name", "run_id", "batch_id", "type", "size", "preview", "created")
    return [dict(zip(keys, r, strict=True)) for r in rows]


def outputs(run_id: str, *, home: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """``{name: value}`` of the outputs recorded by batch run or workflow run ``run_id``.

    Raises :class:`OutputError` when nothing was recorded under that id."""
    store = records.require_store(home)
    run_id = _resolve(store, run_id)
    rows = store.journal.query(
        "SELECT name, data FROM outputs WHERE owner = ? OR run_id = ? ORDER BY created", (run_id, run_id)
    )
    if not rows:
        raise OutputError(
            f"no outputs recorded for {run_id!r} in the store {store.home}; a notebook records "
            "them with nf.output(name, value) (see `nbflow runs` for run ids)"
        )
    return {name: serialize.loads(data) for name, data in rows}
