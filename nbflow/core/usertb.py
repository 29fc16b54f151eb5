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
"""

from __future__ import annotations

import os
import sysconfig
from functools import lru_cache
from types import TracebackType

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
    while tb is not None:
        if not is_internal(tb.tb_frame.f_code.co_filename):
            last_user = tb
        tb = tb.tb_next
    if last_user is not None and last_user.tb_next is not None:
        last_user.tb_next = None
    return exc
