# One command per workflow, the same locally and in CI.
SHELL := /bin/bash
UV ?= $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
PY := .venv/bin/python
export UV_LINK_MODE := copy
# Installed the way pip installs: byte-compiled, so no process pays for compiling at start-up
# (PYTHONDONTWRITEBYTECODE would otherwise make every run compile every module again).
export UV_COMPILE_BYTECODE := 1
# In CI the browser tests must run; locally they are skipped when Chromium is missing.
E2E_REQUIRED := $(if $(CI),1,)
FRONTEND_SRC := $(shell find frontend/src frontend/public -type f 2>/dev/null) \
	frontend/index.html frontend/vite.config.ts frontend/tsconfig.json

.PHONY: setup ui ui-api ui-test demo test test-pg lint format bench clean

setup: .venv/bin/clinvault

.venv/bin/clinvault: pyproject.toml uv.lock
	@command -v $(UV) >/dev/null 2>&1 || python3 -m pip install --user --quiet uv
	$(UV) sync --frozen
	$(PY) -m compileall -q src
	@touch $@

frontend/node_modules/.installed: frontend/package.json frontend/package-lock.json
	cd frontend && npm ci --no-audit --no-fund --prefer-offline
	@touch $@

frontend/dist/index.html: frontend/node_modules/.installed $(FRONTEND_SRC)
	cd frontend && npm run build

ui: frontend/dist/index.html

# After an API change: refresh the committed schema and the typed client, and commit both.
ui-api: setup frontend/node_modules/.installed
	$(PY) scripts/export_openapi.py
	cd frontend && npm run gen:api

ui-test: setup ui
	cd frontend && npx vitest run
	CLINVAULT_E2E_REQUIRED=1 .venv/bin/pytest tests/ui

demo: setup ui
	.venv/bin/clinvault demo

test: setup lint ui
	cd frontend && npx vitest run
	CLINVAULT_E2E_REQUIRED=$(E2E_REQUIRED) .venv/bin/pytest

test-pg: setup
	.venv/bin/pytest -m pg

lint: setup
	.venv/bin/ruff check src tests bench scripts
	.venv/bin/ruff format --check src tests bench scripts
	.venv/bin/mypy
	.venv/bin/lint-imports

format: setup
	.venv/bin/ruff format src tests bench scripts
	.venv/bin/ruff check --fix src tests bench scripts

bench: setup
	$(PY) -m compileall -q src bench
	$(PY) -m bench.run

clean:
	rm -rf .venv .mypy_cache .ruff_cache .pytest_cache frontend/node_modules frontend/dist
