"""What each question of the history read-ahead costs, asked in a loop (prints JSON).

``nbflow.predict.ahead.read_ahead`` asks a graph's history questions on a kept connection
after the previous run's rows are committed.  This asks each of them (and the two ways of
reading the peaks by task: SQLite's window, every row) on the store ``peaks_ahead.py``
builds (``--runs`` runs of a 10-task fan, leaf peaks above the 256 MiB bound), round-robin
``--repeat`` times, and reports the median of each one's thread CPU (``time.thread_time``).
Warm (nothing commits between them): a part's share, not what the read-ahead costs after a
run (cold page cache; ``peaks_ahead.py`` measures that)::

    python benchmarks/read_ahead_parts.py --repeat 300 --json benchmarks/read-ahead-parts.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import _harness
import peaks_ahead

nf = _harness.import_nbflow()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=300)
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--json", dest="json_out", default=None)
    args = p.parse_args(argv)
    os.environ["NBFLOW_HOME"] = tempfile.mkdtemp(prefix="nbflow-ahead-parts-")
    from nbflow.predict import ahead, memory
    from nbflow.store import recent
    from nbflow.store.store import get_store

    load_before = os.getloadavg()
    for _ in range(args.runs):
        peaks_ahead.fan().run(cache=False)
    store = get_store()
    store.journal.flush()
    peaks_ahead.set_peaks(store.journal.path)
    keys = [r.key for r in peaks_ahead.fan().nodes]
    slot = ahead._slot(store.journal)
    assert slot is not None
    through = ahead._Through(slot)
    window = ("fan", "", memory.RECENT_RUNS)
    cols = ("duration_s", "output_bytes")
    parts: dict[str, Callable[[], Any]] = {
        "data_version": lambda: ahead._version(slot),
        "window_runs": lambda: slot.query(recent._RUNS_SQL, ("fan", "", recent.RECENT_RUNS)),
        "means": lambda: recent.read_means(through, cols, "fan", "", recent.RECENT_RUNS, keys),
        "has_history": lambda: recent.has_history("fan", "", store=through),
        "largest_peak": lambda: memory.largest_peak(through, window),
        "peaks_window": lambda: memory.peaks_at_least(through, window, memory.MIN_BYTES),
        "peaks_every_row": lambda: memory.peaks_at_least(through, window, memory.MIN_BYTES, every_row=True),
    }
    spent: dict[str, list[float]] = {k: [] for k in parts}
    for _, order in _harness.rotations(list(parts), args.repeat):
        for name in order:
            c0 = time.thread_time()
            parts[name]()
            spent[name].append((time.thread_time() - c0) * 1e3)
    results = {k: {"median_ms": round(statistics.median(v), 4), "min_ms": round(min(v), 4)}
               for k, v in spent.items()}
    doc = {"benchmark": "read_ahead_parts", "machine": _harness.machine_info(),
           "nbflow_path": os.path.dirname(nf.__file__), "params": vars(args), "results": results,
           "load_before": load_before, "load_after": os.getloadavg()}
    _harness.emit_json(doc, args.json_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
