# The two commands a newcomer needs: `make lab` and `make test`. Everything else is optional.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# Extra flags for pytest, e.g. `make test PYTEST_ARGS=-x`.
PYTEST_ARGS ?=
# JupyterLab refuses to run as root unless told; CI machines and containers often are root.
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root,)

.PHONY: setup assets test test-lib test-notebooks lint lab exercises bench clean

setup: $(STAMP)

# The stamp depends on the pins: editing pyproject.toml or the lock reinstalls, otherwise nothing.
$(STAMP): pyproject.toml requirements.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade "pip==26.3"
	$(PY) -m pip install --quiet --disable-pip-version-check -c requirements.lock -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (llmcourse)" >/dev/null
	@touch $(STAMP)

assets: setup
	$(PY) -m llmcourse.assets fetch

lint: setup
	$(PY) -m ruff check lib tests notebooks benchmarks

test-lib: assets
	$(PY) -m pytest tests $(PYTEST_ARGS)

test-notebooks: assets
	$(PY) -m pytest --nbval --nbval-current-env -p no:randomly notebooks $(PYTEST_ARGS)

test: lint test-lib test-notebooks

lab: assets
	$(VENV)/bin/jupyter lab --ip=127.0.0.1 --no-browser $(ALLOW_ROOT) --notebook-dir=notebooks

exercises: setup
	$(PY) -m llmcourse.exercises notebooks exercises

bench: assets
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) data/cache exercises
