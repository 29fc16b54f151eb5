# The two commands the README leads with; both do their own set-up (see .ci/setup.sh).
#   make example   run the quickstart notebook headless (nbflow run, papermill underneath) into quickstart.out.ipynb
#   make test      run the whole test suite (lint included)
PY := .venv/bin/python

.PHONY: setup example test bench lint
setup: .venv/.installed

.venv/.installed: pyproject.toml .ci/setup.sh
	bash .ci/setup.sh
	touch $@

# nbflow's own batch runner (papermill underneath): progress per cell, the run recorded as a batch
example: setup
	$(PY) -m nbflow.cli run example_notebooks/quickstart.ipynb -o example_notebooks/quickstart.out.ipynb --cwd example_notebooks

lint: setup
	.venv/bin/ruff check nbflow tests benchmarks example_notebooks
	.venv/bin/mypy

test: setup lint
	$(PY) -m pytest

bench: setup
	$(PY) benchmarks/overhead.py --json benchmarks/overhead.json
	$(PY) benchmarks/makespan.py --all --workers 4 --scale auto --repeat 3 --json benchmarks/makespan.json
	$(PY) benchmarks/cache.py --json benchmarks/cache.json
	$(PY) benchmarks/widget.py --json benchmarks/widget.json
	$(PY) benchmarks/dashboard.py --browser --json benchmarks/dashboard.json
