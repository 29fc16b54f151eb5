"""What every benchmark here shares: machine info, timing, ratios against targets, JSON out.

The benchmarks report **ratios against a baseline measured in the same process, in the
same run**, so that the machine's speed and its noise cancel out.  Three habits make that
hold, and this module gives each one a single implementation:

* **Alternation.**  The systems being compared are sampled round-robin within every repeat,
  with the starting system rotated from one repeat to the next (:func:`rotations`,
  :func:`alternate`).  A burst of load from another process then hits every system alike
  instead of spoiling all samples of one of them.
* **Medians.**  Each figure is the median of the repeats (:func:`summarize`), which a single
  slow outlier cannot move.
* **A clean start per sample.**  ``gc.collect()`` runs before each sample (:func:`timed`,
  :func:`alternate`), so garbage left by one system is not collected on another's clock.
  The collector stays enabled while timing, because a real run pays for it;
  :class:`GcTimer` measures how much of a sample it took.

Targets are written as ``{"value", "target", "op", "met", ...}`` (:func:`target`), and each
benchmark prints one JSON document on stdout and optionally writes it to a file
(:func:`emit_json`); progress goes to stderr (:func:`progress`) so that stdout stays
parseable.  :func:`machine_info` records what the figures were measured on, including a
hash of nbflow's source and the git commit, so a figure can be tied to the code it
measured.

Imported by the scripts next to it as ``import _harness`` (they run as plain scripts from
the repository root, ``.venv/bin/python benchmarks/NAME.py``).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import gc
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

REPO_ROOT = Path(__file__).resolve().parent.parent
"""The repository this benchmark directory belongs to."""

DEFAULT_TRACES = REPO_ROOT / "tests" / "data" / "wfcommons"
"""The WfFormat traces kept in the repository (see the README there)."""

T = TypeVar("T")


# --------------------------------------------------------------------------- output


def progress(name: str) -> Callable[[str], None]:
    """A logger printing ``[name HH:MM:SS] msg`` lines on stderr (stdout carries the JSON)."""

    def log(msg: str) -> None:
        print(f"[{name} {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    return log


def emit_json(doc: Any, path: str | os.PathLike[str] | None = None) -> str:
    """Print ``doc`` as indented JSON on stdout and, given ``path``, write the same text there."""
    text = json.dumps(doc, indent=2)
    print(text)
    if path is not None:
        Path(path).write_text(text + "\n")
    return text


# --------------------------------------------------------------------------- nbflow


def import_nbflow() -> Any:
    """``import nbflow``, from this checkout when it is not installed in the interpreter."""
    try:
        import nbflow
    except ImportError:
        sys.path.insert(0, str(REPO_ROOT))
        import nbflow
    return nbflow


@contextlib.contextmanager
def local_cluster(workers: int = 4) -> Iterator[Any]:
    """A ``distributed.Client`` of a ``LocalCluster`` of ``workers`` single-thread worker
    processes on 127.0.0.1 (the cluster every Dask benchmark here measures), closed on exit."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                           dashboard_address=None, host="127.0.0.1")
    client = Client(cluster, set_as_default=False)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


# Between two samples on one client: see settle_client.  ``--no-settle`` turns it off.
SETTLE_S = 0.03


def settle_client(client: Any, quiet: float | None = None) -> None:
    """Let the messages of the previous sample go before the next one starts.

    Dask's client writes to the scheduler in batches, no sooner than 10 ms after its
    previous write; the scheduler's streams to the workers batch the same way.  The previous
    sample's last message (the release of its results, as its futures are dropped) was
    written just before the next sample's call, so the next graph waited up to ~12 ms in
    the client, for whichever system came next: a delay neither system's run caused, which
    fell on one or the other by the order of the alternation.  Waiting until the client's
    batch window is closed and then ``quiet`` seconds (default :data:`SETTLE_S`, for the
    scheduler's and the workers' streams) starts every sample from the same idle state, as
    a notebook run started by a person does."""
    quiet = SETTLE_S if quiet is None else quiet
    if quiet <= 0:
        return
    comm = getattr(client, "scheduler_comm", None)
    deadline = time.monotonic() + 1.0
    while comm is not None and comm.next_deadline is not None and time.monotonic() < deadline:
        time.sleep(0.001)
    time.sleep(quiet)


