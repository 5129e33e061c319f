# The README's two commands: `make run` (embedded mode) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 5000

.PHONY: run test lint bench worker clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.deps: requirements.txt runner/requirements.txt constraints.txt | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt -c constraints.txt
	touch $@

$(VENV)/.dev-deps: requirements.txt runner/requirements.txt requirements-dev.txt constraints.txt | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt \
		-c constraints.txt
	touch $(VENV)/.deps $@

# Runners report activity to the core at DEVEX_CORE_URL (used for idle culling).
run: $(VENV)/.deps
	DEVEX_CORE_URL=$${DEVEX_CORE_URL:-http://$(HOST):$(PORT)} \
	$(BIN)/flask --app devex run --host $(HOST) --port $(PORT)

test: $(VENV)/.dev-deps
	./scripts/ensure-test-tools
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.dev-deps
	$(BIN)/ruff check .

bench: $(VENV)/.dev-deps
	./scripts/ensure-test-tools wrk
	$(BIN)/python -m bench

# One RQ worker for the cluster wiring (README): jobs, retries and the periodic jobs.
worker: $(VENV)/.deps
	$(BIN)/rq worker -c devex.rq_config --url "$${DEVEX_REDIS_URL:-redis://127.0.0.1:6379/0}" \
		-w jobs.worker.DevexWorker --with-scheduler "$${DEVEX_QUEUE_NAME:-devex}"

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
