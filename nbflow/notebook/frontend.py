"""Is somebody watching?  Decide between the live widget and headless text progress.

ipywidgets "work" in any kernel, but under papermill or nbclient nobody renders them, so
the question is who sent the cell.  The rule, first match wins:

1. ``NBFLOW_HEADLESS=1`` (or true/yes/on) forces text; ``NBFLOW_HEADLESS=0`` (or
   false/no/off) forces the widget.
2. Not inside a Jupyter kernel (terminal IPython, a plain script), or ipywidgets cannot be
   imported: text.
3. The cell came from a ``jupyter_client``-based program -- papermill, nbclient, nbval,
   ``jupyter execute``, ``jupyter console``, qtconsole: text.  Those clients number their
   messages ``<session>_<pid>_<n>``; JupyterLab, Notebook 7 and VS Code use plain UUIDs.
4. Otherwise (JupyterLab, Notebook, VS Code, ...): the widget.

Whatever the mode, the final state is also emitted as static HTML.
"""

from __future__ import annotations

import os
import re
from typing import Any

_CLIENT_MSG_ID = re.compile(r".+_\d+_\d+")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _kernel_parent(shell: Any) -> dict[str, Any]:
    kernel = getattr(shell, "kernel", None)
    if kernel is None:
        return {}
    try:
        return kernel.get_parent() or {}
    except Exception:  # older ipykernel: the attribute moved around
        return getattr(kernel, "_parent_header", None) or {}


def frontend_mode(shell: Any = None) -> tuple[str, str]:
    """``("widget" | "text", reason)`` for the cell being executed."""
    env = os.environ.get("NBFLOW_HEADLESS", "").strip().lower()
    if env in _TRUE:
        return "text", "NBFLOW_HEADLESS is set"
    if env in _FALSE:
        return "widget", "NBFLOW_HEADLESS=0"
    if shell is None:
        try:
            from IPython import get_ipython
        except ImportError:
            return "text", "not in IPython"
        shell = get_ipython()
    if shell is None or getattr(shell, "kernel", None) is None:
        return "text", "not in a Jupyter kernel"
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return "text", "ipywidgets is not installed"
    msg_id = str(_kernel_parent(shell).get("header", {}).get("msg_id", ""))
    if _CLIENT_MSG_ID.fullmatch(msg_id):
        return "text", "executed by a jupyter_client program (papermill, nbclient, nbval, console)"
    return "widget", "a notebook front end"
