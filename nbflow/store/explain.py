"""Why a task ran or hit the cache, in words: the reasons and the full explanations.

Pure functions over what the cache recorded for a node (:class:`NodeCache`) and what was
stored before (its ``prev``); the only thing read from the store is a stored code
fingerprint's parts, through the ``parts_of`` function the caller passes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ..core.explain import Explanation
from ..core.kinds import COLLECT, MAP, TASK, UNDO
from .fingerprint import CodeFingerprint, diff_parts
from .store import INLINE_MAX

Changes = list[tuple[str, str | None, str | None]]
PartsOf = Callable[[str], "dict[str, str] | None"]


class Prev(NamedTuple):
    """What was stored for the same task (workflow name + task key) last time."""

    cache_key: str
    code: str
    inputs: dict[str, str]
    options: str
    run_id: str


@dataclass(slots=True)
class NodeCache:
    """What the cache knows about one node of this run."""

    cached: bool = False
    reason: str | None = None
    key: str | None = None
    code: CodeFingerprint | None = None
    inputs: dict[str, str] | None = None
    options: str | None = None
    blob: str | None = None
    size: int | None = None
    prev: Prev | None = None
    forced_by: str | None = None
    upstream_reran: list[str] = field(default_factory=list)
    unstored: str | None = None
    waited_for: str | None = None  # the live run whose lease this node waited on (.lease)


def code_changes(info: NodeCache, parts_of: PartsOf) -> Changes:
    if info.prev is None or info.code is None or info.prev.code == info.code.digest:
        return []
    old = parts_of(info.prev.code)
    if old is None:
        return [("code", info.prev.code, info.code.digest)]
    return diff_parts(old, info.code.parts)


def input_changes(info: NodeCache) -> Changes:
    if info.prev is None or info.inputs is None:
        return []
    return diff_parts(info.prev.inputs, info.inputs)


def miss_reason(task: str, info: NodeCache, parts_of: PartsOf) -> str:
    prev = info.prev
    if prev is None:
        return with_notes("never ran", info)
    if prev.cache_key == info.key:
        return "stored result is missing (removed by gc, or its run stopped before saving it)"
    why = []
    code = code_changes(info, parts_of)
    if code or (info.code is not None and prev.code != info.code.digest):
        own = f"function {info.code.name}" if info.code else ""
        others = [label for label, _, _ in code if label != own]
        detail = ", ".join(others[:2]) + (", ..." if len(others) > 2 else "")
        why.append(f"code of {task} changed" + (f" ({detail})" if others else ""))
    changed = [label for label, _, _ in input_changes(info)]
    if changed:
        noun = "input" if len(changed) == 1 else "inputs"
        why.append(f"{noun} {', '.join(changed[:3])}{', ...' if len(changed) > 3 else ''} changed")
    if prev.options != info.options:
        why.append("options changed")
    if not why:
        why.append("cache key format changed")
    return with_notes("; ".join(why), info)


def with_notes(reason: str, info: NodeCache) -> str:
    if info.code is not None and info.code.notes:
        return f"{reason} [{'; '.join(info.code.notes)}]"
    return reason


def hit_reason(info: NodeCache) -> str:
    if info.upstream_reran:
        return (f"inputs unchanged although {', '.join(info.upstream_reran[:2])} re-ran "
                "(early cutoff)")
    if info.prev is not None and info.prev.cache_key != info.key:
        return "code and inputs match an earlier stored result"
    return "code and inputs unchanged"


def explain(ref: Any, info: NodeCache | None, state: str, parts_of: PartsOf,
            blob_path: Callable[[str], Any]) -> Explanation:
    """The full reason for node ``i``: what was compared, and what differed."""
    if ref.kind in (COLLECT, MAP):
        return Explanation(ref.key, ref.name, False, "collects the results of its items; never cached",
                           [], f"{ref.key}: collects the results of its items (not cached itself)")
    if info is None and (ref.kind not in (TASK, UNDO) or ref.task is None):
        what = f"a {ref.kind} node, resolved by the scheduler itself (not cached)"
        return Explanation(ref.key, ref.name, False, None, [], f"{ref.key}: {what}")
    if info is None:

        return Explanation(ref.key, ref.name, False, None, [], f"{ref.key}: not looked up ({state})")
    lines = []
    verdict = "cache hit" if info.cached else "ran"
    lines.append(f"{ref.key} (task {ref.name}): {verdict}: {info.reason}")
    changes: list[tuple[str, str | None, str | None]] = []
    if info.forced_by is not None:
        lines.append(f"  forced    by rerun={info.forced_by!r}")
    if info.code is not None:
        code = code_changes(info, parts_of)
        changes += [(f"code: {label}", a, b) for label, a, b in code]
        if info.prev is None:
            lines.append(f"  code      {short(info.code.digest)} (nothing stored before to compare)")
        elif code:
            lines.append("  code      changed:")
            lines += [f"              {label}: {short(a)} -> {short(b)}" for label, a, b in code]
        elif info.prev.code != info.code.digest:
            lines.append(f"  code      changed: {short(info.prev.code)} -> {short(info.code.digest)}")
        else:
            lines.append(f"  code      unchanged ({short(info.code.digest)})")
        for note in info.code.notes:
            lines.append(f"  note      {note}")
    if info.inputs is not None:
        inp = input_changes(info)
        changes += [(f"input {label}", a, b) for label, a, b in inp]
        if inp:
            lines.append("  inputs    changed:")
            lines += [f"              {label}: {short(a)} -> {short(b)}" for label, a, b in inp]
        elif info.inputs:
            lines.append("  inputs    " + ("unchanged: " if info.prev else "")
                         + ", ".join(f"{k} {short(v)}" for k, v in info.inputs.items()))
        else:
            lines.append("  inputs    none")
        if info.upstream_reran:
            lines.append(f"  upstream  re-ran this run: {', '.join(info.upstream_reran)}")
    if info.prev is not None and info.options is not None and info.prev.options != info.options:
        changes.append(("options", info.prev.options, info.options))
        lines.append(f"  options   changed: {short(info.prev.options)} -> {short(info.options)}")
    if info.key is not None:
        before = f" (before: {short(info.prev.cache_key)}, run {info.prev.run_id})" if info.prev else ""
        lines.append(f"  cache key {short(info.key)}{before}")
    if info.blob is not None:
        where = "inline in the journal" if (info.size or 0) <= INLINE_MAX else \
            blob_path(info.blob)
        lines.append(f"  result    {info.size} bytes, {where}")
    elif info.unstored:
        lines.append(f"  result    not stored: {info.unstored}")
    return Explanation(ref.key, ref.name, info.cached, info.reason, changes, "\n".join(lines))


def short(d: str | None) -> str:
    if d is None:
        return "(none)"
    return d if len(d) <= 13 else d[:13] + "…"
