"""How many tasks of a run are in each state: the one count every view shows.

The widget header, the headless progress line, the group tooltips of the drawn graph,
``%nbflow runs`` and ``nbflow runs`` all count through :func:`count_tasks`, so they agree
for the same run.  The rules:

- every node of the run counts, including the tasks a map over a Ref adds while running
  (a run's graph grows) and the map's collector, as in ``run.tasks``;
- a collector (``collect`` node, an expanded map, or a ``loop`` waiting on its
  iterations) is *running* for the scheduler while its items go, but it does no work:
  it is shown and counted as ``pending`` (waiting) until it ends (:func:`shown_state`);
- ``completed`` includes the results served from the cache; ``cached`` says how many.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import chain

from .kinds import COLLECT, LOOP, MAP
from .states import ALL, PENDING, RUNNING, TERMINAL

WAITING_KINDS = frozenset({COLLECT, MAP, LOOP})


def shown_state(state: str, kind: str | None) -> str:
    """The state a person is shown: a collector that waits for its items is ``pending``."""
    if state == RUNNING and kind in WAITING_KINDS:
        return PENDING
    return state


@dataclass(frozen=True)
class TaskCounts:
    """Counts of a run's tasks: ``total``, ``by_state`` (non-zero, display order), ``cached``."""

    total: int
    by_state: dict[str, int] = field(default_factory=dict)
    cached: int = 0

    def get(self, state: str) -> int:
        return self.by_state.get(state, 0)

    @property
    def done(self) -> int:
        """Tasks in a final state (completed, failed, skipped, cancelled)."""
        return sum(v for s, v in self.by_state.items() if s in TERMINAL)

    def as_row(self) -> dict[str, int]:
        """The columns of a runs list: tasks, completed, cached, failed, skipped, cancelled."""
        return {"tasks": self.total, "completed": self.get("completed"), "cached": self.cached,
                "failed": self.get("failed"), "skipped": self.get("skipped"),
                "cancelled": self.get("cancelled")}


Row = tuple[str, bool, str | None] | tuple[str, bool, str | None, int]


def count_tasks(rows: Iterable[Row]) -> TaskCounts:
    """Count ``(state, cached, kind)`` rows, one per node, or ``(state, cached, kind, n)``
    rows that stand for ``n`` nodes each (a ``GROUP BY`` of the journal)."""
    it = iter(rows)
    first = next(it, None)
    if first is None:
        return TaskCounts(0)
    weighted: Iterable[tuple[tuple[str, bool, str | None], int]]
    if len(first) == 3:  # one row per node: tally the few distinct rows at C speed first
        weighted = Counter(chain([first], it)).items()  # type: ignore[assignment]
    else:
        weighted = ((r[:3], r[3]) for r in chain([first], it))  # type: ignore[misc]
    by: dict[str, int] = {}
    total = cached = 0
    for (state, hit, kind), n in weighted:
        s = shown_state(state, kind)
        by[s] = by.get(s, 0) + n
        total += n
        if hit and state == "completed":
            cached += n
    ordered = {s: by[s] for s in ALL if by.get(s)}
    ordered.update({s: v for s, v in by.items() if s not in ordered and v})
    return TaskCounts(total, ordered, cached)
