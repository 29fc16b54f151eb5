"""The options of one run, written once: :class:`RunOptions`.

``wf.run()``, ``wf.start()``, ``await wf.arun()``, ``%%workflow`` and ``nbflow run`` all build
one frozen ``RunOptions`` and hand it on; it is validated here, in one place, when it is
made, so a bad option is refused before anything about a run exists.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from .errors import InvalidOptionError, WorkflowDefinitionError
from .memlimit import memory_capacity
from .units import parse_resources
from .validation import validate_run_options

ON_CONFLICT = ("warn", "serialize", "error")
BACKENDS = ("local", "process", "dask")


@dataclass(frozen=True, slots=True)
class RunOptions:
    """How to run a workflow (see ``Workflow.run`` for the meaning of each option)."""

    workers: int | None = None
    backend: Any = "local"
    cache: bool = True
    raise_on_error: bool = True
    continue_on_error: bool = True
    resources: Mapping[str, float | int | str] | None = None
    rerun: Any = None
    strict: bool = False
    on_conflict: str = "warn"
    # cache leases between processes (nbflow.store.lease); None: NBFLOW_LEASE / NBFLOW_LEASE_TTL
    lease: bool | None = None
    lease_ttl: float | None = None
    # derived, filled in __post_init__
    backend_kind: str = field(default="local", init=False, compare=False)
    capacity: Mapping[str, float] = field(default_factory=dict, init=False, compare=False)

    def __post_init__(self) -> None:
        validate_run_options(workers=self.workers, cache=self.cache, raise_on_error=self.raise_on_error,
                             continue_on_error=self.continue_on_error, strict=self.strict,
                             resources=self.resources, rerun=self.rerun, on_conflict=self.on_conflict)
        check_lease_options(self.lease, self.lease_ttl)
        capacity = {"memory": memory_capacity(), "cpu": float(os.cpu_count() or 1)}  # (RAM or cgroup limit)
        capacity.update(parse_resources(self.resources, what="run"))
        object.__setattr__(self, "backend_kind", backend_kind(self.backend))
        object.__setattr__(self, "capacity", capacity)

    def replace(self, **changes: Any) -> RunOptions:
        """A copy with ``changes`` (validated again)."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.init}
        values.update(changes)
        return RunOptions(**values)


def check_lease_options(lease: Any, lease_ttl: Any) -> None:
    """``lease`` is True, False or None; ``lease_ttl`` a finite number of seconds > 0, or None."""
    if lease is not None and not isinstance(lease, bool):
        raise InvalidOptionError(
            f"run: lease={lease!r} is not allowed; lease must be True (cache leases: a task another "
            "process is computing is waited for), False (no leases) or None (NBFLOW_LEASE decides)")
    if lease_ttl is None:
        return
    if (isinstance(lease_ttl, bool) or not isinstance(lease_ttl, (int, float)) or not math.isfinite(lease_ttl)
            or lease_ttl <= 0):
        raise InvalidOptionError(
            f"run: lease_ttl={lease_ttl!r} is not allowed; lease_ttl must be a finite number of seconds "
            "> 0 (how long a lease stays valid without a heartbeat, e.g. 30), or None for NBFLOW_LEASE_TTL")


def backend_kind(backend: Any) -> str:
    """``"local"``, ``"process"`` or ``"dask"`` for a ``backend=`` value; refuses others."""
    if isinstance(backend, str) and backend in BACKENDS:
        return backend
    if isinstance(backend, str) and "://" in backend:
        return "dask"
    try:
        from distributed import Client
    except ImportError:
        return _refuse_backend(backend)
    if isinstance(backend, Client):
        return "dask"
    return _refuse_backend(backend)


def _refuse_backend(backend: Any) -> str:
    raise WorkflowDefinitionError(
        f"unknown backend {backend!r}: use 'local', 'process', 'dask', a scheduler address such "
        "as 'tcp://host:8786', or a distributed.Client"
    )
