# lora-memory: `make demo` (set up + end-to-end demo) and `make test` (lint + all tests).
# Both do their own set-up on a fresh machine: a .venv, torch first (a CPU wheel; see
# TORCH_SPEC), the package with its dev extras, and the offline default models.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Install torch before anything that depends on it: a bare `torch` requirement would pull a
# multi-GB CUDA build. GPU users: make TORCH_SPEC="torch==2.13.0 --index-url <your CUDA index>".
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: help venv install models demo demo-langchain demo-llama-index test test-core test-langchain test-llama-index test-fast lint format bench bench-write clean

help:
	@echo "make demo       set up .venv, pull the default models, run examples/quickstart.py"
	@echo "make test       lint + type-check + unit, store (embedded and server) and integration tests,"
	@echo "                then the LangChain and LlamaIndex integrations' tests"
	@echo "make demo-langchain   an offline LangChain agent that remembers across sessions"
	@echo "make demo-llama-index documents -> LoRA module -> a LlamaIndex query engine, offline"
	@echo "make test-fast  tests without the real default model"
	@echo "make lint       ruff check, ruff format --check, mypy"
	@echo "make bench      lora-memory bench --quick (every suite, < 10 min on 2 cores) -> docs/benchmarks/"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e ".[dev,bench]"
	touch $@

venv install: $(VENV)/.installed

models: $(VENV)/.installed
	$(BIN)/lora-memory models pull

demo: models
	$(BIN)/python examples/quickstart.py

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(VENV)/.installed
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: lint models test-core test-langchain test-llama-index

test-core: $(VENV)/.installed
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# Framework integrations: separate distributions, installed editable into the same venv.
$(VENV)/.installed-langchain: $(VENV)/.installed integrations/langchain/pyproject.toml
	$(BIN)/python -m pip install --quiet -e "integrations/langchain[test]"
	touch $@

test-langchain: $(VENV)/.installed-langchain
	cd integrations/langchain && $(abspath $(BIN))/mypy
	cd integrations/langchain && $(abspath $(BIN))/python -m pytest -q $(PYTEST_ARGS) tests

demo-langchain: models $(VENV)/.installed-langchain
	$(BIN)/python examples/langchain_agent.py

LLAMA_INDEX := $(wildcard integrations/llama-index/llama-index-*-lora-memory)

$(VENV)/.installed-llama-index: $(VENV)/.installed $(addsuffix /pyproject.toml,$(LLAMA_INDEX))
	$(BIN)/python -m pip install --quiet $(foreach d,$(LLAMA_INDEX),-e "$(d)[test]")
	touch $@

test-llama-index: $(VENV)/.installed-llama-index
	for d in $(LLAMA_INDEX); do (cd $$d && $(abspath $(BIN))/mypy --strict --explicit-package-bases --ignore-missing-imports llama_index) || exit 1; done
	$(BIN)/python -m pytest -q $(PYTEST_ARGS) integrations/llama-index

demo-llama-index: models $(VENV)/.installed-llama-index
	$(BIN)/python examples/llamaindex_query_engine.py

test-fast: $(VENV)/.installed
	$(BIN)/python -m pytest -q -m "not integration" $(PYTEST_ARGS)

# The paper's findings on this machine (< 10 min on 2 CPU cores); full sizes: BENCH_ARGS= on a GPU.
BENCH_ARGS ?= --quick
BENCH_DATA ?= $(wildcard ../shared/datasets/phonebook)
bench: models
	$(BIN)/lora-memory bench $(BENCH_ARGS) $(if $(BENCH_DATA),--data $(BENCH_DATA)) --out docs/benchmarks

bench-write: models
	$(BIN)/python benchmarks/write_path.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache demo-memory demo-memory-langchain demo-memory-llamaindex
