# PrepIQ ML platform. `make train` runs the main job, `make test` the checks and tests.
# Every target builds or refreshes .venv first when it is missing or the pins changed.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv train seed test lint typecheck pytest test-services lock lock-serving bench-seed bench-ingest clean

venv: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first: the pin takes the CPU wheel from the machine's wheel folder.
	$(BIN)/pip install --quiet "$$(grep -E '^torch==' requirements.lock)"
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/pre-commit install --install-hooks >/dev/null 2>&1 || true
	@touch $(STAMP)

# The main job on the embedded defaults: migrate and seed the SQLite source if it is
# empty, then the training flow (ingest through the data gate, features, models).
train: venv
	$(BIN)/prepiq db upgrade
	$(BIN)/prepiq seed --if-empty
	$(BIN)/prepiq train

seed: venv
	$(BIN)/prepiq seed --reset

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

typecheck: venv
	$(BIN)/mypy

# PostgreSQL, Redis, chromium and the container engine the tests use: installed (as root)
# or started when missing, so `make test` alone passes on a fresh machine.
test-services:
	bash deploy/machine/test-services.sh

pytest: venv test-services
	$(BIN)/pytest

test: lint typecheck pytest

lock:
	rm -rf /tmp/prepiq-lock-venv && $(PYTHON) -m venv /tmp/prepiq-lock-venv
	/tmp/prepiq-lock-venv/bin/pip install --quiet "$$(grep -E '^torch==' requirements.in)"
	/tmp/prepiq-lock-venv/bin/pip install --quiet -r requirements.in
	{ head -2 requirements.lock; /tmp/prepiq-lock-venv/bin/pip freeze; } > requirements.lock.new
	mv requirements.lock.new requirements.lock

# The serving image's set (requirements-serving.in) at requirements.lock's versions; --all
# keeps setuptools, which torch needs and a plain freeze leaves out.
lock-serving:
	rm -rf /tmp/prepiq-serving-lock-venv && $(PYTHON) -m venv /tmp/prepiq-serving-lock-venv
	/tmp/prepiq-serving-lock-venv/bin/pip install --quiet "$$(grep -E '^torch==' requirements.lock)"
	/tmp/prepiq-serving-lock-venv/bin/pip install --quiet -c requirements.lock -r requirements-serving.in
	{ head -3 requirements-serving.lock; /tmp/prepiq-serving-lock-venv/bin/pip freeze --all | grep -v '^pip=='; } > requirements-serving.lock.new
	mv requirements-serving.lock.new requirements-serving.lock

bench-seed: venv
	$(BIN)/python benchmarks/seed.py

bench-ingest: venv
	$(BIN)/python benchmarks/ingest.py

clean:
	rm -rf .prepiq .mypy_cache .ruff_cache .pytest_cache
