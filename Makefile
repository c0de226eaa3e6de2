# masklab: `make repro` runs the pipeline, `make test` the tests. Both create .venv on first use only.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXTRAS := repro,test
DATASETS ?= fashion_mnist
export PATH := $(abspath $(BIN)):$(PATH)
export TF_CPP_MIN_LOG_LEVEL ?= 2
export DVC_NO_ANALYTICS := 1

.PHONY: help install repro repro-full test lab bench clean-venv

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

# Reinstalls only when pyproject.toml or the lock file changed since the last install.
$(STAMP): pyproject.toml requirements-lock.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --constraint requirements-lock.txt --editable ".[$(EXTRAS)]"
	$(BIN)/python -m masklab install-jupyter >/dev/null  # kernel "masklab" + JupyterLab opens notebooks/*.py as notebooks
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install masklab with pinned dependencies (once)

repro: install  ## run the whole DVC pipeline on params.yaml (embedded mnist_5k, offline)
	$(BIN)/dvc repro

repro-full: install  ## the pipeline on full datasets too: make repro-full DATASETS="fashion_mnist mnist cifar10"
	$(BIN)/dvc exp run --set-param 'datasets=[mnist_5k,$(shell echo $(DATASETS) | tr ' ' ',')]'

test: install  ## run the test suite (pytest)
	$(BIN)/python -m pytest

lab: install  ## JupyterLab on notebooks/: NN-topic.py open as notebooks in the project kernel, writing scratch/
	$(BIN)/jupyter lab notebooks/

bench: install  ## run the benchmarks (write results/benchmarks/*.json)
	for script in benchmarks/bench_*.py; do $(BIN)/python $$script || exit 1; done

clean-venv:  ## remove .venv (the next target reinstalls)
	rm -rf $(VENV)
