"""Batch rows in the store: batch runs, their workflow runs, parameters and outputs.

Four tables (journal migration 2): ``batches`` (one row per ``nbflow run`` of a notebook,
a sweep point, or a notebook run as a task), ``batch_runs`` (which workflow runs a batch
made), ``run_params`` (the parameters each workflow run saw) and ``outputs`` (named values a
notebook recorded with ``nf.output``; the serialized bytes live in the row, so ``nbflow gc``
never removes an output a batch row still names).

Writes go through the journal's writer thread like every other row; readers flush first,
so a process reads its own writes.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..store.journal import Op, StoreError
from ..store.store import Store, get_store

BATCH_START = Op(
    "INSERT OR REPLACE INTO batches(id, kind, notebook, output, status, start, end, duration_s, "
    "parameters, options, host, pid, cwd, error, parent) "
    "VALUES(?,?,?,?,?,?,NULL,NULL,?,?,?,?,?,NULL,?)",
    urgent=True,
)
BATCH_END = Op("UPDATE batches SET status = ?, end = ?, duration_s = ?, error = ? WHERE id = ?", urgent=True)
LINK = Op("INSERT OR IGNORE INTO batch_runs(batch_id, run_id) VALUES(?,?)", urgent=True)
PARAM = Op("INSERT OR REPLACE INTO run_params(run_id, name, value) VALUES(?,?,?)")
OUTPUT = Op(
    "INSERT OR REPLACE INTO outputs(owner, name, run_id, batch_id, type, data, size, preview, created) "
    "VALUES(?,?,?,?,?,?,?,?,?)",
    urgent=True,
)

BATCH_FIELDS = (
    "id",
    "kind",
    "notebook",
    "output",
    "status",
    "start",
    "end",
    "duration_s",
    "parameters",
    "options",
    "host",
    "pid",
    "cwd",
    "error",
    "parent",
)


def new_batch_id() -> str:
    """A batch id: ``b`` + the run id format (sortable by start time, unique)."""
    import uuid

    return f"b{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"


def require_store(home: str | os.PathLike[str] | None = None) -> Store:
    """The store (at ``home``, default ``$NBFLOW_HOME`` or ``./.nbflow``), or StoreError."""
    store = get_store(Path(home) if home is not None else None, warn=False)
    if store is None:
        from ..store.store import store_home

        raise StoreError(
            f"no usable nbflow store at {home or store_home()} (NBFLOW_STORE=off, or "
            "the directory is not writable); batch runs need one"
        )
    return store


def to_json(value: Any) -> str:
    return json.dumps(value, default=repr, separators=(",", ":"))


def start_batch(
    store: Store,
    batch_id: str,
    *,
    kind: str,
    notebook: str,
    output: str | None,
    parameters: dict[str, Any],
    options: dict[str, Any],
    parent: str | None = None,
) -> None:
    store.journal.put(
        BATCH_START,
        (
            batch_id,
            kind,
            notebook,
            output,
            "running",
            time.time(),
            to_json(parameters),
            to_json(options),
            socket.gethostname(),
            os.getpid(),
            os.getcwd(),
            parent,
        ),
    )
    store.journal.flush()


def finish_batch(store: Store, batch_id: str, status: str, started: float, error: str | None = None) -> None:
    now = time.time()
    store.journal.put(BATCH_END, (status, now, now - started, error, batch_id))
    store.journal.flush()


def link_run(store: Store, batch_id: str, run_id: str) -> None:
    store.journal.put(LINK, (batch_id, run_id))


def record_params(store: Store, run_id: str, params: dict[str, Any]) -> None:
    store.journal.put_many(PARAM, [(run_id, k, to_json(v)) for k, v in params.items()])


# -- reading -------------------------------------------------------------------------------


def batch(store: Store, batch_id: str) -> dict[str, Any] | None:
    """The batch row ``batch_id`` (a unique prefix is enough) as a dict, or None."""
    rows = store.journal.query(
        f"SELECT {', '.join(BATCH_FIELDS)} FROM batches WHERE id LIKE ? || '%' ORDER BY start", (batch_id,)
    )
    exact = [r for r in rows if r[0] == batch_id]
    rows = exact or rows
    if not rows:
        return None
    if len(rows) > 1:
        raise KeyError(f"{batch_id!r} matches {len(rows)} batch runs; give more of the id")
    from ..store.history import effective_status

    out = dict(zip(BATCH_FIELDS, rows[0], strict=True))
    out["status"] = effective_status(out["status"], out["host"], out["pid"])
    for k in ("parameters", "options"):
        out[k] = json.loads(out[k]) if out[k] else {}
    return out


def batches(store: Store, ids: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Every batch row (or those with ``ids``), oldest first."""
    rows = store.journal.query(f"SELECT {', '.join(BATCH_FIELDS)} FROM batches ORDER BY start")
    wanted = set(ids) if ids is not None else None
    out = []
    from ..store.history import effective_status

    for r in rows:
        if wanted is not None and r[0] not in wanted:
            continue
        d = dict(zip(BATCH_FIELDS, r, strict=True))
        d["status"] = effective_status(d["status"], d["host"], d["pid"])
        for k in ("parameters", "options"):
            d[k] = json.loads(d[k]) if d[k] else {}
        out.append(d)
    return out


def runs_of_batch(store: Store, batch_id: str) -> list[str]:
    """The workflow runs ``batch_id`` made, in start order."""
    rows = store.journal.query(
        "SELECT b.run_id FROM batch_runs b LEFT JOIN runs r ON r.id = b.run_id "
        "WHERE b.batch_id = ? ORDER BY r.start",
        (batch_id,),
    )
    return [r[0] for r in rows]


def batch_of_runs(store: Store) -> dict[str, str]:
    """``{run_id: batch_id}`` for every workflow run made by a batch."""
    return {r: b for b, r in store.journal.query("SELECT batch_id, run_id FROM batch_runs")}


def params_of_runs(store: Store) -> dict[str, dict[str, Any]]:
    """``{run_id: {name: value}}``: what each run recorded, over its batch's parameters."""
    out: dict[str, dict[str, Any]] = {}
    for run_id, params in store.journal.query(
        "SELECT b.run_id, x.parameters FROM batch_runs b JOIN batches x ON x.id = b.batch_id"
    ):
        out.setdefault(run_id, {}).update(json.loads(params) if params else {})
    for run_id, name, value in store.journal.query("SELECT run_id, name, value FROM run_params"):
        out.setdefault(run_id, {})[name] = json.loads(value) if value else None
    return out
