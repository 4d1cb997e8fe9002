# charrnn — everyday targets. `make help` lists them.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TANG_RAW ?= ../shared/corpora/tang/raw

.DEFAULT_GOAL := help
.PHONY: help demo test clean tang-data tang tang-quick poems bench

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)  ## create the venv, train configs/tiny.yaml on tinyshakespeare, print samples
	$(BIN)/charrnn train --config configs/tiny.yaml --out runs/demo --overwrite
	$(BIN)/charrnn sample runs/demo/best.npz --temperature 0.8 --length 400 --seed 1 --prime "ROMEO:"

test: $(STAMP)  ## create the venv if needed and run the whole test suite
	$(BIN)/python -m pytest -q

tang-data: $(STAMP)  ## rebuild corpora/tang and the rhyme tables from TANG_RAW (needs the [tang] extra)
	$(BIN)/python -m pip install -q -e '.[tang]'
	$(BIN)/charrnn prepare-tang $(TANG_RAW) corpora/tang --tables charrnn/data

tang-quick: $(STAMP)  ## train configs/tang-tiny.yaml (~3 min), print a 五言绝句, a 七言律诗 and an acrostic
	$(BIN)/charrnn train --config configs/tang-tiny.yaml --overwrite
	$(MAKE) --no-print-directory poems RUN=runs/tang-tiny

tang: $(STAMP)  ## train configs/tang.yaml (see its stated time), then a poem of each form and an acrostic
	$(BIN)/charrnn train --config configs/tang.yaml --overwrite
	$(MAKE) --no-print-directory poems RUN=runs/tang

RUN ?= runs/tang
POEM_OPTS ?= --strict --repeat-penalty 2 --best-of 8 --no-copy --seed 7 --pretty
poems: $(STAMP)  ## print a poem of each form and an acrostic from RUN/best.npz, tones and 平水韵 rhyme on
	@for form in wujue qijue wulv qilv; do $(BIN)/charrnn poem $(RUN)/best.npz --form $$form $(POEM_OPTS); done
	@$(BIN)/charrnn poem $(RUN)/best.npz --form qijue --acrostic 春夏秋冬 $(POEM_OPTS)

bench: $(STAMP)  ## speed benchmark against PyTorch's CPU LSTM (installs the [bench] extra)
	$(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python benchmarks/bench_speed.py --json runs/bench.json

clean:  ## remove the venv, runs and caches
	rm -rf $(VENV) runs build *.egg-info .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
