# LinkFlow developer tasks.  `make` (or `make help`) lists them.
# Settings are LINKFLOW_* environment variables (see README / infra/settings.py).

SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
LINT_PATHS := domain commands projections engine gateways infra tests bench
TYPED_PATHS := domain commands projections engine gateways infra
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: help venv services migrate run test unit lint bench clean

help: ## List the targets
	@echo "LinkFlow make targets:"
	@grep -E '^[a-z][a-z_-]*:.*## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*## "} {printf "  %-10s %s\n", $$1, $$2}'
	@echo "Variables: PYTEST_ARGS='...' (make test), BENCH_ARGS='...' (make bench)"

venv: ## Create .venv (Python >= 3.11) and pip install -e '.[dev]' when pyproject.toml changed
	@bash scripts/ensure-venv.sh

services: ## Make sure PostgreSQL and Redis answer (starts/installs them locally if needed)
	@bash scripts/ensure-services.sh

migrate: venv services ## Create the LINKFLOW_PG_DB database if missing and apply the schema
	$(VENV)/bin/linkflow migrate

run: venv services migrate ## Run every role in one foreground process (Ctrl-C stops it)
	@echo "LinkFlow on http://127.0.0.1:$${LINKFLOW_HTTP_PORT:-8000} — Ctrl-C stops it; or use: docker compose up"
	exec $(VENV)/bin/linkflow run all

test: venv services ## Run the whole test suite (extra pytest options: PYTEST_ARGS=...)
	$(VENV)/bin/pytest -q $(PYTEST_ARGS)

unit: venv ## Run only the unit tests (no services needed)
	$(VENV)/bin/pytest -q tests/unit

lint: venv ## ruff check + ruff format --check + mypy on the production packages
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	$(VENV)/bin/mypy $(TYPED_PATHS)

bench: venv services ## Run the benchmarks vs DBOS: python -m bench (options: BENCH_ARGS=...)
	@$(VENV)/bin/python -c 'import dbos' 2>/dev/null || $(VENV)/bin/pip install -q -e '.[dev,bench]'
	$(VENV)/bin/python -m bench $(BENCH_ARGS)

clean: ## Remove .venv, caches and build output
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache .mypy_cache
	find . -path ./.git -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
