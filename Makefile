# Two entry points: `make demo` and `make test`. Both bootstrap .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit bench chaos clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m examples.demo

lint: $(STAMP)
	$(BIN)/ruff check taskiq_fleet shared coordinator worker_agent tests benchmarks examples chaos
	$(BIN)/ruff format --check taskiq_fleet shared coordinator worker_agent tests benchmarks examples chaos

typecheck: $(STAMP)
	$(BIN)/mypy --strict taskiq_fleet shared coordinator worker_agent chaos

unit: $(STAMP)
	$(BIN)/python -m pytest

test: lint typecheck unit

bench: $(STAMP)
	$(BIN)/python -m benchmarks.placement_cost
	$(BIN)/python -m benchmarks.openb_replay

# The fault suite: real processes on loopback, faults while runs flow; not part of `make test`.
# CHAOS_ARGS passes options, e.g. `make chaos CHAOS_ARGS="--rounds 3 --scenario flood"`.
chaos: $(STAMP)
	$(BIN)/python -m chaos $(CHAOS_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis
