"""Batch runs: notebooks as parameterised jobs and as tasks, sweeps, and reports.

Modules, one job each:

* :mod:`.records`  the batch tables in the store (batches, links, parameters, outputs)
* :mod:`.links`    links each workflow run to its batch and parameters as it starts
(``nf.param`` and the settings passed to a batch's kernel live in :mod:`nbflow.params`.)
* :mod:`.outputs`  ``nf.output`` / ``nf.outputs``
* :mod:`.engine`   the papermill engine that can be stopped cleanly and followed per cell
* :mod:`.runner`   ``nbflow run``: one notebook, one batch run
* :mod:`.sweep`    ``nbflow sweep``: a grid of batch runs and their outputs in one table
* :mod:`.nbtask`   ``nf.notebook``: a notebook as a task of a workflow
* :mod:`.report`   ``nbflow report``: one self-contained HTML file per run
* :mod:`.cli`      the ``nbflow`` subcommands above

Importing this package is cheap (papermill is imported only by a batch run).
"""

from __future__ import annotations

from ..params.params import ParamError, param
from .nbtask import NotebookFailed, NotebookOutputs, notebook
from .outputs import OutputError, output, outputs

__all__ = [
    "NotebookFailed",
    "NotebookOutputs",
    "OutputError",
    "ParamError",
    "notebook",
    "output",
    "outputs",
    "param",
]