@contextlib.contextmanager
def nbflow_home(store: str | os.PathLike[str] | None = None, *, replace: bool = False) -> Iterator[str]:
    """Point ``NBFLOW_HOME`` (the run store) at ``store``, or at a throw-away directory.

    Without ``store``, an existing ``NBFLOW_HOME`` is kept unless ``replace`` is true (a
    benchmark that needs a fresh, empty store per sample passes ``replace=True``).  The
    previous value is restored on exit, and a temporary directory is removed.
    """
    before = os.environ.get("NBFLOW_HOME")
    try:
        if store is not None:
            os.environ["NBFLOW_HOME"] = os.fspath(store)
            yield os.fspath(store)
        elif before and not replace:
            yield before
        else:
            with tempfile.TemporaryDirectory(prefix="nbflow-bench-") as tmp:
                home = str(Path(tmp) / "store")
                os.environ["NBFLOW_HOME"] = home
                yield home
    finally:
        if before is None:
            os.environ.pop("NBFLOW_HOME", None)
        else:
            os.environ["NBFLOW_HOME"] = before


# --------------------------------------------------------------------------- timing


def timed(fn: Callable[[], object]) -> float:
    """Seconds ``fn()`` takes (wall clock, ``perf_counter``), after a ``gc.collect()``."""
    gc.collect()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def rotations(names: Sequence[str], repeat: int) -> Iterator[tuple[int, list[str]]]:
    """``(r, order)`` for each repeat ``r``: ``names`` rotated left by ``r`` places.

    Every system is sampled once per repeat, and each one takes every position in turn, so
    none is always first (cold caches) or always last (after the others' garbage).
    """
    k = len(names)
    for r in range(repeat):
        s = r % k if k else 0
        yield r, [*names[s:], *names[:s]]


def alternate(
    samplers: Mapping[str, Callable[[], T]],
    repeat: int,
    *,
    log: Callable[[str], None] | None = None,
) -> dict[str, list[T]]:
    """Call every sampler once per repeat, round-robin in :func:`rotations` order.

    ``gc.collect()`` runs before each call.  Returns each sampler's results in call order.
    """
    out: dict[str, list[T]] = {name: [] for name in samplers}
    for r, order in rotations(list(samplers), repeat):
        for name in order:
            gc.collect()
            out[name].append(samplers[name]())
        if log is not None:
            log(f"repeat {r + 1}/{repeat} done")
    return out


class GcTimer:
    """Wall time spent in the cyclic garbage collector, via ``gc.callbacks``.

    Install with ``gc.callbacks.append(timer)``; ``mark()`` before a sample and
    ``since(mark)`` after it give ``(seconds in the collector, full collections)``.
    """

    def __init__(self) -> None:
        self.seconds = 0.0
        self.full = 0
        self._t0 = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._t0
            if info.get("generation") == 2:
                self.full += 1

    def mark(self) -> tuple[float, int]:
        return self.seconds, self.full

    def since(self, mark: tuple[float, int]) -> tuple[float, int]:
        return self.seconds - mark[0], self.full - mark[1]


def summarize(
    samples: Sequence[float], n: int, gcs: Sequence[tuple[float, int]] | None = None
) -> dict[str, Any]:
    """Median, minimum and per-task cost of ``samples`` (seconds for ``n`` tasks).

    With ``gcs`` (one :meth:`GcTimer.since` per sample) the collector's median time, its
    share of the median and the per-task cost without it are added.
    """
    med = statistics.median(samples)
    out: dict[str, Any] = {
        "median_s": med,
        "min_s": min(samples),
        "us_per_task": med / n * 1e6,
        "samples_s": list(samples),
    }
    if gcs:
        gc_med = statistics.median(g for g, _ in gcs)
        out["gc_median_s"] = gc_med
        out["gc_share"] = gc_med / med if med else None
        out["gc_full_collections_median"] = statistics.median(f for _, f in gcs)
        no_gc = statistics.median(t - g for t, (g, _) in zip(samples, gcs, strict=True))
        out["us_per_task_excluding_gc"] = no_gc / n * 1e6
    return out


# --------------------------------------------------------------------------- ratios


def ratio(a: float | None, b: float | None) -> float | None:
    """``a / b``, or None when either is unknown or ``b`` is zero."""
    if a is None or b is None or b == 0:
        return None
    return a / b


def meets(value: float | None, limit: float, op: str) -> bool | None:
    """Whether ``value op limit`` holds (``op`` is ``"<="``, ``"<"``, ``">="`` or ``">"``);
    None for an unknown value."""
    if value is None:
        return None
    if op == "<=":
        return value <= limit
    if op == "<":
        return value < limit
    if op == ">=":
        return value >= limit
    if op == ">":
        return value > limit
    raise ValueError(f"op must be one of <=, <, >=, >; got {op!r}")


def target(value: float | None, limit: float, op: str, **extra: Any) -> dict[str, Any]:
    """A target as recorded in the JSON: ``{"value", "target", "op", "met", **extra}``."""
    return {"value": value, "target": limit, "op": op, "met": meets(value, limit, op), **extra}


