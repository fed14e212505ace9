# The two commands of the README: `make run` and `make test`. Both create the
# virtual environment when needed, install the package, fetch and verify the
# models, and are safe to run again.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=
# The peer of the benchmark, in an environment of its own (never our dependency).
PEER_VENV := benchmarks/.peer-venv
LOADGEN_ARGS ?=
PEER_ARGS ?=

.PHONY: run test setup setup-dev models proto bench peer-venv clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# `make run` prepares the models from their shipped form, so it installs the
# `prepare` extra; a serving machine with a prepared cache needs only `pip install .`.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[prepare]'
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

setup-dev: $(VENV)/.installed-dev

models: setup
	$(BIN)/verifier models fetch

# The store is created on the very first run only: where one existed and is
# gone (its marker in data/.stores, the audit trail, the registry key, a saved
# index) init stops the run (exit 2) saying how to restore it or start afresh
# on purpose; the server reports a missing store (STORE_MISSING), never replaces it.
run: models
	$(BIN)/verifier watchlist init --first-run
	$(BIN)/verifier serve

test: setup-dev
	$(BIN)/verifier models fetch --assets
	$(BIN)/python -m pytest $(PYTEST_ARGS)

proto: setup-dev
	$(BIN)/python -m grpc_tools.protoc -Iproto --python_out=. --pyi_out=. --grpc_python_out=. proto/verifier/v1/*.proto

$(PEER_VENV)/.installed: benchmarks/peer-requirements.txt
	$(PYTHON) -m venv $(PEER_VENV)
	$(PEER_VENV)/bin/python -m pip install --quiet --no-deps -r benchmarks/peer-requirements.txt
	touch $@

peer-venv: $(PEER_VENV)/.installed

# The benchmark suite into one benchmarks/results/<timestamp>/ folder: stage
# times (served pack and fast-legacy side by side), the load generator through
# gRPC (then its Verify levels again on the fast-legacy pack), and the peer.
bench: setup-dev models peer-venv
	$(BIN)/verifier models fetch --assets
	out=benchmarks/results/$$(date +%Y%m%d-%H%M%S) && mkdir -p $$out && \
	$(BIN)/python -m benchmarks.stages > $$out/stages.txt && cat $$out/stages.txt && \
	$(BIN)/python -m benchmarks.loadgen --out $$out $(LOADGEN_ARGS) && \
	$(BIN)/python -m benchmarks.loadgen --out $$out/fast-legacy --server-env VERIFIER_MODELS__PACK=fast-legacy \
		--ops verify-images verify-template --concurrency 1 4 --rates && \
	$(BIN)/python -m benchmarks.peer --out $$out $(PEER_ARGS)

clean:
	rm -rf $(VENV) $(PEER_VENV) models/cache
