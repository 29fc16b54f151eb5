"""What the user sees when the engine itself fails: one NbflowError, never an ExceptionGroup.

The scheduler runs tasks in an anyio task group, so an unexpected error inside the engine
(not a task's own error, which is handled per task) surfaces wrapped in an
``ExceptionGroup``.  :func:`run_error` unwraps it: a single nbflow error is raised as it
is; anything else becomes :class:`EngineError` whose message names the underlying error(s)
and whose ``__cause__`` keeps the original for the traceback.
"""

from __future__ import annotations

import sys

from ..core.errors import EngineError, NbflowError

if sys.version_info >= (3, 11):
    _Group = BaseExceptionGroup  # noqa: F821 - a builtin since 3.11
else:  # pragma: no cover - anyio brings the backport on 3.10
    from exceptiongroup import BaseExceptionGroup as _Group


def _leaves(e: BaseException) -> list[BaseException]:
    if isinstance(e, _Group):
        return [leaf for sub in e.exceptions for leaf in _leaves(sub)]
    return [e]


def run_error(e: BaseException) -> BaseException:
    """The error to record for a run that ended with ``e`` (see the module docstring)."""
    leaves = _leaves(e)
    if len(leaves) == 1 and isinstance(leaves[0], NbflowError):
        return leaves[0]
    if not isinstance(e, _Group) and isinstance(e, NbflowError | KeyboardInterrupt | SystemExit):
        return e
    what = "; ".join(f"{type(x).__name__}: {x}" for x in leaves[:3])
    err = EngineError(f"nbflow failed while running the workflow ({what}). This is not an error of "
                      "your tasks; the run was stopped. Please report it with the traceback")
    err.__cause__ = e
    return err
