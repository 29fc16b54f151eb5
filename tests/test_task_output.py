"""What a task prints is kept with the task (run.logs, the journal) and still reaches the
cell, each line prefixed by the task key."""

from __future__ import annotations

import pytest

import nbflow as nf
from nbflow.engine import taskoutput


@nf.task
def chatty(n: int) -> int:
    for i in range(n):
        print(f"step {i}")
    return n


@nf.task
async def chatty_async(word: str) -> str:
    print("async says", word)
    return word


@nf.task
def silent(x: int) -> int:
    return x


@nf.task
def flood() -> int:
    print("x" * (taskoutput.LIMIT + 100))
    return 1


@nf.task
def fails() -> None:
    print("about to fail")
    raise ValueError("nope")


def test_each_task_keeps_what_it_printed_and_the_cell_sees_it_prefixed(capsys) -> None:
    with nf.Workflow("prints") as wf:
        a = chatty(2)
        b = chatty(3)
        c = chatty_async("hi")
        d = silent(1)
    run = wf.run(cache=False)
    assert run.logs(a) == "step 0\nstep 1\n"
    assert run.logs(b) == "step 0\nstep 1\nstep 2\n"
    assert run.logs(c) == "async says hi\n"
    assert run.logs(d) is None
    out = capsys.readouterr().out
    assert "[chatty-1] step 2\n" in out and "[chatty_async-0] async says hi\n" in out
    stored = nf.load_run(run.id)
    assert stored.logs("chatty-1") == "step 0\nstep 1\nstep 2\n" and stored.logs("silent-0") is None


def test_output_is_bounded_and_says_so() -> None:
    with nf.Workflow("flood") as wf:
        r = flood()
    run = wf.run(cache=False)
    text = run.logs(r)
    assert len(text) < taskoutput.LIMIT + 200 and text.endswith("truncated after 65536 characters]")


def test_a_failed_task_keeps_its_output() -> None:
    with nf.Workflow("failing-output") as wf:
        r = fails()
    run = wf.run(cache=False, raise_on_error=False)
    assert run.logs(r) == "about to fail\n"
    assert nf.load_run(run.id).logs("fails-0") == "about to fail\n"


# -- the buffer is made on the first write -------------------------------------------------


def test_only_tasks_that_write_get_a_buffer(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[str] = []

    class Counting(taskoutput.Capture):
        __slots__ = ()

        def __init__(self, key: str) -> None:
            made.append(key)
            super().__init__(key)

    monkeypatch.setattr(taskoutput, "Capture", Counting)

    @nf.task
    def quiet(i: int) -> int:
        return i

    @nf.task
    async def aquiet(i: int) -> int:
        return i

    @nf.task
    def chatty(xs: list[int]) -> int:
        print("sum is", sum(xs))
        print("twice")
        return sum(xs)

    with nf.Workflow("lazy") as wf:
        total = chatty([quiet(i) for i in range(4)] + [aquiet(i) for i in range(4)])
    run = wf.run(cache=False)
    assert made == [total.key]  # one buffer, for the one task that printed (twice)
    assert run.logs(total) == "sum is 12\ntwice\n"
    assert run.logs("quiet-0") is None and run.logs("aquiet-0") is None


def test_a_retry_that_prints_nothing_leaves_no_output_of_the_failed_attempt() -> None:
    calls = []

    @nf.task(retries=1, retry_delay=0)
    def flaky() -> int:
        calls.append(1)
        if len(calls) == 1:
            print("first attempt failing")
            raise ValueError("once")
        return 1

    with nf.Workflow("retry-output") as wf:
        r = flaky()
    run = wf.run(cache=False)
    assert len(calls) == 2
    assert run.logs(r) is None  # the latest attempt printed nothing
