# dojo: `make demo` runs the main job on the embedded defaults; `make test` runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast bench up down clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/dojo up
	$(BIN)/python -m pipelines.render.sample out
	$(BIN)/dojo render out/sample.md

test: $(STAMP)
	test -x /usr/bin/chromium || (apt-get update && apt-get install -y chromium)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

bench: $(STAMP)
	$(BIN)/python bench/throughput.py

up: $(STAMP)
	$(BIN)/dojo up

down: $(STAMP)
	$(BIN)/dojo down

clean:
	rm -rf $(VENV) .pytest_cache

# dojo side by side with Celery, Dramatiq, arq and RQ on Redis (peers in bench/.peers-venv/, not CI):
# `make bench-peers ARGS=--quick` for a smoke run, ARGS="--only dojo,celery" to pick systems.
.PHONY: bench-peers
bench-peers: $(STAMP)
	$(BIN)/python bench/vs_peers.py $(ARGS)
