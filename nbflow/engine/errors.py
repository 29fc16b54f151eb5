"""Exceptions nbflow raises.  Each message names the problem and the way out."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .run import Run


class NbflowError(Exception):
    """Base class of every error nbflow raises on its own account."""


class WorkflowDefinitionError(NbflowError, ValueError):
    """The traced workflow cannot run as written (a cycle, a foreign ref, a bad option)."""


class CycleError(WorkflowDefinitionError):
    """The graph has a cycle; ``.cycle`` lists the task keys on it, in order."""

    def __init__(self, cycle: list[str]) -> None:
        self.cycle = cycle
        path = " -> ".join([*cycle, cycle[0]])
        super().__init__(
            f"the workflow has a cycle: {path}. A task cannot (indirectly) wait for itself; "
            "remove one of these dependencies (check the .after() calls)."
        )


class RefUsageError(NbflowError, TypeError):
    """A Ref was used as if it were its value, or outside the workflow that made it."""


class TaskTimeout(NbflowError, TimeoutError):
    """A task ran longer than its ``timeout``."""


class PicklingError(NbflowError):
    """An argument or result of a task could not be serialised for another process."""


class WorkflowFailed(NbflowError):
    """A run finished with failed tasks.

    ``.run`` is the Run; ``__cause__`` is the first failed task's original exception, so the
    traceback printed for this error ends with the task's own traceback.
    """

    def __init__(self, run: Run, first_key: str | None, first_error: BaseException | None) -> None:
        self.run = run
        self.key = first_key
        failed = run.count("failed")
        if first_error is None:
            msg = f"workflow {run.name!r} (run {run.id}) failed"
        else:
            msg = (
                f"workflow {run.name!r} (run {run.id}) failed: task {first_key!r} raised "
                f"{type(first_error).__name__}: {first_error}"
            )
        if failed > 1:
            msg += f" ({failed} tasks failed; see run.tasks)"
        for rb in getattr(run, "rollbacks", ()):
            msg += (f"; saga {rb['saga']} rolled back: compensated {rb['compensated'] or 'nothing'}"
                    + (f", compensation failed for {rb['compensation_failed']}"
                       if rb["compensation_failed"] else ""))
        super().__init__(msg)


class WorkflowCancelled(NbflowError):
    """A run was cancelled (``run.cancel()``, a Stop button, or Ctrl-C)."""

    def __init__(self, run: Run) -> None:
        self.run = run
        super().__init__(f"workflow {run.name!r} (run {run.id}) was cancelled")


class TaskNotFinished(NbflowError, LookupError):
    """The value of a task that did not complete was asked for."""

    def __init__(self, key: str, state: str, detail: Any = None) -> None:
        self.key = key
        self.state = state
        extra = f": {detail}" if detail else ""
        super().__init__(f"task {key!r} has no value: it is {state}{extra}")
