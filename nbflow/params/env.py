"""What a batch run tells the kernel it starts, through environment variables.

``nbflow run`` executes a notebook in a separate Jupyter kernel, so the only channel it
has into ``wf.run()`` and ``%%workflow`` cells is the kernel's environment:

* ``NBFLOW_BATCH_ID``      the batch run every workflow run of the kernel is linked to;
* ``NBFLOW_PARAMS``        the injected parameters as JSON (what ``nf.param`` returns);
* ``NBFLOW_RUN_WORKERS``, ``NBFLOW_RUN_BACKEND``, ``NBFLOW_RUN_NO_CACHE``,
  ``NBFLOW_RUN_RERUN`` (JSON list)  run-level defaults from the command line;
* ``NBFLOW_LEASE=off``, ``NBFLOW_LEASE_TTL``  ``--no-lease`` / ``--lease-ttl``: these are the
  store's own settings (:mod:`nbflow.store.settings`), which a run's ``lease=`` /
  ``lease_ttl=`` left at None already defers to, so nothing more is needed in the kernel.

:func:`run_defaults` is the one hook the engine calls (at the top of ``Run.__init__``):
each option left at its built-in default takes the batch's value; an option the notebook
sets explicitly to something else keeps the notebook's value.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

from ..core.errors import InvalidOptionError

BATCH_ID = "NBFLOW_BATCH_ID"
PARAMS = "NBFLOW_PARAMS"
WORKERS = "NBFLOW_RUN_WORKERS"
BACKEND = "NBFLOW_RUN_BACKEND"
NO_CACHE = "NBFLOW_RUN_NO_CACHE"
RERUN = "NBFLOW_RUN_RERUN"
ALL = (BATCH_ID, PARAMS, WORKERS, BACKEND, NO_CACHE, RERUN)


def batch_id() -> str | None:
    """The batch run this process belongs to (None outside ``nbflow run``)."""
    return os.environ.get(BATCH_ID) or None


def injected_params() -> dict[str, Any]:
    """The parameters ``nbflow run`` injected into this kernel ({} outside a batch)."""
    text = os.environ.get(PARAMS)
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def run_defaults(
    workflow: Any, workers: Any, backend: Any, cache: Any, rerun: Any
) -> tuple[Any, Any, Any, Any]:
    """``(workers, backend, cache, rerun)`` with the batch's defaults filled in.

    ``--rerun`` names that are not in ``workflow`` are left out (a notebook may run
    several workflows; each reruns the named tasks it has).  Cheap when no batch is
    running (four dictionary lookups)."""
    env = os.environ
    if workers is None and env.get(WORKERS):
        workers = int(env[WORKERS])
    if isinstance(backend, str) and backend == "local" and env.get(BACKEND):
        backend = env[BACKEND]
    if cache is True and env.get(NO_CACHE) == "1":
        cache = False
    if rerun is None and env.get(RERUN):
        wanted = json.loads(env[RERUN])
        have = {r.name for r in workflow.nodes} | {r.key for r in workflow.nodes}
        rerun = [w for w in wanted if w in have] or None
    return workers, backend, cache, rerun


def kernel_env(
    batch: str,
    params: dict[str, Any],
    *,
    workers: int | None = None,
    backend: str | None = None,
    no_cache: bool = False,
    rerun: list[str] | None = None,
) -> dict[str, str]:
    """The environment variables that carry a batch run's settings into its kernel."""
    out = {BATCH_ID: batch, PARAMS: json.dumps(params, default=str)}
    if workers is not None:
        out[WORKERS] = str(workers)
    if backend:
        out[BACKEND] = backend
    if no_cache:
        out[NO_CACHE] = "1"
    if rerun:
        out[RERUN] = json.dumps(list(rerun))
    return out


def lease_env(*, no_lease: bool = False, lease_ttl: float | None = None) -> dict[str, str]:
    """The kernel environment for ``nbflow run --no-lease`` / ``--lease-ttl S``, checked here
    before any kernel starts (an unusable value is an ``nf.InvalidOptionError``)."""
    if lease_ttl is not None and not (math.isfinite(lease_ttl) and lease_ttl > 0):
        raise InvalidOptionError(
            f"--lease-ttl {lease_ttl}: give a finite number of seconds > 0 (how long a lease of "
            "the notebook's runs stays valid without a heartbeat, e.g. 30), or leave it out for 30")
    out: dict[str, str] = {}
    if no_lease:
        out["NBFLOW_LEASE"] = "off"
    if lease_ttl is not None:
        out["NBFLOW_LEASE_TTL"] = repr(float(lease_ttl))
    return out
