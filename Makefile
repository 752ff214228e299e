# Fresh machine -> working project. `make demo` and `make test` set everything up first.
#   make demo      offline demo sweep on the CPU (results/demo/)
#   make test      the test suite (unit, workflow dry runs, the demo sweep end to end)
#   make study     the CPU REPA study: 30 cells, 6 seeds, teachers against twins, verdict (results/study/)
#   make study-tokenwise  the study plus its token-wise arm: 12 more cells (docs/study.md)
#   make gpu-carry the packages a lent GPU machine lacks, into .carry/ (then scripts/gpu-check.sh there)
# On a GPU cluster `pip install torch==$(TORCH_VERSION)` takes PyPI's CUDA build; on a
# machine with a local wheel (PIP_FIND_LINKS) it takes that. Override with TORCH=...

SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
TORCH ?= torch==$(TORCH_VERSION)
PYTEST_ARGS ?=
# pytest-xdist workers (auto: one per core; 0: one process)
TEST_WORKERS ?= auto

.PHONY: setup demo study study-tokenwise test lint dry-run clean-demo gpu-carry

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 is needed (set PYTHON=...)"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch before anything that depends on it, so pip never picks another build
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet --editable ".[workflow,demo,study,test,lm-eval,tracking]"
	touch $@

demo: setup
	source $(BIN)/activate && time snakemake --profile profiles/demo

study: setup
	source $(BIN)/activate && time snakemake --profile profiles/study

study-tokenwise: setup
	source $(BIN)/activate && time snakemake --profile profiles/study --configfile config/study.yaml config/study-tokenwise.yaml

test: setup
	source $(BIN)/activate && pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

lint: setup
	source $(BIN)/activate && ruff check src tests && snakemake --lint && snakemake --profile profiles/demo --lint

dry-run: setup
	source $(BIN)/activate && snakemake -n --quiet rules

# what a lent GPU machine lacks, for scripts/gpu-check.sh there (docs/benchmarks.md)
gpu-carry:
	scripts/gpu-carry.sh

clean-demo:
	rm -rf results/demo
