# Two commands do all the set-up: `make demo` and `make test`. Both create/reuse .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.semdepth-installed
DATA ?=
PYTEST_ARGS ?=

.PHONY: demo test test-all venv bench-quick experiments-quick clean

venv: $(STAMP)

# torch is pinned and installed first: these machines carry the 2.13.0 CPU wheel locally,
# while an unpinned torch would drag in gigabytes of CUDA packages.
$(STAMP): setup.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[ros,dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) -m semdepth_ros.demo $(if $(DATA),--data $(DATA),)

test: $(STAMP)
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

test-all: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench-quick: $(STAMP)
	for b in benchmarks/*.py; do $(PY) $$b --quick || exit 1; done

# the research probes (experiments/README.md): python -m experiments.NAME --quick
experiments-quick: $(STAMP)
	for e in $(filter-out __init__ common,$(basename $(notdir $(wildcard experiments/*.py)))); do \
		$(PY) -m experiments.$$e --quick || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info
