"""Code lineage: recognising a task's code under another name.

The store keeps, for every task key whose result it saved, the digest of the task's code
fingerprint (:mod:`nbflow.store.fingerprint`) and the fingerprint's parts: one hash per
function, class or global value the code is made of, labelled by its qualified name.  The
digest covers the labels, so renaming a function changes it even when not one line of the
code changed.  For prediction the question is "has this code run before, under any
name?", so the *lineage key* of a fingerprint is a hash of its parts' hashes without their
labels: a task renamed (function, task name or both) with its code unchanged keeps its
lineage key, and so the history of its earlier name.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["lineage_key", "lineage_keys_of_nodes"]


def lineage_key(parts: Mapping[str, str] | None) -> str | None:
    """The lineage key of a fingerprint with these ``parts`` (None without parts)."""
    if not parts:
        return None
    h = hashlib.blake2b(digest_size=16)
    for v in sorted(str(v) for v in parts.values()):
        h.update(v.encode())
        h.update(b"\0")
    return "l" + h.hexdigest()


def lineage_keys_of_nodes(nodes: Sequence[Any], positions: Sequence[int]) -> list[str | None]:
    """The lineage key of the task code of ``nodes[i]`` for each ``i`` in ``positions``."""
    from nbflow.store.fingerprint import code_fingerprint

    memo: dict[int, str | None] = {}
    out: list[str | None] = []
    for i in positions:
        fn = getattr(getattr(getattr(nodes[i], "task", None), "spec", None), "fn", None)
        if fn is None:
            out.append(None)
            continue
        if id(fn) not in memo:
            try:
                memo[id(fn)] = lineage_key(code_fingerprint(fn).parts)
            except Exception:  # code that cannot be fingerprinted has no lineage; not an error
                memo[id(fn)] = None
        out.append(memo[id(fn)])
    return out
