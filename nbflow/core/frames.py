"""Tables of a run: ``run.tasks`` as a DataFrame and ``run.graph`` as a networkx graph.

Shared by live runs (:mod:`nbflow.engine.run`) and runs loaded from the store
(:mod:`nbflow.store.history`), so both show the same columns.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import networkx as nx
    import pandas as pd

COLUMNS = ["key", "task", "state", "attempts", "start", "end", "duration_s", "cached",
            "output_bytes", "error", "executor", "reason"]


METRIC_COLUMNS = ["cpu_s", "peak_rss", "input_bytes", "input_items", "input_shape"]


def tasks_frame(rows: dict[str, list[Any]]) -> pd.DataFrame:
    """``run.tasks`` from column lists (shared by live runs and runs loaded from the store)."""
    import pandas as pd

    df = pd.DataFrame({c: rows[c] for c in COLUMNS}, columns=COLUMNS)
    for c in ("start", "end"):
        df[c] = pd.to_datetime(df[c], unit="s", utc=True)
    df["output_bytes"] = df["output_bytes"].astype("Int64")
    for c in METRIC_COLUMNS:  # per-attempt metrics (nbflow.engine.metrics), when known
        if c in rows:
            df[c] = pd.Series(rows[c], dtype="object" if c == "input_shape" else "float64"
                              if c == "cpu_s" else "Int64")
    return df


def graph_nodes(rows: dict[str, list[Any]], **attrs: Any) -> nx.DiGraph:
    """A DiGraph with one node per task key carrying the other task columns (edges: caller)."""
    import networkx as nx

    g = nx.DiGraph(**attrs)
    cols = [c for c in COLUMNS if c != "key"]
    for j, key in enumerate(rows["key"]):
        g.add_node(key, **{c: rows[c][j] for c in cols})
    return g
