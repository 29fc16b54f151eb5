"""Kinds of node in a traced graph.

A ``task`` node calls a function.  A ``collect`` node has no function: its value is the list
of its inputs' values (the fan-in behind ``task.map``).  A ``map`` node expands at run time
into one task per item of its input's value, then collects them.  The control-flow
constructs add: ``gate`` (one side of a branch: completes or is skipped on its condition),
``const`` (a plain value inside a branch side), ``first`` and ``gather`` (tolerant joins:
they wait for every input to end, whatever the outcome), ``loop`` (grows one iteration at a
time), ``undo`` (a compensation, also tolerant) and ``approval`` (waits for a person).
"""

from __future__ import annotations

TASK, COLLECT, MAP = "task", "collect", "map"
GATE, CONST, FIRST, GATHER, LOOP, UNDO, APPROVAL = (
    "gate", "const", "first", "gather", "loop", "undo", "approval")
TOLERANT = frozenset({FIRST, GATHER, UNDO})  # wait for every input to end, whatever the outcome
INLINE = frozenset({COLLECT, GATE, CONST, FIRST, GATHER, LOOP})  # resolved by the scheduler itself
CACHEABLE = frozenset({TASK, UNDO})  # kinds whose node calls a user function
