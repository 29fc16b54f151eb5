"""Byte counts as people read them (``1.2 MB``), for the locality report and ``nf.plan``."""

from __future__ import annotations


def human(n: float) -> str:
    """``n`` bytes in B, KB, MB or GB (powers of 1000, one decimal past bytes)."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"  # pragma: no cover
