# The README's two commands: `make demo` (the pipeline on synthetic data) and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
DEMO   ?= data/demo
# Entry points run `emoexp` and `mlflow` from the venv.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install demo demo-data test test-all lint bench mlproject clean

install: $(VENV)/.installed

# uv installs the pinned torch stack in under a minute (plain pip takes several).
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check uv
	$(BIN)/uv pip install -q --python $(BIN)/python -e '.[dev]'
	touch $@

demo-data: install
	test -d $(DEMO)/faced || $(BIN)/emoexp data synth faced --out $(DEMO)/faced --subjects 6 --seed 0
	test -d $(DEMO)/eav || $(BIN)/emoexp data synth eav --out $(DEMO)/eav --seed 1

demo: demo-data
	$(BIN)/mlflow run . --env-manager local --experiment-name emoexp-demo -P data_root=$(DEMO)

test: install
	$(BIN)/python -m pytest -q

test-all: install
	$(BIN)/python -m pytest -q -m "slow or not slow"

lint: install
	$(BIN)/ruff check emoexp tests benchmarks

bench: install
	$(BIN)/python benchmarks/run_all.py

# MLproject is generated from the task configs; tests/test_mlproject.py fails when it is stale.
mlproject: install
	$(BIN)/python -m emoexp.mlproject

clean:
	rm -rf .emoexp mlruns mlflow.db $(DEMO) dashboards/*.html
