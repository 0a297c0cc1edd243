# lora-memory: `make demo` (set up + end-to-end demo) and `make test` (lint + all tests).
# Both do their own set-up on a fresh machine: a .venv, torch first (a CPU wheel; see
# TORCH_SPEC), then the exact set in requirements.lock (hash-checked), the package and both
# integrations (editable, no dependency resolution), and the offline default models.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Install torch before anything that depends on it: a bare `torch` requirement would pull a
# multi-GB CUDA build. GPU users: make TORCH_SPEC="torch==2.13.0 --index-url <your CUDA index>".
TORCH_SPEC ?= torch==2.13.0
PIP_VERSION := 26.3
PIP_TOOLS_VERSION := 7.6.2
# pip's "Location ... is ignored: it is neither a file nor a directory" is noise from a
# file:// extra index that lacks a project (some pip.conf set-ups); it is filtered out, and
# pipefail keeps pip's exit status.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PIP_NOISE := { grep -v "is ignored: it is neither a file nor a directory" >&2 || true; }
PIP := $(BIN)/python -m pip --quiet --disable-pip-version-check
LOCK := requirements.lock
PYTEST_ARGS ?=

LLAMA_INDEX := $(wildcard integrations/llama-index/llama-index-*-lora-memory)
EDITABLES := -e ".[dev,bench,langchain,serve,ray]" -e "integrations/langchain[test]" \
	$(foreach d,$(LLAMA_INDEX),-e "$(d)[test]")
PYPROJECTS := pyproject.toml integrations/langchain/pyproject.toml \
	$(addsuffix /pyproject.toml,$(LLAMA_INDEX))

.PHONY: help venv install models demo demo-langchain demo-llama-index test test-core test-langchain test-llama-index test-fast test-latest lock lock-upgrade lint format bench bench-write clean

help:
	@echo "make demo       set up .venv, pull the default models, run examples/quickstart.py"
	@echo "make test       lint + type-check + unit, store (embedded and server) and integration tests,"
	@echo "                then the LangChain and LlamaIndex integrations' tests"
	@echo "make demo-langchain   an offline LangChain agent that remembers across sessions"
	@echo "make demo-llama-index documents -> LoRA module -> a LlamaIndex query engine, offline"
	@echo "make test-fast  tests without the real default model"
	@echo "make lint       ruff check, ruff format --check, mypy, lint-imports (the layers contract)"
	@echo "make lock       regenerate requirements.lock from requirements.in (keeps pins)"
	@echo "make lock-upgrade  the same with the newest versions the ranges allow"
	@echo "make test-latest   the suite in .venv-latest with the newest versions the ranges allow,"
	@echo "                and with each newer release our ranges exclude; reports what breaks"
	@echo "make bench      lora-memory bench --quick (every suite, < 10 min on 2 cores) -> docs/benchmarks/"
	@echo "make bench-write  the write suite at full sizes (1k, 10k, 100k records) -> docs/benchmarks/write/"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install pip==$(PIP_VERSION) 2>&1 | $(PIP_NOISE)

# The lock pins every package but torch, with hashes; the local packages go in without
# resolving anything (setuptools' note on editable installs silenced), then `pip check` proves
# the set is consistent.
$(VENV)/.installed: $(BIN)/python $(LOCK) $(PYPROJECTS)
	$(PIP) install $(TORCH_SPEC) 2>&1 | $(PIP_NOISE)
	$(PIP) install --require-hashes --no-deps -r $(LOCK) 2>&1 | $(PIP_NOISE)
	PYTHONWARNINGS="ignore:Editable installation" \
		$(PIP) install --no-deps --no-build-isolation $(EDITABLES) 2>&1 | $(PIP_NOISE)
	$(PIP) check
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
	$(BIN)/lint-imports --no-cache

format: $(VENV)/.installed
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: lint models test-core test-langchain test-llama-index

test-core: $(VENV)/.installed
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# Framework integrations: separate distributions, installed editable into the same venv.
test-langchain: $(VENV)/.installed
	cd integrations/langchain && $(abspath $(BIN))/mypy
	cd integrations/langchain && $(abspath $(BIN))/python -m pytest -q $(PYTEST_ARGS) tests

demo-langchain: models
	$(BIN)/python examples/langchain_agent.py

test-llama-index: $(VENV)/.installed
	for d in $(LLAMA_INDEX); do (cd $$d && $(abspath $(BIN))/mypy --strict --explicit-package-bases --ignore-missing-imports llama_index) || exit 1; done
	$(BIN)/python -m pytest -q $(PYTEST_ARGS) integrations/llama-index

demo-llama-index: models
	$(BIN)/python examples/llamaindex_query_engine.py

test-fast: $(VENV)/.installed
	$(BIN)/python -m pytest -q -m "not integration" $(PYTEST_ARGS)

# The paper's findings on this machine (< 10 min on 2 CPU cores); full sizes: BENCH_ARGS= on a GPU.
BENCH_ARGS ?= --quick
BENCH_DATA ?= $(wildcard ../shared/datasets/phonebook)
bench: models
	$(BIN)/lora-memory bench $(BENCH_ARGS) $(if $(BENCH_DATA),--data $(BENCH_DATA)) --out docs/benchmarks

# The write path at full sizes: add_turn / add_turns / search next to raw Chroma, search at 1k,
# 10k and 100k records (the `write` suite; seed 1337 as in docs/benchmarks/write_path.md).
bench-write: models
	$(BIN)/lora-memory bench write --seed 1337 --out docs/benchmarks/write

# requirements.lock from requirements.in, with pip-tools in a venv of its own.
.venv-lock/bin/pip-compile:
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip --quiet install pip==$(PIP_VERSION) pip-tools==$(PIP_TOOLS_VERSION)

lock: .venv-lock/bin/pip-compile
	.venv-lock/bin/python tools/lock.py --pip-compile .venv-lock/bin/pip-compile

lock-upgrade: .venv-lock/bin/pip-compile
	.venv-lock/bin/python tools/lock.py --pip-compile .venv-lock/bin/pip-compile --upgrade

# Not CI (which installs the lock): the newest versions the ranges allow, in .venv-latest.
test-latest:
	$(PYTHON) tools/test_latest.py --torch-spec "$(TORCH_SPEC)" --pip-version $(PIP_VERSION) $(if $(PYTEST_ARGS),--pytest-args '$(PYTEST_ARGS)')

clean:
	rm -rf $(VENV) .venv-lock .venv-latest .pytest_cache .mypy_cache .ruff_cache demo-memory demo-memory-langchain demo-memory-llamaindex
