"""Static verification of a traced workflow: ``nf.check(wf)``.

Three guarantees are checked before anything runs: the graph terminates (no cycles, every
loop bounded), tasks that may run at the same time do not race on shared data (the
parallel-safety rule on declared reads and writes), and every task fits the machine.  This package checks
them on the traced graph and returns :class:`Finding` objects instead of raising, so a
notebook can show all problems at once and a run can decide which ones stop it.

Modules, one job each: :mod:`.findings` (the result type and its text table),
:mod:`.analysis` (graph algorithms over node lists), :mod:`.checks` (the checker functions
and ``check``), :mod:`.serialize` (ordering edges that remove every conflict).
"""

from __future__ import annotations

from .analysis import Conflict, conflicts, find_cycles, topological_order
from .checks import CHECKS, CheckContext, Checker, check, default_capacity
from .findings import SEVERITIES, Finding, Findings, Severity, format_findings, sort_findings
from .serialize import serialize_edges

__all__ = [
    "CHECKS",
    "SEVERITIES",
    "CheckContext",
    "Checker",
    "Conflict",
    "Finding",
    "Findings",
    "Severity",
    "check",
    "conflicts",
    "default_capacity",
    "find_cycles",
    "format_findings",
    "serialize_edges",
    "sort_findings",
    "topological_order",
]
