"""Tests of the WfFormat trace loader (nbflow.predict.wfformat)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import networkx as nx
import pytest

from nbflow.predict.wfformat import (
    Trace,
    WfFormatError,
    category_of,
    load_trace,
    parse_trace,
)

# WfFormat traces kept in the repository (tests/data/wfcommons/README.md); NBFLOW_TRACES
# names another directory of traces to test against instead.
TRACES_DIR = Path(os.environ.get("NBFLOW_TRACES", Path(__file__).resolve().parent / "data" / "wfcommons"))
TRACE_FILES = sorted(TRACES_DIR.glob("*.json")) if TRACES_DIR.is_dir() else []
needs_traces = pytest.mark.skipif(not TRACE_FILES, reason=f"no traces in {TRACES_DIR}")


def _doc(
    tasks: list[dict[str, Any]],
    execution: list[dict[str, Any]] | None = None,
    files: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    workflow: dict[str, Any] = {"specification": {"tasks": tasks, "files": files or []}}
    if execution is not None:
        workflow["execution"] = {"tasks": execution, "makespanInSeconds": 9.0}
    return {"name": "synthetic", "schemaVersion": "1.5", "workflow": workflow}


def _spec(
    tid: str, parents: list[str] | None = None, children: list[str] | None = None, **extra: Any
) -> dict[str, Any]:
    t: dict[str, Any] = {"id": tid, "name": tid}
    if parents is not None:
        t["parents"] = parents
    if children is not None:
        t["children"] = children
    t.update(extra)
    return t


# ------------------------------------------------------------------ synthetic documents


def test_category_of() -> None:
    assert category_of("individuals_ID0000001") == "individuals"
    assert category_of("individuals_merge_ID0000011") == "individuals_merge"
    assert category_of("bowtie2-build_ID0000001") == "bowtie2-build"
    assert category_of("cpuhog_chain_00000001") == "cpuhog_chain_00000001"
    assert category_of("_ID7") == "_ID7"
    assert category_of("get_IDs") == "get_IDs"
    assert category_of("a_IDx_ID12") == "a_IDx"


def test_full_entry_fields() -> None:
    doc = _doc(
        [
            _spec("a_ID1", children=["b_ID2"], inputFiles=["in"], outputFiles=["mid"]),
            _spec("b_ID2", parents=["a_ID1"], inputFiles=["mid", "missing"], outputFiles=[]),
        ],
        execution=[
            {
                "id": "a_ID1",
                "runtimeInSeconds": 2.5,
                "avgCPU": 95.0,
                "memoryInBytes": 1000,
                "machines": ["m1"],
                "extraKey": {"x": 1},
            },
            {"id": "b_ID2", "runtimeInSeconds": "1.5", "machines": ["m2", "m3"]},
        ],
        files=[{"id": "in", "sizeInBytes": 10}, {"id": "mid", "sizeInBytes": 7}],
    )
    doc["unknownTopLevel"] = True
    tr = parse_trace(doc, source="mem.json")
    a, b = tr.task("a_ID1"), tr.task("b_ID2")
    assert (a.category, a.runtime_s, a.memory_bytes, a.avg_cpu, a.machines) == ("a", 2.5, 1000, 95.0, ("m1",))
    assert (a.input_bytes, a.output_bytes) == (10, 7)
    assert (b.input_bytes, b.output_bytes) == (7, 0)
    assert b.input_files == ("mid", "missing")
    assert b.runtime_s == 1.5 and b.memory_bytes is None and b.machines == ("m2", "m3")
    assert b.parents == ("a_ID1",) and a.children == ("b_ID2",)
    assert tr.name == "synthetic" and tr.schema_version == "1.5" and tr.makespan_s == 9.0
    assert len(tr) == 2 and "a_ID1" in tr and "zzz" not in tr
    assert tr.categories() == {"a": 1, "b": 1}


@pytest.mark.parametrize("style", ["parents", "children", "both", "mixed"])
def test_edges_from_parents_children_or_both(style: str) -> None:
    # Diamond a -> (b, c) -> d, given in different edge styles.
    edges = [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")]
    tasks = {t: _spec(t) for t in "abcd"}
    for k, (u, v) in enumerate(edges):
        use_parent = style == "parents" or style == "both" or (style == "mixed" and k % 2 == 0)
        use_child = style == "children" or style == "both" or (style == "mixed" and k % 2 == 1)
        if use_parent:
            tasks[v].setdefault("parents", []).append(u)
        if use_child:
            tasks[u].setdefault("children", []).append(v)
    tr = parse_trace(_doc(list(tasks.values())))
    assert set(tr.task("d").parents) == {"b", "c"}
    assert set(tr.task("a").children) == {"b", "c"}
    assert len(tr.task("d").parents) == 2  # no duplicates when both lists are given
    assert set(tr.to_networkx().edges) == set(edges)
    order = tr.topological_order()
    assert order[0] == "a" and order[-1] == "d"


def test_missing_execution_entries_give_zero_runtime() -> None:
    doc = _doc([_spec("x"), _spec("y", parents=["x"])], execution=[{"id": "x", "runtimeInSeconds": 3.0}])
    tr = parse_trace(doc)
    assert tr.task("y").runtime_s == 0.0 and not tr.task("y").has_execution
    assert tr.task("x").has_execution
    # No execution section at all: every task present with runtime 0.
    tr2 = parse_trace(_doc([_spec("x"), _spec("y", parents=["x"])]))
    assert [t.runtime_s for t in tr2.tasks] == [0.0, 0.0]
    assert tr2.makespan_s is None and tr2.critical_path_s() == 0.0


def test_file_objects_of_older_versions() -> None:
    doc = _doc(
        [
            _spec(
                "t",
                inputFiles=[{"id": "f", "sizeInBytes": 5}, {"name": "g"}],
                outputFiles=[{"link": "out", "size": 3}],
            )
        ],
        files=[{"id": "g", "sizeInBytes": 4}],
    )
    t = parse_trace(doc).task("t")
    assert (t.input_bytes, t.output_bytes, t.input_files) == (9, 3, ("f", "g"))


def test_cycle_is_named() -> None:
    doc = _doc(
        [
            _spec("start", children=["p"]),
            _spec("p", children=["q"]),
            _spec("q", children=["r"]),
            _spec("r", children=["p"]),
        ]
    )
    tr = parse_trace(doc, source="cyc.json")
    with pytest.raises(ValueError, match="cycle") as info:
        tr.topological_order()
    msg = str(info.value)
    assert "cyc.json" in msg
    assert all(name in msg for name in ("p", "q", "r")) and "start" not in msg
    with pytest.raises(ValueError, match="cycle"):
        tr.critical_path_s()


def test_self_loop_is_a_cycle() -> None:
    tr = parse_trace(_doc([_spec("s", parents=["s"])]))
    with pytest.raises(WfFormatError, match="s -> s"):
        tr.topological_order()


@pytest.mark.parametrize(
    ("doc", "missing"),
    [
        ({"name": "x"}, "'workflow'"),
        ({"workflow": {}}, "'workflow.specification'"),
        ({"workflow": {"specification": {"files": []}}}, "'workflow.specification.tasks'"),
        (
            {"workflow": {"specification": {"tasks": [{"parents": []}]}}},
            "'workflow.specification.tasks[0].id'",
        ),
    ],
)
def test_not_wfformat_names_missing_key_and_file(tmp_path: Path, doc: dict[str, Any], missing: str) -> None:
    path = tmp_path / "bogus.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(WfFormatError) as info:
        load_trace(path)
    assert missing in str(info.value) and "bogus.json" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_not_json_and_not_object(tmp_path: Path) -> None:
    path = tmp_path / "junk.json"
    path.write_text("{not json")
    with pytest.raises(WfFormatError, match=r"junk\.json"):
        load_trace(path)
    path.write_text("[1, 2]")
    with pytest.raises(WfFormatError, match="not an object"):
        load_trace(path)


def test_unknown_edge_target_and_duplicate_ids() -> None:
    with pytest.raises(WfFormatError, match="unknown task 'ghost'"):
        parse_trace(_doc([_spec("a", children=["ghost"])]), source="f.json")
    with pytest.raises(WfFormatError, match="duplicate task id 'a'"):
        parse_trace(_doc([_spec("a"), _spec("a")]))


def test_invalid_runtime() -> None:
    doc = _doc([_spec("a")], execution=[{"id": "a", "runtimeInSeconds": -1}])
    with pytest.raises(WfFormatError, match="runtimeInSeconds"):
        parse_trace(doc)


def test_bounds_and_indexed_on_small_graph() -> None:
    # a(1) -> b(4) -> d(1); a -> c(2) -> d   critical path a-b-d = 6, work = 8
    doc = _doc(
        [_spec("a"), _spec("b", parents=["a"]), _spec("c", parents=["a"]), _spec("d", parents=["b", "c"])],
        execution=[{"id": k, "runtimeInSeconds": v} for k, v in {"a": 1, "b": 4, "c": 2, "d": 1}.items()],
    )
    tr = parse_trace(doc)
    assert tr.critical_path_s() == 6.0 and tr.total_work_s() == 8.0
    assert tr.lower_bound(1) == 8.0 and tr.lower_bound(2) == 6.0 and tr.lower_bound(100) == 6.0
    with pytest.raises(ValueError):
        tr.lower_bound(0)
    ig = tr.indexed(["a", "c", "b", "d"])
    assert ig.ids == ("a", "c", "b", "d")
    assert ig.succs == ((1, 2), (3,), (3,), ())
    assert ig.durations == (1.0, 2.0, 4.0, 1.0)
    with pytest.raises(ValueError, match="not topological"):
        tr.indexed(["b", "a", "c", "d"])
    with pytest.raises(ValueError, match="exactly once"):
        tr.indexed(["a", "b", "c"])


def test_topological_order_prefers_file_order() -> None:
    tr = parse_trace(_doc([_spec("z"), _spec("y"), _spec("x", parents=["y"]), _spec("w")]))
    assert tr.topological_order() == ["z", "y", "x", "w"]


# ------------------------------------------------------------------------- real traces


@needs_traces
@pytest.mark.parametrize("path", TRACE_FILES, ids=lambda p: p.stem)
def test_shared_trace_loads_consistently(path: Path) -> None:
    raw = json.loads(path.read_text())
    tr = load_trace(path)
    spec = raw["workflow"]["specification"]
    runtimes = {e["id"]: e["runtimeInSeconds"] for e in raw["workflow"]["execution"]["tasks"]}
    sizes = {f["id"]: f["sizeInBytes"] for f in spec["files"]}
    assert isinstance(tr, Trace) and len(tr) == len(spec["tasks"])
    assert str(path) in tr.source

    for entry in spec["tasks"]:
        t = tr.task(entry["id"])
        assert t.runtime_s == runtimes[entry["id"]]
        assert set(t.parents) == set(entry["parents"])
        assert t.input_bytes == sum(sizes.get(f, 0) for f in entry["inputFiles"])
        assert t.output_bytes == sum(sizes.get(f, 0) for f in entry["outputFiles"])

    order = tr.topological_order()
    assert sorted(order) == sorted(t.id for t in tr.tasks)
    pos = {tid: i for i, tid in enumerate(order)}
    assert all(pos[p] < pos[t.id] for t in tr.tasks for p in t.parents)

    g = tr.to_networkx()
    assert nx.is_directed_acyclic_graph(g) and g.number_of_nodes() == len(tr)
    expected_cp = nx.dag_longest_path_length(_node_weighted_to_edge_weighted(g), weight="w", default_weight=0)
    assert tr.critical_path_s() == pytest.approx(expected_cp)
    assert tr.total_work_s() == pytest.approx(sum(runtimes.values()))
    for w in (1, 4, 10_000):
        assert tr.lower_bound(w) >= tr.critical_path_s()
        assert tr.lower_bound(w) >= tr.total_work_s() / w
    assert tr.lower_bound(1) == pytest.approx(tr.total_work_s())

    ig = tr.indexed()
    assert list(ig.ids) == order
    assert all(i < j for i, s in enumerate(ig.succs) for j in s)
    assert all(list(s) == sorted(s) for s in ig.succs)
    assert sum(len(s) for s in ig.succs) == g.number_of_edges()


def _node_weighted_to_edge_weighted(g: nx.DiGraph) -> nx.DiGraph:
    """Split every node into in/out halves so node runtimes become edge weights."""
    h: nx.DiGraph = nx.DiGraph()
    for n, data in g.nodes(data=True):
        h.add_edge(("in", n), ("out", n), w=data["runtime_s"])
    for u, v in g.edges:
        h.add_edge(("out", u), ("in", v), w=0.0)
    return h


@needs_traces
def test_known_trace_shapes() -> None:
    by_stem = {p.stem: p for p in TRACE_FILES}
    if "helloworld-chain-5-chameleon" in by_stem:
        chain = load_trace(by_stem["helloworld-chain-5-chameleon"])
        assert len(chain) == 5
        assert chain.critical_path_s() == pytest.approx(chain.total_work_s())
    if "1000genome-chameleon-2ch-100k-001" in by_stem:
        genome = load_trace(by_stem["1000genome-chameleon-2ch-100k-001"])
        assert genome.categories() == {
            "individuals": 20,
            "individuals_merge": 2,
            "sifting": 2,
            "mutation_overlap": 14,
            "frequency": 14,
        }
