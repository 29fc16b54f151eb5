"""The locality report's suggestions about where tasks ran: which moved bytes a different
place would have saved, and what to change so that the next run does it.

A task fetched results made on other workers.  Had it run on the worker holding the most of
its inputs, it would still have fetched the rest, so the saving is the bytes it fetched
less the bytes it would have fetched there — none for a reduce over results made evenly on
every worker, which fetches about as much wherever it runs.  Only a saving of at least
:data:`MIN_SHARE` of the bytes fetched makes a suggestion, and the suggestion says what to
change, from what the run recorded:

* a run without placement ``"locality"``: use it;
* a task sent without a placement hint (an input's size was unknown when it went to Dask:
  no history yet) — the next run places it by the sizes this run recorded;
* a task the rule sent to that worker which ran elsewhere: Dask moved it (work stealing, a
  busy worker) — more threads on that worker keep it there;
* a task the rule sent elsewhere: fuse a producer with its only consumer, or give the
  worker more threads (its queue is what sent the task away).

A consumer that fetched one result, whose producer has no other consumer, is a *pair*
("keep p -> c on one worker"); a consumer that fetched several is told where to run.  The
same suggestion for the items of a map (``load.map-0[3] -> clean.map-0[3]``, ...) is one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .units import human

# A saving below this share of the bytes the task fetched is left out: inputs of about
# equal size split between workers make a "better" place that differs by a few bytes.
MIN_SHARE = 0.2

LOCALITY_FIX = "run with placement 'locality' (nbflow.locality.placement('locality'))"


@dataclass(frozen=True)
class Moved:
    """One consumer whose inputs moved, and the place that would have moved fewer bytes."""

    consumer: str
    producers: tuple[str, ...]  # the producers whose results it fetched
    nbytes: int  # bytes it fetched
    seconds: float
    best: str  # the worker holding most of its inputs
    saving: int  # bytes it would not have fetched there
    why: str  # what to change (see the module)


Tip = tuple[str, str, int]  # what to change, the evidence, the bytes it saves


def moved_suggestions(agent: Any, edges: Any) -> list[Tip]:
    """The suggestions for the run of ``agent`` whose moved results are ``edges``
    (producer, consumer, bytes, seconds)."""
    consumers: dict[str, int] = {}
    for key in agent.order:
        for producer, _, _ in agent.inputs_of.get(key, ()):
            consumers[producer] = consumers.get(producer, 0) + 1
    fetched: dict[str, list[Any]] = {}
    for r in edges.itertuples():
        if isinstance(r.consumer, str) and r.bytes > 0:
            fetched.setdefault(r.consumer, []).append(r)
    groups: dict[tuple[str, str], list[Moved]] = {}
    for consumer, rows in fetched.items():
        m = _moved(agent, consumer, rows)
        if m is None:
            continue
        pair = len(m.producers) == 1 and consumers.get(m.producers[0], 0) == 1
        key = (family(m.producers[0]) if pair else "", family(consumer))
        groups.setdefault(key, []).append(m)
    return [_suggestion(ms, pair=bool(producers)) for (producers, _), ms in groups.items()]


def family(key: str) -> str:
    """What the calls of one map's items share: ``load.map-0[3]`` -> ``load.map-0[*]``."""
    return re.sub(r"\[\d+\]$", "[*]", key)


def fetched_on(agent: Any, consumer: str, worker: str | None) -> int:
    """Bytes ``consumer`` would have fetched on ``worker``: its inputs whose result was
    elsewhere (or nowhere known), at their measured sizes."""
    return sum(agent.nbytes_of.get(p) or b or 0 for p, _, b in agent.inputs_of.get(consumer, ())
               if worker is None or agent.worker_of.get(p) != worker)


def _moved(agent: Any, consumer: str, rows: list[Any]) -> Moved | None:
    places = {agent.worker_of.get(p) for p, _, _ in agent.inputs_of.get(consumer, ())} - {None}
    if not places:
        return None
    best = min(sorted(places), key=lambda w: fetched_on(agent, consumer, w))
    nbytes = int(sum(r.bytes for r in rows))
    saving = nbytes - fetched_on(agent, consumer, best)
    if saving <= 0 or saving < MIN_SHARE * nbytes:
        return None
    return Moved(consumer, tuple(dict.fromkeys(r.producer for r in rows)), nbytes,
                 float(sum(r.seconds for r in rows)), best, saving, _why(agent, consumer, best))


def _why(agent: Any, consumer: str, best: str) -> str:
    if agent.mode != "locality":
        return LOCALITY_FIX
    hinted = getattr(agent, "hinted", {}).get(consumer)
    if hinted is None:
        return ("it was sent without a placement hint, since an input's size was unknown then "
                "(no history yet): the next run places it by the sizes this run recorded")
    if hinted == best:
        return ("placement sent it there, but Dask ran it on another worker (work stealing, or "
                "that worker was busy): give that worker more threads")
    return ("placement sent it to another worker, whose queue looked shorter: fuse the tasks, "
            "or give the workers more threads")


def _suggestion(ms: list[Moved], pair: bool) -> Tip:
    """One suggestion for consumers alike (one, or the items of a map); ``pair``: each
    fetched the result of one producer that has no other consumer."""
    top = max(ms, key=lambda m: m.nbytes)
    total, saving = sum(m.nbytes for m in ms), sum(m.saving for m in ms)
    seconds = sum(m.seconds for m in ms)
    if len(ms) == 1:
        if pair:
            p = top.producers[0]
            there = "" if saving == total else (
                f"; on {p}'s worker it would still have fetched {human(total - saving)} of "
                "other inputs")
            return (f"keep {p} -> {top.consumer} on one worker: {top.why}",
                    f"{top.consumer} is the only consumer of {p}, yet {human(total)} moved "
                    f"between workers in {seconds:.3f} s{there}", saving)
        return (f"run {top.consumer} on {top.best}: {top.why}",
                f"it fetched {human(total)} from {len(top.producers)} task(s) on other "
                f"workers in {seconds:.3f} s; on {top.best}, which held most of its inputs, it "
                f"would have fetched {human(total - saving)}", saving)
    if pair:
        what = (f"keep each {family(top.producers[0])} -> {family(top.consumer)} pair on one "
                f"worker: {top.why}")
        evidence = (f"each consumer is the only one of its producer, yet {len(ms)} of these pairs "
                    f"ran on two workers and moved {human(total)} in {seconds:.3f} s (the "
                    f"largest: {top.producers[0]} -> {top.consumer}, {human(top.nbytes)})")
    else:
        what = f"run each {family(top.consumer)} where most of its inputs are: {top.why}"
        evidence = (f"{len(ms)} of them fetched {human(total)} from other workers in "
                    f"{seconds:.3f} s; where most of their inputs were they would have fetched "
                    f"{human(total - saving)} (the largest: {top.consumer}, {human(top.nbytes)})")
    return what, evidence, saving
