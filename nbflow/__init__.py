"""nbflow: a Jupyter-native workflow kernel.

``@nf.task`` makes a function a task; ``with nf.Workflow("name") as wf:`` traces task calls
into a graph of ``nf.Ref``; ``wf.run()`` runs it in parallel and returns an ``nf.Run``.
"""

from __future__ import annotations

from .check import Finding, check
from .engine.constructs import (
    ApprovalTimeout,
    GatherError,
    LoopLimitError,
    approval,
    branch,
    first,
    gather,
    loop,
    saga,
)
from .engine.errors import (
    CycleError,
    NbflowError,
    PicklingError,
    RefUsageError,
    TaskNotFinished,
    TaskTimeout,
    WorkflowCancelled,
    WorkflowDefinitionError,
    WorkflowFailed,
)
from .engine.events import on_run
from .engine.graph import Ref, Workflow
from .engine.run import ConflictWarning, Run, last_run
from .engine.scheduler import StallError
from .engine.spec import Task, TaskSpec, registry, task
from .server.cancel import install as _install_cancel_watch
from .store import NbflowStoreWarning, StoredRun, StoreIntegrityError, gc, load_run, plan, runs

_install_cancel_watch()  # runs can be cancelled from the dashboard (through the store)

__version__ = "0.1.0"

__all__ = [
    "ApprovalTimeout",
    "ConflictWarning",
    "CycleError",
    "Finding",
    "GatherError",
    "LoopLimitError",
    "NbflowError",
    "NbflowStoreWarning",
    "PicklingError",
    "Ref",
    "RefUsageError",
    "Run",
    "StallError",
    "StoreIntegrityError",
    "StoredRun",
    "Task",
    "TaskNotFinished",
    "TaskSpec",
    "TaskTimeout",
    "Workflow",
    "WorkflowCancelled",
    "WorkflowDefinitionError",
    "WorkflowFailed",
    "approval",
    "branch",
    "check",
    "first",
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
