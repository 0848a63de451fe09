# One command each: make serve, make test, make lint, make train.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install install-dev serve test test-slow lint train bench gallery protos

# Two sets in one .venv: serving needs only the service (`make serve`); the tests add the test tools,
# Ray, the SDK and the peers they check against (`make test`). See README's "Install sizes".
$(BIN)/mindscope: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.dev: $(BIN)/mindscope pyproject.toml clients/python/pyproject.toml
	$(BIN)/pip install --quiet -e '.[dev,ray]' -e 'clients/python[all]'
	touch $@

install: $(BIN)/mindscope

install-dev: $(VENV)/.dev

# The gRPC port follows the HTTP one (PORT + 1) unless GRPC_PORT names it (0 turns gRPC off).
serve: install
	$(BIN)/mindscope serve --host $(HOST) --port $(PORT) $(if $(GRPC_PORT),--grpc-port $(GRPC_PORT))

# The explorer's tests need a Chromium: the system's, else Debian's package, else Playwright's download.
test: install-dev
	@browser=$$(PYTHON=$(BIN)/python tests/tools/ensure_browser.sh) && MINDSCOPE_CHROMIUM=$$browser $(BIN)/python -m pytest

test-slow: install-dev
	$(BIN)/python -m pytest -m slow

lint: install-dev
	$(BIN)/ruff check service tests clients
	$(BIN)/ruff format --check service tests clients
	$(BIN)/mypy
	$(BIN)/mypy clients/python/mindscope_client

train: install
	$(BIN)/mindscope train --data ../shared/data/cifar10/train --epochs 10 --out model_store/cifar10-allcnn/$(VERSION)

# The benchmark and its peers (alibi, tf-explain, saliency) live in their own environment.
.venv-bench/bin/python: pyproject.toml bench/requirements-peers.txt
	$(PYTHON) -m venv .venv-bench
	.venv-bench/bin/pip install --quiet --upgrade pip
	.venv-bench/bin/pip install --quiet -e . -e 'clients/python[all]' -r bench/requirements-peers.txt
	touch $@

bench: .venv-bench/bin/python
	.venv-bench/bin/python bench/serve_bench.py

# Every picture the API draws, from a real server, into docs/images/ (README shows them).
gallery: install-dev
	$(BIN)/python bench/gallery.py

# The gRPC message and service modules, from the Open Inference Protocol's .proto. grpcio-tools
# 1.75 writes code for protobuf >= 6.31.1 and grpcio >= 1.75, the oldest the service accepts.
protos:
	$(PYTHON) -m venv /tmp/mindscope-protoc
	/tmp/mindscope-protoc/bin/pip install --quiet grpcio-tools==1.75.1
	cd service && /tmp/mindscope-protoc/bin/python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. \
		--grpc_python_out=. mindscope/protocols/open_inference.proto
