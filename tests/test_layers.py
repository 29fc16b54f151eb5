"""The rooms of nbflow import in one direction only.

Every module of the package is parsed (not imported) and every ``import`` in it is
collected, including imports made inside functions and under ``if TYPE_CHECKING:``.  Each
import between rooms must go from a higher layer to a lower one (or stay in its room); and
the graph of rooms must have no cycle.  The room graph is printed so a failing run shows
the whole picture.  The layers are described in ``docs/architecture.md``.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import networkx as nx

PACKAGE = Path(__file__).resolve().parents[1] / "nbflow"

# room -> layer.  A module may import its own room and rooms of strictly lower layers.
LAYERS: dict[str, int] = {
    "core": 0,
    "engine": 1,
    "check": 1,
    "store": 1,
    "predict": 2,
    "locality": 2,
    "params": 2,
    "workflow": 3,
    "notebook": 4,
    "batch": 5,
    "cli": 6,
    "server": 6,
    "__init__": 7,  # the package's public face re-exports every room
}
# Rooms of one layer that may use each other.
# The composition point hands each run its locality agent (placement, transfer accounting).
ALLOWED_SIDEWAYS: set[tuple[str, str]] = {("workflow", "locality")}


def room_of(module: str) -> str:
    """``nbflow.engine.run`` -> ``engine``; ``nbflow`` -> ``__init__``."""
    parts = module.split(".")
    if len(parts) == 1:
        return "__init__"
    return parts[1]


def module_name(path: Path, root: Path = PACKAGE) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, root: Path = PACKAGE) -> list[tuple[str, int]]:
    """Absolute names of the nbflow modules imported by the file at ``path``, with lines."""
    name = module_name(path, root)
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names if a.name.split(".")[0] == "nbflow"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "nbflow":
                continue
            if target == "nbflow" or (node.module is None and node.level):
                # "from . import x" / "from nbflow import x": each name may be a module
                out += [(f"{target}.{a.name}", node.lineno) for a in node.names]
            else:
                out.append((target, node.lineno))
    return out


def room_graph(root: Path = PACKAGE) -> tuple[nx.DiGraph, list[str]]:
    g = nx.DiGraph()
    bad = []
    uses: dict[tuple[str, str], list[str]] = defaultdict(list)
    for path in sorted(root.rglob("*.py")):
        src = room_of(module_name(path, root))
        g.add_node(src)
        for target, line in imports_of(path, root):
            dst = room_of(target)
            if dst == src:
                continue
            where = f"{path.relative_to(root.parent)}:{line} imports {target}"
            uses[(src, dst)].append(where)
            if src not in LAYERS or dst not in LAYERS:
                bad.append(f"{where}: room {src if src not in LAYERS else dst!r} has no layer; add it")
            elif LAYERS[dst] > LAYERS[src] or (
                LAYERS[dst] == LAYERS[src] and (src, dst) not in ALLOWED_SIDEWAYS
            ):
                bad.append(f"{where}: layer {LAYERS[src]} ({src}) may not import layer "
                           f"{LAYERS[dst]} ({dst})")
    for (src, dst), sites in uses.items():
        g.add_edge(src, dst, sites=sites)
    return g, bad


def test_rooms_import_downwards_only() -> None:
    g, bad = room_graph()
    print("room graph (importer -> imported):")
    for src in sorted(g, key=lambda r: (LAYERS.get(r, 99), r)):
        print(f"  {src:9} (layer {LAYERS.get(src, '?')}) -> {', '.join(sorted(g.successors(src))) or '-'}")
    assert not bad, "imports against the layers:\n" + "\n".join(bad)


def test_no_cycle_between_rooms() -> None:
    g, _ = room_graph()
    cycles = list(nx.simple_cycles(g))
    assert not cycles, f"rooms import each other in a cycle: {cycles}"


def test_the_engine_imports_only_core() -> None:
    g, _ = room_graph()
    assert set(g.successors("engine")) <= {"core"}, sorted(g.successors("engine"))
    assert set(g.successors("core")) == set()


def test_the_checker_catches_imports_inside_functions_and_cycles(tmp_path: Path) -> None:
    # A reviewer counts imports in function bodies and TYPE_CHECKING blocks; so must the test.
    root = tmp_path / "nbflow"
    for room in ("core", "engine", "store"):
        (root / room).mkdir(parents=True)
        (root / room / "__init__.py").write_text("")
    (root / "__init__.py").write_text("")
    (root / "engine" / "run.py").write_text(
        "from ..core import errors\n\ndef f():\n    from ..store import cache\n")
    (root / "store" / "cache.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from nbflow.engine import run\n")
    g, bad = room_graph(root)
    assert any("engine/run.py:4 imports nbflow.store" in b for b in bad), bad
    assert any("store/cache.py:3 imports nbflow.engine" in b for b in bad), bad
    assert list(nx.simple_cycles(g)) != []
