"""What a static check reports: :class:`Finding`, a list of them, and a plain-text table.

A finding is data, not an exception: ``nf.check(wf)`` hands back everything it found so a
notebook can show it, a run can refuse on errors, and tests can assert on codes.  Each
message says what is wrong *and* how to fix it, because the person reading it is in the
middle of writing a workflow cell and should not have to look anything up.

Findings are sorted errors first, then warnings, then info; within a severity they keep
the order the checkers produced them in, which is deterministic (node-index order), so the
same workflow always prints the same report.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning", "info"]

#: Severities, most serious first (this is the sort order of a report).
SEVERITIES: tuple[Severity, ...] = ("error", "warning", "info")
_RANK = {s: i for i, s in enumerate(SEVERITIES)}


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem (or remark) found by static analysis of a workflow.

    ``code`` names the kind of problem (``"cycle"``, ``"conflict"``, ...; see the README),
    ``severity`` is ``"error"`` (the workflow cannot run as written), ``"warning"`` (it can
    run but may be wrong) or ``"info"``; ``tasks`` are the task keys involved, in a
    meaningful order (the order around a cycle, node-index order for a pair); ``message``
    names the problem and the fix; ``resource`` is the data or capacity resource concerned,
    when there is one.
    """

    code: str
    severity: Severity
    tasks: tuple[str, ...]
    message: str
    resource: str | None = None

    def __post_init__(self) -> None:
        if self.severity not in _RANK:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {self.severity!r}")


class Findings(list[Finding]):
    """A list of findings with shortcuts by severity and code."""

    @property
    def errors(self) -> Findings:
        """The findings that make the workflow unrunnable as written."""
        return Findings(f for f in self if f.severity == "error")

    @property
    def warnings(self) -> Findings:
        return Findings(f for f in self if f.severity == "warning")

    @property
    def infos(self) -> Findings:
        return Findings(f for f in self if f.severity == "info")

    @property
    def ok(self) -> bool:
        """True when there are no errors (warnings and info do not stop a run)."""
        return not any(f.severity == "error" for f in self)

    def by_code(self, code: str) -> Findings:
        return Findings(f for f in self if f.code == code)


def sort_findings(findings: Iterable[Finding]) -> Findings:
    """Errors, then warnings, then info; stable within a severity."""
    return Findings(sorted(findings, key=lambda f: _RANK[f.severity]))


_MAX_TASKS_SHOWN = 6


def _tasks_cell(f: Finding) -> str:
    tasks = list(f.tasks)
    if len(tasks) > _MAX_TASKS_SHOWN:
        tasks = [*tasks[:_MAX_TASKS_SHOWN], f"(+{len(f.tasks) - _MAX_TASKS_SHOWN} more)"]
    return ", ".join(tasks) if tasks else "-"


def format_findings(findings: Iterable[Finding]) -> str:
    """A plain-text table, one finding per row, for ``print`` in scripts and batch logs.

    Columns: severity, code, tasks, resource, message.  The message is the last column and
    is not cut, so nothing the reader needs is lost; a summary line comes first.
    """
    rows = list(findings)
    if not rows:
        return "nbflow check: no findings"
    counts = {s: sum(1 for f in rows if f.severity == s) for s in SEVERITIES}
    summary = "nbflow check: " + ", ".join(
        f"{n} {s if n == 1 or s == 'info' else s + 's'}" for s, n in counts.items()
    )
    header = ("severity", "code", "tasks", "resource", "message")
    cells = [(f.severity, f.code, _tasks_cell(f), f.resource or "-", f.message) for f in rows]
    widths = [max(len(header[c]), *(len(row[c]) for row in cells)) for c in range(4)]

    def line(row: tuple[str, ...]) -> str:
        return "  ".join(row[c].ljust(widths[c]) for c in range(4)) + "  " + row[4]

    rule = "  ".join("-" * w for w in widths) + "  " + "-" * len(header[4])
    return "\n".join([summary, line(header), rule, *(line(r) for r in cells)])
