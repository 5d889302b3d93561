# One command per workflow, the same locally and in CI.
SHELL := /bin/bash
UV ?= $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
PY := .venv/bin/python
export UV_LINK_MODE := copy

.PHONY: setup demo test test-pg lint format bench clean

setup: .venv/bin/clinvault

.venv/bin/clinvault: pyproject.toml uv.lock
	@command -v $(UV) >/dev/null 2>&1 || python3 -m pip install --user --quiet uv
	$(UV) sync --frozen
	@touch $@

demo: setup
	.venv/bin/clinvault demo

test: setup lint
	.venv/bin/pytest

test-pg: setup
	.venv/bin/pytest -m pg

lint: setup
	.venv/bin/ruff check src tests bench
	.venv/bin/ruff format --check src tests bench
	.venv/bin/mypy
	.venv/bin/lint-imports

format: setup
	.venv/bin/ruff format src tests bench
	.venv/bin/ruff check --fix src tests bench

bench: setup
	$(PY) -m bench.run

clean:
	rm -rf .venv .mypy_cache .ruff_cache .pytest_cache
