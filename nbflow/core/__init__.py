"""The shared vocabulary every room of nbflow speaks (layer 0: imports nothing of nbflow).

* :mod:`.kinds` — kinds of node; :mod:`.ref` — ``nf.Ref``;
* :mod:`.states` — task states and the transition table;
* :mod:`.events` — typed events (each declares the state it means) and ``nf.on_run``;
* :mod:`.errors` — every exception and warning, hierarchy in its docstring;
* :mod:`.graphs` — the topological sort and cycle finding;
* :mod:`.options` — :class:`RunOptions`, validated once;
* :mod:`.protocols` — what the engine calls on other rooms (a result cache, subscribers);
* :mod:`.units`, :mod:`.sizes`, :mod:`.frames`, :mod:`.explain` — small shared helpers.

See ``docs/architecture.md`` for how the rooms fit together.
"""
