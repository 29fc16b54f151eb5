"""nbflow: a Jupyter-native workflow kernel.

``@nf.task`` makes a function a task; ``with nf.Workflow("name") as wf:`` traces task calls
into a graph of ``nf.Ref``; ``wf.run()`` runs it in parallel and returns an ``nf.Run``.
"""

from __future__ import annotations

import sys

from .batch import NotebookFailed, NotebookOutputs, OutputError, ParamError, output, outputs, param
from .batch import links as _batch_links  # noqa: F401  (links runs to batch runs and parameters)
from .check import Finding, check
from .core.errors import (
    ApprovalTimeout,
    ConflictWarning,
    CycleError,
    EngineError,
    GatherError,
    InvalidOptionError,
    LoopLimitError,
    NbflowError,
    NbflowStoreWarning,
    NbflowWarning,
    PicklingError,
    RefAttributeError,
    RefUsageError,
    ResultReleased,
    StallError,
    StoreError,
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
from .core.usertb import install_excepthook as _install_excepthook
from .engine.constructs import approval, branch, first, gather, loop, saga
from .engine.run import last_run
from .engine.spec import Task, TaskSpec, fmt, registry, task
from .locality.plan import plan
from .predict.entry import forecast
from .predict.history import history
from .server.cancel import install as _install_cancel_watch
from .store import StoredRun, gc, load_run, runs
from .workflow import Run, Workflow

_install_cancel_watch()  # runs can be cancelled from the dashboard (through the store)
_install_excepthook()  # a Ref misused outside a workflow: the script's traceback ends at its line

__version__ = "0.1.0"

__all__ = [
    "ApprovalTimeout",
    "ConflictWarning",
    "CycleError",
    "EngineError",
    "File",
    "Finding",
    "GatherError",
    "InvalidOptionError",
    "LoopLimitError",
    "NbflowError",
    "NbflowStoreWarning",
    "NbflowWarning",
    "NotebookFailed",
    "NotebookOutputs",
    "OutputError",
    "ParamError",
    "PicklingError",
    "Ref",
    "RefAttributeError",
    "RefUsageError",
    "ResultReleased",
    "Run",
    "RunOptions",
    "StallError",
    "StoreError",
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
    "forecast",
    "gather",
    "gc",
    "history",
    "last_run",
    "load_run",
    "loop",
    "notebook",
    "on_run",
    "output",
    "outputs",
    "param",
    "plan",
    "registry",
    "runs",
    "saga",
    "show",
    "task",
]


def load_ipython_extension(ip: object) -> None:
    """``%load_ext nbflow``: register the ``%%workflow`` and ``%nbflow`` magics."""
    from .notebook import load_ipython_extension as load

    load(ip)


# Inside IPython (a notebook kernel, a terminal IPython) importing nbflow makes %%workflow
# available at once; elsewhere this is a cheap no-op that imports nothing.
# ``nf.show(run)`` (the final view of a live or stored run) is the notebook room's ``show``,
# which imports IPython and ipywidgets only when called.
from .notebook import register_if_ipython as _register_if_ipython  # noqa: E402
from .notebook import show  # noqa: E402

_register_if_ipython()

# ``nf.notebook(...)`` runs a notebook as a task; ``nbflow.notebook`` is also the notebook
# room's subpackage.  One object serves both (see nbflow.batch.nbtask.NotebookEntry).
from .batch.nbtask import NotebookEntry as _NotebookEntry  # noqa: E402

notebook = _NotebookEntry(sys.modules[__name__ + ".notebook"])
