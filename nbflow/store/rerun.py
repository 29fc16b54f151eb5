"""``rerun=``: which tasks a run must execute even though the cache has their results.

A forced task forces everything downstream of it.  Items may be Refs, task keys, task
names or tasks; a name that is not in the workflow is refused before the run starts.
"""

from __future__ import annotations

from typing import Any

from ..core.errors import WorkflowDefinitionError
from ..core.graphs import topological_order
from ..core.ref import Ref, is_task


class Rerun:
    """The tasks forced by ``rerun=`` in one run, and why each one is."""

    def __init__(self, items: Any, nodes: Any, graph: Any, workflow: str) -> None:
        self.graph = graph
        self.workflow = workflow
        self._n0 = len(nodes)
        self._forced: list[bool] = []
        self._forced_by: list[str | None] = []
        self._forced_names: set[str] = set()
        if items:
            self._resolve_rerun(items, nodes)

    @property
    def active(self) -> bool:
        return bool(self._forced or self._forced_names)

    def _resolve_rerun(self, items: Any, nodes: Any) -> None:
        if isinstance(items, (str, Ref)) or is_task(items):
            items = [items]
        roots: dict[int, str] = {}
        names: set[str] = set()
        task_names = {r.task.spec.name for r in nodes if r.task is not None}
        keys = {r.key: r.index for r in nodes}
        for it in items:
            if type(it) is Ref:
                if it.wf is not self.graph:
                    raise WorkflowDefinitionError(f"rerun: {it.key} belongs to another workflow")
                roots[it.index] = it.key
            elif is_task(it):
                if it.spec.name not in task_names:
                    raise WorkflowDefinitionError(
                        f"rerun: task {it.spec.name!r} is not in workflow {self.workflow!r}")
                names.add(it.spec.name)
            elif isinstance(it, str):
                if it in keys:
                    roots[keys[it]] = it
                elif it in task_names:
                    names.add(it)
                else:
                    raise WorkflowDefinitionError(
                        f"rerun: no task or task key {it!r} in workflow {self.workflow!r} "
                        f"(tasks: {sorted(task_names)[:20]})"
                    )
            else:
                raise TypeError(f"rerun takes tasks, task names, task keys or Refs, not {type(it).__name__}")
        self._forced_names = names
        n = self._n0
        forced = [False] * n
        by: list[str | None] = [None] * n
        for i in topological_order(nodes, lowest_first=False) or range(n):
            r = nodes[i]
            if i in roots:
                by[i] = roots[i]
            elif r.task is not None and r.task.spec.name in names:
                by[i] = r.task.spec.name
            else:
                for d in r.deps:
                    if forced[d]:
                        by[i] = f"{nodes[d].key} (upstream)" if by[d] and "upstream" not in by[d] else by[d]
                        break
            forced[i] = by[i] is not None
        self._forced, self._forced_by = forced, by

    def reason(self, i: int, nodes: Any, succs: Any) -> str | None:
        """Why node ``i`` is forced (None: it is not).  Nodes added while running (map items)
        are forced when their task name or their map is."""
        if not self._forced and not self._forced_names:
            return None
        if i < self._n0:
            return self._forced_by[i]
        ref = nodes[i]
        if ref.task is not None and ref.task.spec.name in self._forced_names:
            return ref.task.spec.name
        for s in succs[i]:  # an expanded map item: its map
            if s < self._n0 and self._forced[s]:
                return self._forced_by[s]
        return None
