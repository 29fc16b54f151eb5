"""Who else can touch a store: private modes for what nbflow creates, a warning otherwise.

A store holds results that will be loaded back into the user's process, so it should be
the user's alone: nbflow creates store directories 0700 and files 0600.  A store that
already exists with looser modes (a shared ``NBFLOW_HOME``, a folder made by hand, a
checkout with mode 0777) is used, but a warning says once per process what others can do
with it.  Results read from it are still verified against the user's private signing key
(:mod:`.signing`) before anything is unpickled, so a writable store can make a run
recompute, never run someone else's code.
"""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path

_WARNED: set[Path] = set()


def loose_bits(path: Path) -> int:
    """The group/other permission bits of ``path`` (0 if private or missing)."""
    try:
        return os.stat(path).st_mode & 0o077
    except OSError:
        return 0


def writable_by_others(home: Path) -> bool:
    """True if another user could write results into the store at ``home``."""
    return any(loose_bits(p) & 0o022 for p in (home, home / "blobs", home / "journal.sqlite"))


def check_private(home: Path, warning: type[Warning]) -> None:
    """Warn once per process if the store at ``home`` is open to group or others."""
    if home in _WARNED:
        return
    parts = (home, home / "blobs", home / "journal.sqlite")
    loose = {p.name: stat.filemode(os.stat(p).st_mode) for p in parts if loose_bits(p)}
    if not loose:
        return
    _WARNED.add(home)
    what = ", ".join(f"{n} {m}" for n, m in loose.items())
    warnings.warn(
        f"nbflow: the run store {home} is accessible to other users ({what}); they can read your "
        f"results{' and change the store' if writable_by_others(home) else ''}. Results are still "
        f"checked against your private key before loading. Make it private with: chmod -R go-rwx {home}",
        warning, stacklevel=4,
    )
