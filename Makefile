# Everything runs inside .venv, created on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: demo test test-fast test-slow lint format bench clean

$(INSTALLED): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(INSTALLED)

## Pretrain SimCLR on the synthetic shapes, evaluate, print the comparison table (< 5 min on 2 CPUs).
demo: $(INSTALLED)
	$(BIN)/sslkit-train experiment=simclr_convnet_synthetic

## The test suite (fast tests; slow ones with `make test-slow`); prints its 15 slowest steps.
test: $(INSTALLED)
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup -m "not slow" --durations=15

## Unit and contract tests only: no pretraining, evaluation or other process (< 2 min on 2 CPUs).
test-fast: $(INSTALLED)
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup -m "not slow and not integration"

## The slow end-to-end runs (sweeps on launchers, multirun W&B, long resumes).
test-slow: $(INSTALLED)
	$(BIN)/python -m pytest -q -m slow

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(INSTALLED)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## Benchmarks under experiments/ (each prints its figures next to a reference measured in the same run).
bench: $(INSTALLED)
	@for script in $$(ls experiments/*/bench_*.py 2>/dev/null); do echo "== $$script"; $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache .ruff_cache
