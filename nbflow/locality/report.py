"""``run.locality_report()``: how much data a run moved, where, and what would move less.

The report is built from facts the run recorded (Dask's transfer logs, where each result
lived, the sizes Dask measured, the bytes that came to the notebook), never from guesses:

* bytes moved between workers, in total and per edge (producer -> consumer), heaviest first;
* the *local share*: of all the input bytes Dask tasks consumed, the part that was already
  on the worker that ran them;
* bytes that came to this process (results asked for) and bytes sent from it (local
  arguments scattered once);
* suggestions, each with its evidence and its expected saving:
  - a task that fetched results from other workers, where running it on the worker holding
    most of its inputs would have fetched fewer bytes (:mod:`.moved_tips`, which also says
    what to change) — saves the difference;
  - a large result that came to the notebook: it moved only because it was asked for
    (``run[ref]``, a binding); return a summary from a task instead — saves its bytes;
  - results that came to the notebook because the run's own client closed (``backend=
    "dask"`` or an address: every result still held is brought here first): run on a
    ``distributed.Client`` that stays open — saves those bytes;
  - tasks short of memory (results spilled to disk, a worker that died under them, a
    worker whose memory peaked past Dask's pause threshold; :mod:`.memory`): give them
    more memory — saves the spilled bytes' write and read, or the work done again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape as html_escape
from typing import Any

from .moved_tips import moved_suggestions
from .units import human

__all__ = ["LocalityReport", "Suggestion", "build", "human", "suggest"]

BIG_FETCH = 10 * 1024 * 1024  # a result this large brought to the notebook is worth a note


@dataclass
class Suggestion:
    what: str  # the change to make
    evidence: str  # the measured facts behind it
    saving_bytes: int  # bytes it would not move
    saving_seconds: float | None = None  # compute it would not repeat (when that is the saving)

    def __str__(self) -> str:
        return f"{self.what} — {self.evidence} (saves {self.saving()})"

    def saving(self) -> str:
        parts = [f"~{human(self.saving_bytes)}"] if self.saving_bytes or not self.saving_seconds else []
        if self.saving_seconds:
            parts.append(f"~{self.saving_seconds:.2f} s of work done again")
        return ", ".join(parts)


@dataclass
class LocalityReport:
    backend: str
    placement: str | None
    bytes_moved: int
    transfers: int
    seconds_moving: float
    input_bytes: int
    local_share: float | None  # None: no Dask task had an input
    bytes_to_client: int
    bytes_from_client: int
    edges: Any  # DataFrame: producer, consumer, bytes, seconds, transfers
    tasks: Any  # DataFrame: task, worker, output_bytes, input_bytes, input_bytes_moved
    suggestions: list[Suggestion] = field(default_factory=list)
    # of bytes_to_client: results still held when the run's own client closed (backend
    # "dask" or an address), brought here so that run[ref] keeps working
    bytes_at_close: int = 0

    def text(self) -> str:
        lines = [f"locality report ({self.backend}, placement: {self.placement or '-'})"]
        if self.placement is None:
            lines.append("  no data moved between processes: this backend keeps results in "
                         "the notebook process")
            return "\n".join(lines)
        share = ("- (no task on the cluster took another task's result)" if self.local_share is None
                 else f"{self.local_share:.0%} of {human(self.input_bytes)}")
        lines += [
            f"  moved between workers: {human(self.bytes_moved)} in {self.transfers} "
            f"transfer(s), {self.seconds_moving:.3f} s",
            f"  input bytes already local: {share}",
            f"  to the notebook: {human(self.bytes_to_client)}{self._at_close()};  from the "
            f"notebook: {human(self.bytes_from_client)}",
        ]
        if len(self.edges):
            lines.append("  heaviest edges:")
            for r in self.edges.head(10).itertuples():
                lines.append(f"    {r.producer} -> {r.consumer}: {human(r.bytes)} "
                             f"({r.seconds:.3f} s)")
        if self.suggestions:
            lines.append("  suggestions:")
            lines += [f"    - {s}" for s in self.suggestions]
        return "\n".join(lines)

    __str__ = text

    def _at_close(self) -> str:
        if not self.bytes_at_close:
            return ""
        return f" ({human(self.bytes_at_close)} of it as the run's own client closed)"

    def html(self) -> str:
        """The report as HTML (the live widget's Locality tab): the same facts as
        :meth:`text`, with each edge's bytes drawn as a bar (heaviest edge = full width)."""
        esc = html_escape
        head = self.text().splitlines()
        lines = "".join(f"<div>{esc(x.strip())}</div>" for x in head[1:4 if self.placement else 2])
        parts = [f'<div class="nbflow-locality" data-bytes-moved="{self.bytes_moved}" '
                 f'data-transfers="{self.transfers}" style="font-size:13px">',
                 f"<b>{esc(head[0])}</b>{lines}"]
        if len(self.edges):
            top = max(int(self.edges["bytes"].max()), 1)
            rows = []
            for r in self.edges.head(20).itertuples():
                width = max(2, int(240 * r.bytes / top))
                rows.append(
                    f'<tr class="nbflow-edge" data-bytes="{int(r.bytes)}"><td>{esc(str(r.producer))} '
                    f"&rarr; {esc(str(r.consumer))}</td><td style='text-align:right'>"
                    f"{esc(human(r.bytes))}</td><td>{r.seconds:.3f} s</td><td>"
                    f'<div style="background:#5c6bc0;height:{2 + 10 * r.bytes // top}px;'
                    f'width:{width}px"></div></td></tr>')
            parts.append('<table style="margin-top:6px"><tr><th>edge</th><th>bytes</th>'
                         "<th>time</th><th></th></tr>" + "".join(rows) + "</table>")
        if self.suggestions:
            items = "".join(f'<li class="nbflow-suggestion"><b>{esc(s.what)}</b><br>{esc(s.evidence)}'
                            f" &mdash; saves {esc(s.saving())}</li>"
                            for s in self.suggestions)
            parts.append(f"<div style='margin-top:6px'>suggestions:</div><ul>{items}</ul>")
        parts.append("</div>")
        return "".join(parts)

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(self.text())


def build(agent: Any, backend: str) -> LocalityReport:
    """The report of a run from its :class:`~.agent.LocalityAgent` (None: not a Dask run)."""
    import pandas as pd

    if agent is None:
        empty = pd.DataFrame(columns=["producer", "consumer", "bytes", "seconds", "transfers"])
        return LocalityReport(backend, None, 0, 0, 0.0, 0, None, 0, 0, empty,
                              pd.DataFrame(columns=["task", "worker", "output_bytes",
                                                    "input_bytes", "input_bytes_moved"]))
    t = agent.transfers()
    if len(t):
        edges = (t.groupby(["producer", "consumer"], dropna=False)
                 .agg(bytes=("bytes", "sum"), seconds=("seconds", "sum"),
                      transfers=("bytes", "size"))
                 .reset_index().sort_values("bytes", ascending=False, kind="stable")
                 .reset_index(drop=True))
    else:
        edges = pd.DataFrame(columns=["producer", "consumer", "bytes", "seconds", "transfers"])
    moved = agent.input_bytes_moved()
    rows = []
    input_total = 0
    for key in agent.order:
        # measured sizes (a task submitted ahead of its inputs only had predictions)
        inb = sum(agent.nbytes_of.get(p) or b or 0 for p, _, b in agent.inputs_of.get(key, ()))
        input_total += inb
        rows.append({"task": key, "worker": agent.worker_of.get(key),
                     "output_bytes": agent.nbytes_of.get(key), "input_bytes": inb,
                     "input_bytes_moved": moved.get(key, 0)})
    tasks = pd.DataFrame(rows, columns=["task", "worker", "output_bytes", "input_bytes",
                                        "input_bytes_moved"])
    consumer_bytes = int(sum(moved.values()))
    share = None if input_total == 0 else max(0.0, 1.0 - consumer_bytes / input_total)
    b = agent.backend
    report = LocalityReport(
        backend, agent.mode, int(t["bytes"].sum()) if len(t) else 0, len(t),
        float(t["seconds"].sum()) if len(t) else 0.0, input_total, share,
        int(getattr(b, "client_bytes", 0)), int(getattr(b, "scattered_bytes", 0)), edges, tasks)
    report.bytes_at_close = int(getattr(b, "closing_bytes", 0))
    report.suggestions = suggest(agent, edges, list(getattr(b, "fetched", [])))
    if report.bytes_at_close >= BIG_FETCH:
        report.suggestions.insert(0, Suggestion(
            "run with a distributed.Client that stays open (wf.run(backend=client), or "
            "%%workflow --backend client with client a notebook variable), and ask for the "
            "results you need",
            f"{human(report.bytes_at_close)} of results came to the notebook only because the "
            "run opened its own client (backend='dask' or a scheduler address) and brought "
            "every result it still held here before closing it",
            report.bytes_at_close))
        report.suggestions.sort(key=lambda s: -s.saving_bytes)
    return report


def suggest(agent: Any, edges: Any, fetched: list[tuple[str, int | None]]) -> list[Suggestion]:
    out = [Suggestion(*tip) for tip in moved_suggestions(agent, edges)]
    for key, n in fetched:
        if n and n >= BIG_FETCH:
            out.append(Suggestion(
                f"return a summary of {key} instead of its whole value",
                f"its {human(n)} result came to the notebook only because it was asked for "
                "(run[ref], ref.result() or a %%workflow binding)", int(n)))
    out += memory_suggestions(agent)
    out.sort(key=lambda s: -s.saving_bytes)
    return out


def memory_suggestions(agent: Any) -> list[Suggestion]:
    """"Give these tasks more memory", from what the cluster recorded (see :mod:`.memory`)."""
    mem = getattr(agent, "memory", None)
    if mem is None:
        return []
    node = agent.node_of
    fix = ("give these tasks more memory: declare it (@nf.task(resources={'memory': bytes}) "
           "with wf.run(resources=...), so placement sends them to workers with room) or "
           "run workers with a larger memory_limit")
    out = []
    spilled = [(node.get(k, k), w, b) for w, wm in mem.workers.items() for k, b in wm.spilled.items()]
    if spilled:
        total_b = sum(b for _, _, b in spilled)
        names = ", ".join(sorted({t for t, _, _ in spilled})[:8])
        where = "; ".join(f"{w} (limit {human(wm.limit)})" for w, wm in mem.workers.items()
                          if wm.spilled)
        out.append(Suggestion(
            f"{fix} — {names}",
            f"{len(spilled)} result(s) of {names} ({human(total_b)}) were spilled to disk because "
            f"their worker's memory was past Dask's target: {where}", 2 * total_b))
    if mem.restarted:
        lost = sorted({node.get(k, k) for k in mem.restarted})
        one = len(lost) == 1
        seconds = sum(agent.seconds_of.get(n, 0.0) for n in lost)
        out.append(Suggestion(
            f"{fix} — {', '.join(lost[:8])}",
            f"{', '.join(lost[:8])} {'was' if one else 'were'} running when "
            f"{'its' if one else 'their'} worker died or was restarted "
            f"({sum(mem.restarted.values())} time(s)); Dask ran "
            f"{'it' if one else 'them'} again on another worker",
            0, seconds or None))
    for w, wm in sorted(mem.workers.items()):
        if not wm.limit or wm.peak < wm.pause_at * wm.limit:
            continue
        held = sorted(((agent.nbytes_of.get(t) or 0, t) for t, ww in agent.worker_of.items()
                       if ww == w), reverse=True)[:3]
        if not held:
            continue
        names = ", ".join(t for _, t in held)
        out.append(Suggestion(
            f"{fix} — {names}",
            f"worker {w} peaked at {human(wm.peak)} of its {human(wm.limit)} limit (Dask pauses "
            f"a worker at {wm.pause_at:.0%}); its biggest results were {names} "
            f"({human(sum(b for b, _ in held))})", 0))
    return out
