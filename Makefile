# The two commands a newcomer needs: `make lab` and `make test`. Everything else is optional.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
STAMP := $(VENV)/.installed-stamp
# Extra flags for pytest, e.g. `make test PYTEST_ARGS=-x`.
PYTEST_ARGS ?=
# JupyterLab refuses to run as root unless told; CI machines and containers often are root.
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root,)
# The Pythons the course supports (pyproject.toml's requires-python says the same).
SUPPORTED_PYTHONS := 3.11 3.12 3.13
# On Linux, PyPI's torch wheel is the multi-GB CUDA build; PyTorch's own CPU index has the
# ~200 MB CPU build of the same version. macOS and Windows wheels on PyPI are already CPU builds.
TORCH_CPU_INDEX := https://download.pytorch.org/whl/cpu
OS := $(shell uname -s)
# JupyterLab settings for the course's environment: no "get notified about Jupyter news?" pop-up,
# the first thing a newcomer would otherwise see after `make lab`.
LAB_SETTINGS := $(VENV)/share/jupyter/lab/settings/overrides.json
# The committed notebook outputs are made with the model hub off (the course checkpoint stands in
# for GPT-2): `make test` runs with it off whatever the network, so it gives one answer.
HUB_OFF := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1

# $(call check_python,INTERPRETER): stop at once, in one line, unless it is a supported Python.
define check_python
@v=$$($(1) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) || { \
  echo "make: no Python at '$(1)'. The course needs Python $(SUPPORTED_PYTHONS); point make at one, e.g. 'make test PYTHON=python3.12'." >&2; exit 1; }; \
case " $(SUPPORTED_PYTHONS) " in *" $$v "*) ;; *) \
  echo "make: '$(1)' is Python $$v; the course supports Python $(SUPPORTED_PYTHONS): point make at one, e.g. 'make test PYTHON=python3.12' (then 'make clean' if .venv was made with $$v)." >&2; exit 1;; esac
endef

.PHONY: setup assets test test-lib test-notebooks test-online lint lab exercises bench \
	check-install book test-book clean

setup: $(STAMP) $(LAB_SETTINGS)

# The stamp depends on the pins: editing pyproject.toml or the lock reinstalls, otherwise nothing.
$(STAMP): pyproject.toml requirements.lock
	$(if $(wildcard $(PY)),,$(call check_python,$(PYTHON)))
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(call check_python,$(PY))
	$(PIP) install --quiet "pip==26.3"
ifeq ($(OS),Linux)
	@# Ask PyTorch's CPU index for torch only if it answers within seconds: an unreachable extra
	@# index would otherwise cost pip's retries on every package. Without it, torch comes from the
	@# other sources (a local wheel folder where pip is set up with one, else PyPI's build).
	@if $(PY) -c 'import urllib.request as u; u.urlopen("$(TORCH_CPU_INDEX)/torch/", timeout=5)' 2>/dev/null; then \
	  echo "torch: the CPU build from $(TORCH_CPU_INDEX)"; \
	  $(PIP) install --quiet -c requirements.lock --extra-index-url $(TORCH_CPU_INDEX) torch; \
	else \
	  echo "torch: $(TORCH_CPU_INDEX) cannot be reached; installing torch from pip's other sources"; \
	fi
endif
	$(PIP) install --quiet -c requirements.lock -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (llmcourse)" >/dev/null
	@touch $(STAMP)

$(LAB_SETTINGS): $(STAMP)
	@mkdir -p $(dir $@)
	@printf '%s\n' '{"@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": false}}' > $@

assets: setup
	$(PY) -m llmcourse.core.assets fetch

lint: setup
	$(PY) -m ruff check lib tests notebooks benchmarks book
	$(VENV)/bin/lint-imports --no-logo --no-cache pyproject.toml

test-lib: assets
	$(HUB_OFF) $(PY) -m pytest tests lib $(PYTEST_ARGS)

test-notebooks: assets
	$(HUB_OFF) $(PY) -m pytest --nbval --nbval-current-env -p no:randomly \
	  --sanitize-with notebooks/nbval_sanitize.cfg notebooks $(PYTEST_ARGS)

# Chapters 07-08 on the real GPT-2 when the hub is reachable: every cell must run; outputs are
# not compared (the committed ones were made with the course checkpoint).
test-online: assets
	env -u HF_HUB_OFFLINE -u TRANSFORMERS_OFFLINE $(PY) -m pytest --nbval-lax --nbval-current-env \
	  -p no:randomly notebooks/07_gpt2.ipynb notebooks/08_decoding.ipynb $(PYTEST_ARGS)

test: lint test-lib test-notebooks

lab: assets
	$(VENV)/bin/jupyter lab --ip=127.0.0.1 --no-browser $(ALLOW_ROOT) --notebook-dir=notebooks

exercises: setup
	$(PY) -m llmcourse.course.exercises notebooks exercises

# The course as a static HTML book, from the committed notebooks (never re-executed), the glossary
# and the FAQ; Sphinx's configuration is book/conf.py. Built afresh each time (about 20 s).
BOOK := _build/book
book: setup
	rm -rf $(BOOK)/html $(BOOK)/doctrees
	$(PY) -m sphinx -b html -c book -d $(BOOK)/doctrees -W --keep-going -q . $(BOOK)/html
	@echo "The book: $(BOOK)/html/index.html"

# Every page of the book in headless Chromium (Debian's chromium and chromium-driver; .ci/run
# installs them when they are missing), served from 127.0.0.1. Screenshots: $(BOOK)/screenshots.
test-book: book
	$(PY) -m pytest -p no:cacheprovider -s book/test_book.py $(PYTEST_ARGS)

# Resolve the whole lock against PyPI alone (no local wheel folder, no pip configuration), for
# every supported Python: metadata only, under a minute. Needs the registry, so CI runs it, not
# `make test`.
check-install: setup
	$(PY) .ci/check-install $(SUPPORTED_PYTHONS)

bench: assets
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) data/cache exercises $(BOOK)