# --------------------------------------------------------------------------- machine


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def source_hash(root: Path = REPO_ROOT) -> str | None:
    """A short hash of every ``nbflow/**/*.py`` file (path and bytes) under ``root``."""
    src = sorted((root / "nbflow").rglob("*.py"))
    if not src:
        return None
    digest = hashlib.sha256()
    for f in src:
        digest.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes())
    return digest.hexdigest()[:16]


def machine_info(nbflow_version: str | None = None) -> dict[str, Any]:
    """What the figures were measured on: CPUs, memory, Python, library versions, the code."""
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "anyio": _version("anyio"),
        "dask": _version("dask"),
        "nbflow": nbflow_version or _version("nbflow"),
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    with contextlib.suppress(AttributeError):
        info["cpu_affinity"] = len(os.sched_getaffinity(0))
    with contextlib.suppress(Exception):
        import psutil

        info["cpu_physical"] = psutil.cpu_count(logical=False)
        info["memory_total_bytes"] = psutil.virtual_memory().total
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    sha = source_hash()
    if sha is not None:
        info["nbflow_source_sha256"] = sha
    with contextlib.suppress(Exception):
        info["git_commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    return info


def on_off_main(*, benchmark: str, doc_string: str, parts: Sequence[str], off_name: str,
                changes: str, workloads: Mapping[str, Callable[[], Any]],
                sample_nbflow: Callable[..., dict[str, float]],
                sample_dask: Callable[[Any, Any], dict[str, float]],
                is_count: Callable[[str], bool], repeat: int) -> None:
    """The ``main()`` of a benchmark that pairs nbflow with some of its changes switched off
    (``--off``: which ``parts``) against itself and plain Dask, sample by sample on one
    ``LocalCluster``: medians, the median of the paired differences (off − on), how often
    nbflow was lower, the makespan ratios to Dask.  ``sample_nbflow(client, spec, off,
    parts)`` and ``sample_dask(client, spec)`` return one sample's phases in seconds (a
    phase ``is_count`` is a count); each must have a ``result in hand``."""
    import argparse
    import math

    ap = argparse.ArgumentParser(description=doc_string.split("\n")[0])
    ap.add_argument("--workloads", default="fan")
    ap.add_argument("--repeat", type=int, default=repeat)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--off", default=",".join(parts),
                    help=f"which of {changes} the off system switches off: {tuple(parts)}")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    off_parts = tuple(args.off.split(","))
    if set(off_parts) - set(parts):
        ap.error(f"unknown --off {sorted(set(off_parts) - set(parts))}; choose from {tuple(parts)}")
    log = progress(benchmark.replace("_", "-"))
    doc: dict[str, Any] = {"benchmark": benchmark, "machine": machine_info(), "off": off_parts,
                           "workloads": {}, "load_before": os.getloadavg()}
    on, off = "nbflow", off_name
    with nbflow_home(), local_cluster() as client:
        for name in args.workloads.split(","):
            spec = workloads[name]()
            samplers = {on: lambda spec=spec: sample_nbflow(client, spec, False),
                        off: lambda spec=spec: sample_nbflow(client, spec, True, off_parts),
                        "dask": lambda spec=spec: sample_dask(client, spec)}
            alternate(samplers, args.warmup)
            got = alternate(samplers, args.repeat)
            keys = list(got[on][0])
            med = {system: {k: statistics.median(s.get(k, math.nan) for s in ss) for k in keys}
                   for system, ss in got.items()}
            pairs = list(zip(got[on], got[off], strict=True))
            paired = {k: statistics.median(b[k] - a[k] for a, b in pairs) for k in keys}
            lower = {k: sum(a[k] < b[k] for a, b in pairs) for k in keys}
            ratio = {s: med[s]["result in hand"] / med["dask"]["result in hand"] for s in (on, off)}
            doc["workloads"][name] = {"medians_s": med, "paired_cut_s": paired,
                                      "this_branch_lower_in": lower, "makespan_vs_dask": ratio,
                                      "samples": got}
            log(f"{name} (ms; the cut: median of paired differences, {off} - {on}):")
            for k in keys:
                unit = 1 if is_count(k) else 1e3
                log(f"  {k:42s} {on} {med[on][k] * unit:8.3f}   off {med[off][k] * unit:8.3f}   "
                    f"dask {med['dask'].get(k, math.nan) * unit:8.3f}   cut {paired[k] * unit:+8.3f} "
                    f"(lower in {lower[k]} of {args.repeat})")
            log(f"  makespan / dask: {on} {ratio[on]:.3f}, off {ratio[off]:.3f}")
    doc["load_after"] = os.getloadavg()
    log(f"load average before {doc['load_before']}, after {doc['load_after']}")
    emit_json(doc, args.json)
