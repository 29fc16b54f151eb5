"""Writes the test notebooks of this folder (run it after changing a cell: python build.py).

Each notebook asserts what it tests in its own cells, so a notebook that fails to run
is a failing test; tests/test_notebook_kernel.py runs them and checks their outputs too.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

HERE = Path(__file__).resolve().parent

NOTEBOOKS: dict[str, list[str]] = {
    # Names bound to Refs get values; tasks redefined in a later cell are used by the next run.
    "binding.ipynb": [
        "import nbflow as nf",
        """@nf.task
def load(n):
    return list(range(n))

@nf.task
def scale(xs, k):
    return [k * x for x in xs]

@nf.task
def total(xs):
    return sum(xs)

@nf.task
def inc(x):
    return x + 1""",
        """%%workflow first --workers 2
data = load(5)
doubled = scale(data, 2)
parts = [total(data), total(doubled)]
summary = {"n": total(data), "label": "plain values stay as they are"}
untouched = 42""",
        """assert data == [0, 1, 2, 3, 4], data
assert doubled == [0, 2, 4, 6, 8], doubled
assert parts == [10, 20], parts
assert summary == {"n": 10, "label": "plain values stay as they are"}, summary
run = nf.last_run()
assert run.name == "first" and run.status == "completed" and run.workers == 2
print("binding ok", run.id)""",
        # Redefine a task in another cell: the next run uses the new definition.
        """@nf.task
def scale(xs, k):
    return [k * x + 1 for x in xs]""",
        """%%workflow second
doubled = scale(load(3), 2)""",
        """assert doubled == [1, 3, 5], doubled
assert data == [0, 1, 2, 3, 4]  # names this cell did not bind are left alone
print("redefinition ok")""",
        # A map over a Ref (grows at run time) and a map over a list.
        """%%workflow maps
squares = scale.map([[1], [2], [3]], k=10)
grown = inc.map(load(4))""",
        """assert squares == [[11], [21], [31]], squares
assert grown == [1, 2, 3, 4], grown
print("maps ok")""",
        # --plan runs nothing and leaves the namespace as it was.
        """%%workflow planned --plan
data = load(100)
fresh_name = total(data)""",
        """assert data == [0, 1, 2, 3, 4], "--plan must not rebind names"
assert "fresh_name" not in globals()
assert nf.last_run().name == "maps", "--plan must not start a run"
print("plan ok")""",
        """runs = %nbflow runs
assert list(runs["name"][:3]) == ["maps", "second", "first"], runs
assert set(runs["status"][:3]) == {"completed"}
runs""",
    ],
    # Headless text progress for a bigger run, and its summary.
    "headless.ipynb": [
        "import nbflow as nf",
        """@nf.task
def item(i):
    return i * i

@nf.task
def add(xs):
    return sum(xs)""",
        """%%workflow many
squares = item.map(list(range(600)))
result = add(squares)""",
        """assert result == sum(i * i for i in range(600))
print("headless ok")""",
    ],
    # A failing task fails the cell with its own traceback; independent work still finishes.
    "failure.ipynb": [
        "import nbflow as nf",
        """@nf.task
def parse(row):
    if row == 3:
        raise ValueError(f"bad row {row}: cannot parse")
    return row

@nf.task
def total(xs):
    return sum(xs)""",
        """%%workflow broken
rows = parse.map([1, 2, 3, 4])
fine = total([1, 2])
result = total(rows)""",
        """run = nf.last_run()
assert run.status == "failed"
assert fine == 3  # the independent branch completed and its name was bound
assert type(result).__name__ == "Ref"  # the skipped task's name keeps its Ref
states = dict(zip(run.tasks["key"], run.tasks["state"], strict=True))
assert states["parse-2"] == "failed" and states["total-1"] == "skipped", states
print("failure ok")""",
    ],
    # A background run with the live widget, stopped with its Stop button.
    "background.ipynb": [
        "%env NBFLOW_HEADLESS=0",
        """import time

import nbflow as nf
from nbflow.notebook import live""",
        """@nf.task
def slow(i):
    time.sleep(0.1)
    return i""",
        """%%workflow long --background --workers 2
out = slow.map(list(range(200)))""",
        """run = nf.last_run()
assert run.status == "running", run.status
view = live.view_of(run)
assert view is not None and view.mode == "widget"
time.sleep(0.5)
# What a click in the browser sends to the kernel: the button's custom "click" message.
view.widget.stop_button._handle_custom_msg({"event": "click"}, [])
run.wait(raise_on_error=False)
print("status:", run.status, run.counts)
assert run.status == "cancelled", run.status
assert 0 < run.counts.get("completed", 0) < 200
assert run.counts.get("cancelled", 0) > 0
assert type(out).__name__ == "Ref"  # the map did not finish, so `out` has no value
assert view.widget.stop_button.disabled""",
        """import threading


def left():
    return [t.name for t in threading.enumerate() if t.name.startswith(("nbflow-run", "nbflow-task"))]
deadline = time.monotonic() + 10  # idle pool threads exit just after the run ends
while left() and time.monotonic() < deadline:
    time.sleep(0.05)
assert not left(), left()
print("background ok")""",
    ],
}


def main() -> None:
    for name, cells in NOTEBOOKS.items():
        nb = new_notebook(cells=[new_code_cell(c) for c in cells], metadata={
            "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
            "language_info": {"name": "python"}})
        nbformat.write(nb, HERE / name)


if __name__ == "__main__":
    main()
