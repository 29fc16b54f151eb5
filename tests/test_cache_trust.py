"""What the cache assumes, made safe: unseeded randomness and clocks are not cached by
default, and a run reads its tasks' globals once, when it starts."""

from __future__ import annotations

import time

import numpy as np

import nbflow as nf
from nbflow.store import hashing

HISTORY: list[int] = []
SETTINGS = {"scale": 1}


@nf.task
def noisy(n: int) -> list[float]:
    return list(np.random.rand(n))


@nf.task
def stamp() -> float:
    return time.time()


@nf.task(cache=True)
def noisy_on_purpose(n: int) -> list[float]:
    return list(np.random.rand(n))


@nf.task
def seeded(n: int, seed: int) -> list[float]:
    return list(np.random.default_rng(seed).random(n))


@nf.task
def fixed_rng(n: int) -> list[float]:
    return list(np.random.default_rng(42).random(n))


def test_unseeded_random_and_clock_tasks_run_every_time() -> None:
    with nf.Workflow("noisy") as wf:
        a = noisy(3)
        t = stamp()
    first = wf.run()
    second = wf.run()
    assert first[a] != second[a] and first[t] != second[t]
    rows = second.tasks.set_index("key")
    assert not rows.loc["noisy-0", "cached"] and not rows.loc["stamp-0", "cached"]
    assert "np.random.rand without a seed" in rows.loc["noisy-0", "reason"]
    assert "time.time" in rows.loc["stamp-0", "reason"]
    assert "cache=True" in str(second.explain(a))


def test_cache_true_caches_nondeterministic_code_knowingly() -> None:
    with nf.Workflow("knowingly") as wf:
        a = noisy_on_purpose(3)
    first, second = wf.run(), wf.run()
    assert first[a] == second[a]
    assert bool(second.tasks.set_index("key").loc["noisy_on_purpose-0", "cached"])


def test_a_seed_argument_or_a_seeded_generator_counts_as_deterministic() -> None:
    with nf.Workflow("seeded") as wf:
        a = seeded(3, seed=7)
        b = fixed_rng(3)
    wf.run()
    again = wf.run()
    assert bool(again.tasks["cached"].all())
    assert nf.check(wf).by_code("nondeterministic") == []
    assert again[a] == list(np.random.default_rng(7).random(3)) and len(again[b]) == 3


def test_check_names_the_nondeterministic_call() -> None:
    with nf.Workflow("check-nd") as wf:
        noisy(2)
        noisy_on_purpose(2)
    found = {f.tasks[0]: f for f in nf.check(wf).by_code("nondeterministic")}
    assert set(found) == {"noisy-0", "noisy_on_purpose-0"}
    assert found["noisy-0"].severity == "info"
    assert "np.random.rand" in found["noisy-0"].message and "not cached" in found["noisy-0"].message
    assert "cached because it says cache=True" in found["noisy_on_purpose-0"].message


@nf.task
def remember(x: int) -> int:
    HISTORY.append(x)
    return len(HISTORY)


@nf.task
def tweak(x: int) -> int:
    SETTINGS["scale"] = SETTINGS["scale"] + 1
    return x


@nf.task
def scaled(x: int) -> int:
    return x * SETTINGS["scale"]


def test_a_task_that_mutates_a_global_gets_a_warning() -> None:
    with nf.Workflow("mutates") as wf:
        remember(1)
        tweak(2)
        scaled(3)
    found = nf.check(wf).by_code("mutates-global")
    assert [(f.tasks, f.severity) for f in found] == [(("remember-0",), "warning"), (("tweak-0",), "warning")]
    assert "HISTORY" in found[0].message and "SETTINGS" in found[1].message


def test_globals_are_read_once_when_the_run_starts() -> None:
    SETTINGS["scale"] = 1
    before = hashing.value_hash(SETTINGS)
    with nf.Workflow("snapshot") as wf:
        t = tweak(2)
        s = scaled(t)  # runs after tweak changed SETTINGS
    run = wf.run()
    assert run[s] == 4  # the task itself saw the changed value, as Python does
    parts = run.result_cache.nodes[s.index].code.parts
    assert parts["global SETTINGS"] == before  # keyed on the value at the start of the run
