"""The JupyterLab dashboard's server side: a Jupyter server extension under ``/nbflow/api/``.

It serves the run store (``$NBFLOW_HOME``, else the store a run in the server's root
directory would use: the nearest ``.nbflow/`` there or above, else the project root's) to
the "Workflow runs" panel of the lab extension: the list of runs, one run's
tasks and graph, its events after a cursor (long-poll), and cancel requests.  Reads go
through read-only SQLite connections (WAL readers never block the processes writing
runs); the only write is a cancel request, which the run's own process picks up (see
:mod:`nbflow.server.cancel`).

The extension is enabled on install by ``etc/jupyter/jupyter_server_config.d/nbflow.json``
(package data); the lab extension's built assets ship in ``nbflow/labextension/``.  This
module imports nothing from Jupyter until a server loads it, so ``import nbflow`` stays light.
"""

from __future__ import annotations

from typing import Any


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "nbflow.server"}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    return [{"src": "labextension", "dest": "nbflow"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    from .handlers import setup_handlers

    setup_handlers(serverapp)


# the name older jupyter_server / notebook versions look for
load_jupyter_server_extension = _load_jupyter_server_extension
