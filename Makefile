# Two set-up commands for a fresh machine (python3.11, pip, make):
#   make quickstart   the main job on built-in data
#   make test         the whole test suite (what .ci/run calls)
# Each creates and fills .venv when it is missing or its requirements changed.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv test quickstart benchmark experiments experiments-quick clean

$(STAMP): requirements.txt requirements-test.txt setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-test.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

# Tests run on CPU; several devices are faked for the sharding tests, kernels run
# in Pallas interpret mode. `make test` runs everything; while editing, the fast
# half (unit tests, no training runs or wide oracle sweeps; markers in
# pytest.ini) is:
#   .venv/bin/python -m pytest -q -m "not slow" tests
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=30 tests

quickstart: $(STAMP)
	$(BIN)/python -m fovea_jax.quickstart

benchmark: $(STAMP)
	$(BIN)/python tools/benchmark_attention.py

clean:
	rm -rf $(VENV) .pytest_cache

# The CPU-scale studies (experiments/README.md): results into experiments/results/.
experiments: $(STAMP)
	$(BIN)/python -m experiments.run_study --config=experiments/diagnostic_study.py --fresh
	$(BIN)/python -m experiments.run_study --config=experiments/lm_study.py --fresh

# A few steps per row of every study (also run by `make test`, in
# tests/experiments/test_quick_study_*.py); results into runs/experiments_quick/.
experiments-quick: $(STAMP)
	$(BIN)/python -m experiments.run_study --config=experiments/diagnostic_study.py:quick --output_dir=runs/experiments_quick --fresh
	$(BIN)/python -m experiments.run_study --config=experiments/lm_study.py:quick --output_dir=runs/experiments_quick --fresh
	$(BIN)/python -m experiments.run_study --config=experiments/summarization_study.py:quick --output_dir=runs/experiments_quick --fresh
