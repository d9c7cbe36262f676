# The two set-up commands of the README:
#   make run    - install (once) and run the whole workflow on the embedded default -> results/report.html
#   make test   - install (once) and run the test suite
VENV ?= .venv
PYTHON ?= python3
CORES ?= 2
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)

.PHONY: run test install lint bench clean

$(VENV)/.installed: envs/requirements-cpu.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r envs/requirements-cpu.txt
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

install: $(VENV)/.installed

run: $(VENV)/.installed
	snakemake --profile profiles/default --cores $(CORES)
	snakemake --profile profiles/default --cores $(CORES) --report results/report.html

test: $(VENV)/.installed
	python -m pytest -n 2 --dist loadfile tests

lint: $(VENV)/.installed
	snakemake --lint

bench: $(VENV)/.installed
	python bench/similarity.py
	python bench/finetune_sweep.py
	python bench/pruning.py

clean:
	rm -rf results logs benchmarks .snakemake
