"""Amounts of resources: numbers, or sizes such as ``"2GiB"`` and ``"500 MB"``.

Shared by task specs (``resources=``), run capacities (``wf.run(resources=...)``), the static
checks and ``nbflow gc --max-bytes``, so that every place reads an amount the same way.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from .errors import WorkflowDefinitionError

_UNITS = {
    "": 1, "b": 1,
    "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
    "t": 10**12, "tb": 10**12,
    "ki": 2**10, "kib": 2**10, "mi": 2**20, "mib": 2**20, "gi": 2**30, "gib": 2**30,
    "ti": 2**40, "tib": 2**40,
}
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([a-zA-Z]*)\s*$")


def parse_amount(value: float | int | str, *, what: str = "resource") -> float:
    """Parse a resource amount: a number, or a size such as ``"2GiB"``, ``"512 MB"``."""
    if isinstance(value, bool):
        raise WorkflowDefinitionError(f"{what}: expected a number or a size like '2GiB', got {value!r}")
    if isinstance(value, (int, float)):
        amount = float(value)
    elif isinstance(value, str):
        m = _SIZE.match(value)
        unit = m.group(2).lower() if m else None
        if m is None or unit not in _UNITS:
            raise WorkflowDefinitionError(
                f"{what}: cannot read {value!r} as an amount; write a number or a size such as "
                "'2GiB', '500MB' or '1.5e9'"
            )
        amount = float(m.group(1)) * _UNITS[unit]
    else:
        raise WorkflowDefinitionError(f"{what}: expected a number or a size like '2GiB', got {value!r}")
    if amount < 0:
        raise WorkflowDefinitionError(f"{what}: amount must not be negative, got {value!r}")
    return amount


def parse_resources(resources: Mapping[str, float | int | str] | None, *, what: str) -> dict[str, float]:
    if not resources:
        return {}
    if not isinstance(resources, Mapping):
        raise WorkflowDefinitionError(
            f"{what}: resources must be a mapping such as {{'memory': '2GiB', 'gpu': 1}}, "
            f"got {type(resources).__name__}"
        )
    return {str(k): parse_amount(v, what=f"{what} resource {k!r}") for k, v in resources.items()}
