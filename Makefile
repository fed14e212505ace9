# The two commands of the README: `make run` and `make test`. Both create the
# virtual environment when needed, install the package, fetch and verify the
# models, and are safe to run again.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: run test setup setup-dev models proto bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

setup-dev: $(VENV)/.installed-dev

models: setup
	$(BIN)/verifier models fetch

run: models
	$(BIN)/verifier serve

test: setup-dev
	$(BIN)/verifier models fetch --assets
	$(BIN)/python -m pytest $(PYTEST_ARGS)

proto: setup-dev
	$(BIN)/python -m grpc_tools.protoc -Iproto --python_out=. --pyi_out=. --grpc_python_out=. proto/verifier/v1/*.proto

bench: setup-dev models
	$(BIN)/python -m benchmarks.stages

clean:
	rm -rf $(VENV) models/cache
