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
	$(BIN)/dojo submit countdown --payload '{"steps": 10, "interval": 0.3}' --watch

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

bench: $(STAMP)
	$(BIN)/python bench/queue.py

up: $(STAMP)
	$(BIN)/dojo up

down: $(STAMP)
	$(BIN)/dojo down

clean:
	rm -rf $(VENV) .pytest_cache
