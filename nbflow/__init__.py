"""nbflow: a Jupyter-native workflow kernel.

``@nf.task`` makes a function a task; ``with nf.Workflow("name") as wf:`` traces task calls
into a graph of ``nf.Ref``; ``wf.run()`` runs it in parallel and returns an ``nf.Run``.
"""

from __future__ import annotations

from .check import Finding, check
from .core.errors import (
    ApprovalTimeout,
    ConflictWarning,
    CycleError,
    GatherError,
    LoopLimitError,
    NbflowError,
    NbflowStoreWarning,
    NbflowWarning,
    PicklingError,
    RefAttributeError,
    RefUsageError,
    StallError,
    StoreIntegrityError,
    TaskCallError,
    TaskNotFinished,
    TaskTimeout,
    WorkerLost,
    WorkflowCancelled,
    WorkflowDefinitionError,
    WorkflowFailed,
)
from .core.events import on_run
from .core.files import File
from .core.options import RunOptions
from .core.ref import Ref
from .engine.constructs import approval, branch, first, gather, loop, saga
from .engine.run import Run, last_run
from .engine.spec import Task, TaskSpec, fmt, registry, task
from .store import StoredRun, gc, load_run, plan, runs
from .workflow import Workflow

__version__ = "0.1.0"

__all__ = [
    "ApprovalTimeout",
    "ConflictWarning",
    "CycleError",
    "File",
    "Finding",
    "GatherError",
    "LoopLimitError",
    "NbflowError",
    "NbflowStoreWarning",
    "NbflowWarning",
    "PicklingError",
    "Ref",
    "RefAttributeError",
    "RefUsageError",
    "Run",
    "RunOptions",
    "StallError",
    "StoreIntegrityError",
    "StoredRun",
    "Task",
    "TaskCallError",
    "TaskNotFinished",
    "TaskSpec",
    "TaskTimeout",
    "WorkerLost",
    "Workflow",
    "WorkflowCancelled",
    "WorkflowDefinitionError",
    "WorkflowFailed",
    "approval",
    "branch",
    "check",
    "first",
    "fmt",
    "gather",
    "gc",
    "last_run",
    "load_run",
    "loop",
    "on_run",
    "plan",
    "registry",
    "runs",
    "saga",
    "task",
]


def load_ipython_extension(ip: object) -> None:
    """``%load_ext nbflow``: register the ``%%workflow`` and ``%nbflow`` magics."""
    from .notebook import load_ipython_extension as load

    load(ip)


# Inside IPython (a notebook kernel, a terminal IPython) importing nbflow makes %%workflow
# available at once; elsewhere this is a cheap no-op that imports nothing.
from .notebook import register_if_ipython as _register_if_ipython  # noqa: E402

_register_if_ipython()
