# One command to serve the demo, one to run the tests. Both set up .venv from the pinned files first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt
DEMO_REPOSITORY := demo-repository
HOST ?= 127.0.0.1
REST_PORT ?= 8501
GRPC_PORT ?= 8500
LOG_LEVEL ?= info

.PHONY: run test lint bench fuzz install install-test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

install: $(BIN)/python
	$(PIP) -e '.[demo]'

install-test: $(BIN)/python
	$(PIP) -e '.[test]'
	$(PIP) --no-deps tensorflow-serving-api==2.21.0 tf-keras==2.21.0
	$(BIN)/ortserve export-tf --install-tool

run: install
	$(BIN)/python -m ortserve.examples.demo --log-level $(LOG_LEVEL) $(DEMO_REPOSITORY)
	@echo "try: curl -s -F image=@your-photo.jpg http://$(HOST):$(REST_PORT)/predict"
	@echo "     curl -s http://$(HOST):$(REST_PORT)/embed -d '{\"texts\": [\"A man is eating food.\"]}'"
	$(BIN)/ortserve --log-level $(LOG_LEVEL) serve $(DEMO_REPOSITORY) --host $(HOST) --rest-port $(REST_PORT) --grpc-port $(GRPC_PORT)

lint: install-test
	$(BIN)/ruff check .

test: lint
	$(BIN)/python -m pytest -q -rs

bench: install-test
	bash benchmarks/run.sh

# the fuzz tests with many more examples than the suite runs (tests/fuzz; FUZZ_EXAMPLES per test)
FUZZ_EXAMPLES ?= 5000
fuzz: install-test
	ORTSERVE_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -q tests/fuzz
