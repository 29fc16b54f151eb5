"""What a task prints is kept with the task (run.logs, the journal) and still reaches the
cell, each line prefixed by the task key."""

from __future__ import annotations

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
