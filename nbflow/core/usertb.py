"""Put the user's line on top of the traceback of a mistake made while tracing.

A Ref used like a value (``pd.concat([ref, ref])``, ``ref + 1``) or a task called with
arguments it does not take is the user's mistake on one line of their code, but the
exception is raised deep below it: in a Ref method, in pandas' type checks, in nbflow's
tracing code.  Python prints the innermost frame last, so the user would read nbflow's or
pandas' source first and have to hunt for their own line.

:func:`trim_to_user` cuts those inner frames off the exception's traceback, so that the last
frame shown (by Python, IPython, pytest and the ``traceback`` module alike) is the user's
line.  A frame is *not* the user's when its file lies in nbflow's own package or in the
Python installation's library directories (the standard library, site-packages).  The
message of these errors already says what happened and what to do; the frames cut are the
machinery that noticed it.  The workflow's ``with`` block applies this to the errors it
sees leave it (:class:`~nbflow.core.errors.RefUsageError`, ``TaskCallError``).

Outside a workflow block (a Ref used after its run, ``ref + 1`` in a later cell or line)
nothing wraps the user's code, and a frame cannot take itself off a traceback while its
exception is still on the way up.  So the trimming happens where the traceback is shown:

- in IPython (a kernel, terminal IPython) through the exception's ``_render_traceback_``,
  which :func:`mark_for_display` attaches (IPython asks every exception for one);
- in a plain script through ``sys.excepthook``: :func:`install_excepthook` (called when
  nbflow is imported) puts a hook in front of the current one that trims a
  ``RefUsageError`` and hands it on, and leaves every other exception alone.

A failed run seen by a plain script is the same story twice over: ``wf.run()`` raises
``WorkflowFailed`` from inside nbflow (its frames end below the user's ``wf.run()`` line),
and its ``__cause__`` is the task's own exception, caught by the scheduler, so *its*
traceback starts with the engine's, the thread pool's and the backend's frames before the
user's function.  The hook cuts both: the failure's traceback ends at the user's line and
the task's starts at the user's function (the frames below it — pandas', say — stay: they
are where the error happened).  A mistake found before anything ran (a cycle, a bad
option: ``WorkflowDefinitionError``) ends at the user's line too.  Notebooks already show
both this way (the ``%%workflow`` cell and IPython).
"""

from __future__ import annotations

import os
import sys
import sysconfig
import traceback
from functools import lru_cache
from types import TracebackType
from typing import Any, TypeVar

from .errors import RefUsageError, WorkflowCancelled, WorkflowDefinitionError, WorkflowFailed

E = TypeVar("E", bound=BaseException)

_NBFLOW = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


@lru_cache(maxsize=1)
def _library_dirs() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    dirs = {os.path.abspath(paths[k]) + os.sep for k in ("stdlib", "platstdlib", "purelib", "platlib")
            if k in paths}
    return (_NBFLOW, *sorted(dirs))


@lru_cache(maxsize=512)
def is_internal(filename: str) -> bool:
    """Is ``filename`` nbflow's own code or an installed library (not the user's code)?"""
    if filename.startswith("<frozen"):
        return True
    if filename.startswith("<"):  # <stdin>, <string>, an IPython cell: the user's
        return False
    path = os.path.abspath(filename)
    return path.startswith(_library_dirs())


def trim_to_user(exc: BaseException) -> BaseException:
    """Cut the frames below the innermost user frame off ``exc``'s traceback (in place).

    Leaves the traceback alone when no frame of it is the user's.  Returns ``exc``.
    """
    tb: TracebackType | None = exc.__traceback__
    last_user: TracebackType | None = None
    called_by_internal = False
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        # code generated at run time (a dataclass's __init__ is "<string>") that nbflow or a
        # library called is theirs, not the user's
        internal = is_internal(name) or (called_by_internal and name == "<string>")
        if not internal:
            last_user = tb
        called_by_internal = internal
        tb = tb.tb_next
    if last_user is not None and last_user.tb_next is not None:
        last_user.tb_next = None
    return exc


def _first_user(tb: TracebackType | None) -> TracebackType | None:
    """The first entry of ``tb`` in the user's code (the interpreter's or IPython's frames
    around the user's cell or script come first); ``tb`` itself when there is none."""
    start = tb
    while tb is not None and is_internal(tb.tb_frame.f_code.co_filename):
        tb = tb.tb_next
    return tb if tb is not None else start


def render_trimmed(exc: BaseException) -> list[str]:
    """IPython's traceback of ``exc`` from the user's first frame to their last one."""
    trim_to_user(exc)
    tb = _first_user(exc.__traceback__)
    shell: Any = None
    if "IPython" in sys.modules:  # (only IPython asks; it is imported then)
        shell = sys.modules["IPython"].get_ipython()
    if shell is None:
        return "".join(traceback.format_exception(type(exc), exc, tb)).splitlines()
    return list(shell.InteractiveTB.structured_traceback(type(exc), exc, tb))


def mark_for_display(exc: E) -> E:
    """Have IPython show ``exc`` ending at the user's line (see the module docstring)."""
    exc._render_traceback_ = lambda: render_trimmed(exc)  # type: ignore[attr-defined]
    return exc


def _excepthook(etype: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
    if isinstance(value, RefUsageError | WorkflowDefinitionError | WorkflowFailed | WorkflowCancelled):
        tb = trim_to_user(value).__traceback__
    cause = value.__cause__
    if isinstance(value, WorkflowFailed) and cause is not None:
        cause.__traceback__ = _first_user(cause.__traceback__)  # the task's frames from its own line
    _excepthook.previous(etype, value, tb)  # type: ignore[attr-defined]


def install_excepthook() -> None:
    """Trim the uncaught nbflow errors of plain scripts to the user's frames (once per
    process; the hook found in ``sys.excepthook`` still prints everything)."""
    current: Any = sys.excepthook
    if getattr(current, "__nbflow__", False):
        return
    _excepthook.previous = current  # type: ignore[attr-defined]
    _excepthook.__nbflow__ = True  # type: ignore[attr-defined]
    sys.excepthook = _excepthook
