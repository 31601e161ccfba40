# Governed Marketing Pipelines - the two commands are `make demo` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

export GMP_HOME ?= $(CURDIR)/.gmp
export AIRFLOW__COSMOS__ENABLE_TELEMETRY := False
export DO_NOT_TRACK := 1
export DBT_SEND_ANONYMOUS_USAGE_STATS := false
export UV_LINK_MODE := copy
# Bytecode compiled at install: where PYTHONDONTWRITEBYTECODE=1 is set (many images, this machine)
# Python never caches it, and every start would compile each module it imports again.
export UV_COMPILE_BYTECODE := 1

VENV := $(CURDIR)/.venv
UV := $(shell command -v uv 2>/dev/null)
ifeq ($(UV),)
UV := $(shell python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/uv
endif
RUN := $(UV) run --frozen

.PHONY: help demo test test-fast test-celery bench lint format airflow dbt-parse clean

help:  ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(UV):
	@echo "uv not found: installing it with pip"
	python3 -m pip install --quiet uv

$(VENV)/.synced: uv.lock pyproject.toml Makefile | $(UV)
	$(UV) sync --frozen
	@# The project is installed editable (plugins/ on the path): uv compiles site-packages, not it.
	$(VENV)/bin/python -m compileall -q plugins dags
	@touch $@

dbt-parse: $(VENV)/.synced  ## Write dbt_project/target/manifest.json (Cosmos renders the DAG from it)
	$(RUN) gmp dbt-parse

demo: $(VENV)/.synced  ## Generate a sample CRM export and run the governed pipeline through Airflow
	$(RUN) gmp demo

# `make test` runs the test files on TEST_WORKERS processes (pytest-xdist; a file's tests stay on one
# worker, see tests/conftest.py). TEST_WORKERS=0 runs them in this one process.
TEST_WORKERS ?= 2

test: $(VENV)/.synced  ## The whole test suite on real components (Airflow, dbt, GX, DuckDB, openai SDK)
	$(RUN) pytest -m "not benchmark" -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

test-fast: $(VENV)/.synced  ## Unit tests only
	$(RUN) pytest tests/unit $(PYTEST_ARGS)

test-celery: $(VENV)/.synced  ## Distributed smoke test: the DAGs on CeleryExecutor, local Postgres and Redis
	$(RUN) python tests/celery/celery_smoke.py

bench: $(VENV)/.synced  ## Benchmarks; figures go to bench/results.json
	$(RUN) pytest -m benchmark tests/benchmarks $(PYTEST_ARGS)

lint: $(VENV)/.synced  ## ruff (Python) and sqlfluff (dbt SQL)
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	cd dbt_project && $(RUN) sqlfluff lint models macros tests

format: $(VENV)/.synced  ## Apply ruff and sqlfluff fixes
	$(RUN) ruff check --fix .
	$(RUN) ruff format .
	cd dbt_project && $(RUN) sqlfluff fix models

airflow: $(VENV)/.synced  ## airflow standalone with this repo's dags and plugins (AIRFLOW_HOME=$GMP_HOME/airflow)
	$(RUN) gmp airflow standalone

clean:  ## Remove everything runs wrote ($GMP_HOME, dbt target); keeps .venv
	rm -rf "$(GMP_HOME)" dbt_project/target dbt_project/logs
