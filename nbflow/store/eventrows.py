"""One ``events`` row for a whole chunk of a batched map, and reading it back item by item.

A batched map's chunk starts and completes its items together, and the run announces that
as one :class:`~nbflow.core.events.TaskBatch`.  Journaling it as one row per item and change
cost more than everything else nbflow does for such an item (the writer thread building and
inserting ~2 rows per item), so the recorder writes one *batch row* per chunk and change:

* ``type`` is ``"TaskBatch"``, ``idx`` and ``key`` are NULL, ``items`` (schema version 9)
  is the number of items ``n`` it stands for;
* ``seq`` is the sequence number of its **last** item: the row stands for the per-item
  events numbered ``seq - n + 1 .. seq``, which no other row of the run uses.  So "events
  after cursor ``c``" (``seq > c``) still finds every row holding an item after ``c``, and
  ``MAX(seq)`` is still the number of the run's last event;
* ``data`` holds ``kind`` (the per-item event class), ``indexes``, ``keys``, and the very
  fields a per-item row would have held: per item in ``columns``, shared in ``common``.

Readers never see the difference: :func:`expand` turns such rows back into the per-item rows
``(seq, time, type, idx, key, data)`` with the same ``data`` text the per-item row would
have had, so ``nbflow show``, ``nf.history``, ``StoredRun.events`` and the dashboard read one
row per item and change, as before.  Task rows (``task_runs``) stay one per attempt.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from typing import Any

from ..core import events as ev

BATCH = "TaskBatch"

# The fields each kind's per-item row holds (recorder._event_row), in that order.
FIELDS: dict[type, tuple[str, ...]] = {
    ev.TaskStarted: ("attempt", "executor"),
    ev.TaskCompleted: ("attempt", "duration_s", "output_bytes", "cached"),
}

Row = tuple[Any, ...]  # (seq, time, type, idx, key, data)


def _clean(name: str, values: list[Any]) -> list[Any]:
    """JSON-safe values of one field, as the per-item row wrote them."""
    if name == "duration_s":
        return [float(v) if v is not None and math.isfinite(v) else None for v in values]
    if name == "output_bytes" or name == "attempt":
        return [None if v is None else int(v) for v in values]
    if name == "cached":
        return [bool(v) for v in values]
    return values


def batch_row(run_id: str, last_seq: int, e: ev.TaskBatch) -> Row:
    """The ``events`` row (with ``items``) of a started or completed batch."""
    names = FIELDS[e.kind]
    columns = {n: _clean(n, e.columns[n]) for n in names if n in e.columns}
    common = {n: _clean(n, [e.common[n] if n in e.common else e.column(n)[0]])[0]
              for n in names if n not in e.columns}
    data = {"kind": e.kind.__name__, "indexes": e.indexes, "keys": e.keys,
            "columns": columns, "common": common}
    return (run_id, last_seq, e.time, BATCH, None, None,
            json.dumps(data, separators=(",", ":"), default=str), len(e.indexes))


def _item_data(names: tuple[str, ...], values: tuple[Any, ...]) -> str:
    return "{" + ",".join([f'"{n}":{json.dumps(v)}' for n, v in zip(names, values, strict=True)]) + "}"


def expand(rows: Iterable[tuple[Any, ...]], after: int | None = None) -> Iterator[Row]:
    """``rows`` ``(seq, time, type, idx, key, data[, items])`` with every batch row replaced
    by the per-item rows it stands for (numbered as they were), skipping items numbered
    ``after`` or lower; other rows pass unchanged (without the ``items`` column)."""
    for r in rows:
        if r[2] != BATCH:
            yield r[:6] if len(r) > 6 else r
            continue
        seq, t, data = r[0], r[1], json.loads(r[5])
        kind = data["kind"]
        cls = getattr(ev, kind, None)
        names = FIELDS.get(cls)  # type: ignore[arg-type]
        if names is None:  # (written by a newer nbflow: nothing this one can show)
            continue
        idxs, keys, columns, common = data["indexes"], data["keys"], data["columns"], data["common"]
        n = len(idxs)
        first = seq - n + 1
        cols = [columns[f] if f in columns else [common.get(f)] * n for f in names]
        for k, (i, key) in enumerate(zip(idxs, keys, strict=True)):
            s = first + k
            if after is not None and s <= after:
                continue
            yield (s, t, kind, i, key, _item_data(names, tuple(c[k] for c in cols)))
