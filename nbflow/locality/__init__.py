"""The locality room: keep Dask results where they were made, place tasks next to their
inputs, count every byte moved, and report it.

* :mod:`.placement` — the placement rule and its cost model (and a round-robin baseline);
* :mod:`.agent` — one per Dask run: placement decisions and what the run moved;
* :mod:`.transfers` — ``run.transfers`` from Dask's own transfer logs;
* :mod:`.report` — ``run.locality_report()`` (:mod:`.moved_tips`: its suggestions about
  where tasks ran);
* :mod:`.simulate` — the rule replayed on workflow traces at any cluster size;
* :mod:`.predicted` — output sizes (and durations) from the store's history, for tasks
  placed before their inputs exist;
* :mod:`.memory` — which tasks were short of memory, from what the cluster recorded;
* :mod:`.plan` — ``nf.plan(wf)``: predicted placement and bytes before a run;
* :mod:`.reachable` — which results the user can still name (the default ``keep=``).

The composition point calls :func:`attach` for every run on a Dask backend.  The mode for
runs started in a block is set with ``with nbflow.locality.placement("round-robin"):``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from .agent import KEEP, MODES, LocalityAgent, PlacementError, check_keep, check_mode
from .joins import JoinGraph
from .placement import BANDWIDTH, Placer, RoundRobin
from .reachable import run_held
from .report import LocalityReport, Suggestion, build

__all__ = [
    "KEEP",
    "MODES",
    "LocalityAgent",
    "LocalityReport",
    "LocalityView",
    "PlacementError",
    "Placer",
    "RoundRobin",
    "Suggestion",
    "attach",
    "placement",
    "report",
]

_mode = "locality"
_bandwidth = BANDWIDTH
_keep = "reachable"


@contextlib.contextmanager
def placement(mode: str = "locality", bandwidth: float = BANDWIDTH,
              keep: str = "reachable") -> Iterator[None]:
    """Runs started inside the block place their Dask tasks by ``mode`` (see :data:`MODES`).

    ``keep`` says which results stay on the cluster once every task that takes them has
    run.  ``"reachable"`` (default): those whose Ref the notebook still names when the run
    starts (a variable, a list of yours, a ``%%workflow`` binding) and those nothing takes;
    the rest are released as ``dask.delayed`` does (see :mod:`.reachable`).  ``"all"``:
    every result stays until the run object goes, so ``run[ref]`` works for any task.
    ``"unconsumed"``: only results nothing takes stay.  ``run[ref]`` on a released result
    raises ``nf.ResultReleased`` naming the option that keeps it."""
    global _mode, _bandwidth, _keep
    check_mode(mode)
    check_keep(keep)
    if bandwidth <= 0:
        raise PlacementError("bandwidth must be a positive number of bytes per second")
    old = _mode, _bandwidth, _keep
    _mode, _bandwidth, _keep = mode, bandwidth, keep
    try:
        yield
    finally:
        _mode, _bandwidth, _keep = old


class LocalityView:
    """What ``run.transfers`` and ``run.locality_report()`` read (every run has one)."""

    def __init__(self, agent: LocalityAgent | None, backend: str, process: Any = None) -> None:
        self.agent = agent
        self.backend = backend
        self.process = process  # the run's process backend (it records its own rows)

    def transfers(self) -> Any:
        from .transfers import frame

        dask = self.agent.transfers() if self.agent is not None else frame([])
        if self.process is None or not self.process.rows:
            return dask
        process = frame(self.process.rows)
        return process if not len(dask) else pd_concat(dask, process)

    def report(self) -> LocalityReport:
        if self.agent is None and self.process is not None and self.process.rows:
            from .transfers import ProcessAccount

            report = build(ProcessAccount(self.process), self.backend)
            report.suggestions = []  # (the placement advice is about Dask workers)
            return report
        return build(self.agent, self.backend)


def pd_concat(a: Any, b: Any) -> Any:
    import pandas as pd

    return pd.concat([a, b], ignore_index=True)


def set_default(mode: str = "locality", bandwidth: float = BANDWIDTH) -> None:
    """Place the Dask tasks of every later run by ``mode`` (until changed again)."""
    global _mode, _bandwidth
    check_mode(mode)
    if bandwidth <= 0:
        raise PlacementError("bandwidth must be a positive number of bytes per second")
    _mode, _bandwidth = mode, bandwidth


def attach(run: Any) -> LocalityAgent | None:
    """Give a run its locality view and, on a Dask backend, its agent (placement and
    accounting).  Returns the agent (None when the run does not use Dask)."""
    backend = getattr(run, "backends", {}).get("dask")
    agent = None
    if backend is not None:
        agent = LocalityAgent(_mode, _bandwidth)
        agent.keep = _keep
        agent.release_consumed = _keep != "all"
        if _keep == "reachable":  # what the user can still name, counted as the run starts
            agent.kept = run_held(run)
        agent.backend = backend
        agent.workflow = str(getattr(run, "name", ""))
        agent.graph = JoinGraph(getattr(run, "nodes", ()))  # (the placement rule's join term)
        backend.placement = agent
        defer = getattr(run, "defer_until_started", None)
        if defer is not None:  # (the end-of-run read's thread, started once the graph is sent)
            defer(agent.park)
    run.locality = LocalityView(agent, str(getattr(run, "backend_kind", "?")),
                                getattr(run, "backends", {}).get("process"))
    return agent


def report(run: Any) -> LocalityReport:
    """The locality report of ``run`` (also ``run.locality_report()``)."""
    return run.locality.report()
