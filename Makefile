# The two commands the README leads with; both do their own set-up (see .ci/setup.sh).
#   make example   run the example workflow end to end
#   make test      run the whole test suite (lint included)
PY := .venv/bin/python

.PHONY: setup example test bench lint
setup: .venv/.installed

.venv/.installed: pyproject.toml .ci/setup.sh
	bash .ci/setup.sh
	touch $@

example: setup
	$(PY) example_notebooks/quickstart.py

lint: setup
	.venv/bin/ruff check nbflow tests benchmarks example_notebooks

test: setup lint
	$(PY) -m pytest

bench: setup
	$(PY) benchmarks/overhead.py --json benchmarks/overhead.json
	$(PY) benchmarks/makespan.py --all --workers 4 --scale auto --repeat 3 --json benchmarks/makespan.json
	$(PY) benchmarks/cache.py --json benchmarks/cache.json
