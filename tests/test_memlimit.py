"""The default ``memory`` capacity is ``min(physical RAM, cgroup memory limit)``.

Fake cgroup trees (v2: ``memory.max``; v1: ``memory/memory.limit_in_bytes``) and fake
``/proc/self/cgroup`` files stand in for a container's; ``NBFLOW_CGROUP_ROOT`` points a run
at one.  A limit below RAM becomes the run's capacity, so a task that needs more than the
container may use is refused before the run instead of being admitted and killed; no limit
(``max``, v1's huge "unlimited" number, no files) leaves physical RAM; ``resources=``
still overrides.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import nbflow as nf
from nbflow.check.checks import default_capacity
from nbflow.core import memlimit
from nbflow.core.memlimit import cgroup_memory_limit, memory_capacity, physical_memory

GIB = 2**30
V1_UNLIMITED = "9223372036854771712"


def v2(tmp_path: Path, limits: dict[str, str], own: str = "/") -> tuple[Path, Path]:
    root = tmp_path / "cg2"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpu memory pids\n")
    for rel, value in limits.items():
        d = root / rel.strip("/") if rel.strip("/") else root
        d.mkdir(parents=True, exist_ok=True)
        (d / "memory.max").write_text(value + "\n")
    proc = tmp_path / "proc-cgroup"
    proc.write_text(f"0::{own}\n")
    return root, proc


def v1(tmp_path: Path, limits: dict[str, str], own: str = "/") -> tuple[Path, Path]:
    root = tmp_path / "cg1"
    for rel, value in limits.items():
        d = root / "memory" / rel.strip("/")
        d.mkdir(parents=True, exist_ok=True)
        (d / "memory.limit_in_bytes").write_text(value + "\n")
    proc = tmp_path / "proc-cgroup"
    proc.write_text(f"5:cpu,cpuacct:/x\n4:memory:{own}\n1:name=systemd:/\n")
    return root, proc


def test_cgroup_v2_limit_of_the_process_and_its_ancestors(tmp_path: Path) -> None:
    root, proc = v2(tmp_path, {"/": "max", "/job": str(GIB // 2), "/job/step": "max"}, own="/job/step")
    assert cgroup_memory_limit(root, proc) == GIB // 2  # the parent's limit binds its child
    assert memory_capacity(root, proc) == min(physical_memory(), GIB // 2)


def test_cgroup_v2_without_a_limit_leaves_physical_ram(tmp_path: Path) -> None:
    root, proc = v2(tmp_path, {"/": "max"})
    assert cgroup_memory_limit(root, proc) is None
    assert memory_capacity(root, proc) == physical_memory()


def test_cgroup_v1_limit_and_its_unlimited_value(tmp_path: Path) -> None:
    root, proc = v1(tmp_path, {"/": V1_UNLIMITED, "/docker/abc": str(3 * GIB)}, own="/docker/abc")
    assert cgroup_memory_limit(root, proc) == 3 * GIB
    assert memory_capacity(root, proc) == min(physical_memory(), 3 * GIB)
    root2, proc2 = v1(tmp_path / "unlimited", {"/": V1_UNLIMITED})
    assert memory_capacity(root2, proc2) == physical_memory()  # "no limit" is above any RAM


def test_a_limit_above_ram_changes_nothing_and_garbage_is_no_limit(tmp_path: Path) -> None:
    root, proc = v2(tmp_path, {"/": str(int(physical_memory()) * 4)})
    assert memory_capacity(root, proc) == physical_memory()
    (root / "memory.max").write_text("lots\n")
    assert cgroup_memory_limit(root, proc) is None
    assert cgroup_memory_limit(tmp_path / "no-such-dir", tmp_path / "no-such-file") is None


@nf.task(resources={"memory": "1GiB"})
def big(x):
    return x


def test_a_run_admits_against_the_cgroup_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, _ = v2(tmp_path, {"/": str(GIB // 2)})  # this process's own cgroup is "/" in the fake root
    monkeypatch.setenv("NBFLOW_CGROUP_ROOT", str(root))
    assert nf.RunOptions().capacity["memory"] == min(physical_memory(), GIB // 2)
    assert default_capacity()["memory"] == min(physical_memory(), GIB // 2)  # nf.check's default
    with nf.Workflow("contained") as wf:
        big(1)
    with pytest.raises(nf.WorkflowDefinitionError, match="memory"):  # 1 GiB can never fit in 0.5
        wf.run()
    # an explicit capacity still wins over the default
    assert nf.RunOptions(resources={"memory": "2GiB"}).capacity["memory"] == 2 * GIB
    assert wf.run(resources={"memory": "2GiB"})[wf.nodes[0]] == 1
    monkeypatch.setenv("NBFLOW_CGROUP_ROOT", str(tmp_path / "nothing-here"))
    assert nf.RunOptions().capacity["memory"] == physical_memory()


def test_runs_read_the_cgroup_files_once_per_process_until_the_recheck(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, _ = v2(tmp_path, {"/": str(GIB // 2)})
    monkeypatch.setenv("NBFLOW_CGROUP_ROOT", str(root))
    reads: list[Path] = []
    real = memlimit._read_limit

    def counted(path: Path) -> float | None:
        reads.append(path)
        return real(path)

    monkeypatch.setattr(memlimit, "_read_limit", counted)
    now = [1000.0]
    monkeypatch.setattr(memlimit, "_clock", lambda: now[0])
    memlimit.forget()
    assert nf.RunOptions().capacity["memory"] == min(physical_memory(), GIB // 2)
    assert len(reads) == 1
    (root / "memory.max").write_text(str(GIB // 4) + "\n")  # (an admin lowers the limit)
    for _ in range(3):
        assert nf.RunOptions().capacity["memory"] == min(physical_memory(), GIB // 2)
    assert len(reads) == 1  # the next runs take the answer kept
    now[0] += memlimit.RECHECK_S
    assert nf.RunOptions().capacity["memory"] == min(physical_memory(), GIB // 4)  # seen after it
    assert len(reads) == 2
    (tmp_path / "other").mkdir()
    other, _ = v2(tmp_path / "other", {"/": str(GIB // 8)})
    monkeypatch.setenv("NBFLOW_CGROUP_ROOT", str(other))  # another root is read at once
    assert nf.RunOptions().capacity["memory"] == min(physical_memory(), GIB // 8)
    assert len(reads) == 3
    # a reader given its paths always reads
    assert memory_capacity(root, tmp_path / "proc-cgroup") == min(physical_memory(), GIB // 4)
    assert len(reads) == 4
