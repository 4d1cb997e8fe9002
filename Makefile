# charrnn — everyday targets. `make help` lists them.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TANG_RAW ?= ../shared/corpora/tang/raw

.DEFAULT_GOAL := help
.PHONY: help demo test clean tang-data tang tang-quick bench

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)  ## create the venv, train configs/tiny.yaml on tinyshakespeare, print samples
	$(BIN)/charrnn train --config configs/tiny.yaml --out runs/demo
	$(BIN)/charrnn sample runs/demo/best.npz --temperature 0.8 --length 400 --seed 1 --prime "ROMEO:"

test: $(STAMP)  ## create the venv if needed and run the whole test suite
	$(BIN)/python -m pytest -q

bench: $(STAMP)  ## speed benchmark against PyTorch's CPU LSTM (installs the [bench] extra)
	$(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python benchmarks/bench_speed.py --json runs/bench.json

clean:  ## remove the venv, runs and caches
	rm -rf $(VENV) runs build *.egg-info .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
