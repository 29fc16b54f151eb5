"""Every exception and warning nbflow raises, in one place.

Each message names the problem and the way out.  The hierarchy::

    NbflowError (Exception)
    ├── WorkflowDefinitionError (also ValueError)   the workflow cannot run as written
    │   ├── CycleError                              .cycle: the task keys on the cycle
    │   ├── InvalidOptionError                      a task or run option with a value it cannot take
    │   └── TaskCallError (also TypeError)          a task called with arguments it does not take
    ├── RefUsageError (also TypeError)              a Ref used as if it were its value
    │   └── RefAttributeError (also AttributeError) an attribute of the value asked of its Ref
    ├── TaskTimeout (also TimeoutError)             a task ran longer than its timeout
    ├── PicklingError                               an argument/result cannot travel
    ├── WorkflowFailed                              a run ended with failed tasks
    ├── WorkflowCancelled                           a run was cancelled
    ├── TaskNotFinished (also LookupError)          the value of a task that did not complete
    ├── StallError (also RuntimeError)              tasks wait but nothing can progress
    ├── EngineError (also RuntimeError)             nbflow itself failed during a run (cause attached)
    ├── TransitionError (also AssertionError)       a task state change the table forbids (checked runs)
    ├── WorkerLost (also RuntimeError)              a Dask worker died running a task, too often
    ├── GatherError                                 fewer gather inputs completed than needed
    ├── LoopLimitError                              a loop hit max_iter with until() false
    ├── ApprovalTimeout (also TimeoutError)         nobody answered an approval in time
    ├── WfFormatError (also ValueError)             a WfFormat trace file cannot be read
    ├── StoreError                                  the store cannot be opened or used
    │   ├── StoreIntegrityError                     a stored result failed its checksum (strict)
    │   └── BlobError                               one stored result file is unusable
    │       ├── BlobMissing (also LookupError)
    │       └── BlobCorrupt (also ValueError)
    │           └── BadBlobKey                      a journal row names an impossible result file
    ├── SerializationError (also TypeError)         a result cannot be serialised for the store
    ├── Unhashable (also TypeError)                 a value has no content hash
    └── StoredError                                 a task's failure as recorded in the store

    NbflowWarning (UserWarning)
    ├── ConflictWarning                             tasks that may overlap conflict on data
    └── NbflowStoreWarning                          the store degraded (a result not stored, ...)

Errors that carry a run (``WorkflowFailed``, ``WorkflowCancelled``) receive their message
from the engine, which knows the run; nothing here reads a run's internals.
"""

from __future__ import annotations

from typing import Any


class NbflowError(Exception):
    """Base class of every error nbflow raises on its own account."""


class NbflowWarning(UserWarning):
    """Base class of every warning nbflow gives."""


# -- defining a workflow -------------------------------------------------------------------


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


class TaskCallError(WorkflowDefinitionError, TypeError):
    """A task was called (while tracing) with arguments its function does not accept."""


class InvalidOptionError(WorkflowDefinitionError):
    """An option of a task or a run has a value it cannot take (the message says which)."""


class RefUsageError(NbflowError, TypeError):
    """A Ref was used as if it were its value, or outside the workflow that made it."""


class RefAttributeError(RefUsageError, AttributeError):
    """``ref.something``: the attribute belongs to the value, which exists only at run time.

    Also an ``AttributeError``, so ``hasattr(ref, "x")`` is simply False."""


class ConflictWarning(NbflowWarning):
    """Tasks that may run concurrently declare conflicting reads/writes (see nf.check)."""


# -- running -------------------------------------------------------------------------------


class TaskTimeout(NbflowError, TimeoutError):
    """A task ran longer than its ``timeout``."""


class PicklingError(NbflowError):
    """An argument or result of a task could not be serialised for another process."""


class WorkerLost(NbflowError, RuntimeError):
    """A Dask worker died while running a task, more often than the cluster allows."""


class ResultReleased(NbflowError, LookupError):
    """A Dask result was released from the cluster once its consumers had run: by default
    (``keep="reachable"``) when nothing of the user's named its Ref as the run started,
    with ``nbflow.locality.placement(keep="unconsumed")`` always; ``keep="all"`` keeps it."""


class StallError(NbflowError, RuntimeError):
    """Nodes are waiting but nothing can make progress (a deadlock)."""


class EngineError(NbflowError, RuntimeError):
    """nbflow failed internally during a run (not a task's error); the cause is attached."""


class TransitionError(NbflowError, AssertionError):
    """The engine tried a state change the table above does not allow: a bug in nbflow.

    Raised only while transitions are checked (``NBFLOW_CHECK_TRANSITIONS=1``, always on in
    nbflow's own tests); the message names the node, both states and the open count.
    """


class GatherError(NbflowError):
    """Fewer inputs of a ``gather`` completed than its ``min_success``."""


class LoopLimitError(NbflowError):
    """A loop ran ``max_iter`` iterations and ``until`` never became true."""


class ApprovalTimeout(NbflowError, TimeoutError):
    """Nobody answered an approval in time and ``on_timeout="fail"``."""


class WorkflowFailed(NbflowError):
    """A run finished with failed tasks.

    ``.run`` is the Run; ``.key`` the first failed task; ``__cause__`` is that task's original
    exception, so the traceback printed for this error ends with the task's own traceback.
    """

    def __init__(self, run: Any, first_key: str | None, message: str) -> None:
        self.run = run
        self.key = first_key
        super().__init__(message)


class WorkflowCancelled(NbflowError):
    """A run was cancelled (``run.cancel()``, a Stop button, or Ctrl-C)."""

    def __init__(self, run: Any, message: str | None = None) -> None:
        self.run = run
        super().__init__(message or f"workflow {run.name!r} (run {run.id}) was cancelled")


class TaskNotFinished(NbflowError, LookupError):
    """The value of a task that did not complete was asked for."""

    def __init__(self, key: str, state: str, detail: Any = None) -> None:
        self.key = key
        self.state = state
        extra = f": {detail}" if detail else ""
        super().__init__(f"task {key!r} has no value: it is {state}{extra}")


# -- data ----------------------------------------------------------------------------------


class WfFormatError(NbflowError, ValueError):
    """A WfFormat file cannot be read as a workflow trace."""


class SerializationError(NbflowError, TypeError):
    """A value cannot be serialised for the store."""


class Unhashable(NbflowError, TypeError):
    """A value has no content hash (so a task taking it cannot be cached)."""


# -- the store -----------------------------------------------------------------------------


class StoreError(NbflowError):
    """The store cannot be opened or used."""


class StoreIntegrityError(StoreError):
    """A stored result failed its checksum and the run was started with ``strict=True``."""


class BlobError(StoreError):
    """A stored result file cannot be used."""


class BlobMissing(BlobError, LookupError):
    """A stored result file is not there (removed, or never finished)."""


class BlobCorrupt(BlobError, ValueError):
    """A stored result file's bytes do not match their checksum."""


class BadBlobKey(BlobCorrupt):
    """A journal row names a result file that cannot be one (tampering or damage)."""


class StoredError(NbflowError):
    """A task's exception as recorded in the store (its type name and message)."""


class NbflowStoreWarning(NbflowWarning):
    """The store could not do something and the run goes on without it."""
