"""Run ids as they arrive in URLs: checked against the one format nbflow makes.

A run id is ``YYYYMMDD-HHMMSS-xxxxxx`` (UTC start time, then six hex digits).  Everything
the dashboard reads is looked up *by* this id in SQLite, never used to build a path, and
anything else (``..``, slashes, percent-escapes, prefixes) is refused before any read.
"""

from __future__ import annotations

import re

from ..core.errors import NbflowError

RUN_ID = re.compile(r"\d{8}-\d{6}-[0-9a-f]{6}")


class BadRunId(NbflowError, ValueError):
    """A run id from a request does not have the form nbflow gives run ids."""


def check_run_id(value: str) -> str:
    """``value`` if it is a well-formed run id, else :class:`BadRunId` saying what one looks like."""
    if not isinstance(value, str) or RUN_ID.fullmatch(value) is None:
        shown = value if isinstance(value, str) and len(value) <= 60 else repr(value)[:60] + "…"
        raise BadRunId(f"{shown!r} is not a run id; run ids look like 20260112-093015-4be2a1 "
                       "(see nf.runs() or `nbflow runs`)")
    return value
