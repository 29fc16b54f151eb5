"""Workflow parameters: ``nf.param`` and the settings a batch run passes to its kernel.

* :mod:`.env`     what ``nbflow run`` tells the kernel it starts, through environment
                  variables, and :func:`~.env.run_defaults`, which the composition point
                  applies to every run so ``--workers``/``--backend``/... reach the notebook;
* :mod:`.params`  ``nf.param(name, default)`` and ``%%workflow -p NAME VALUE``.

It sits below the notebook and batch rooms, which both use it.
"""

from __future__ import annotations

from .params import ParamError, param

__all__ = ["ParamError", "param"]
