# The two set-up commands of the README:
#   make run    - install (once) and run the whole workflow on the embedded default -> results/report.html
#   make test   - install (once) and run the test suite
VENV ?= .venv
PYTHON ?= python3
CORES ?= 2
# GPUS=N caps the summed GPUs of concurrently running local jobs (--resources gpu=N); unset: no cap.
# A cap below finetune.gpus would make Snakemake shrink the jobs' GPU requests, hence their process count.
GPUS ?=
# The SLURM profile name for `make preflight` (--profile $(PROFILE)); ARGS: more snakemake arguments.
PROFILE ?= slurm
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)

.PHONY: run test install lint bench clean slurm-profile preflight gpu-check multilingual

$(VENV)/.installed: envs/requirements-cpu.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r envs/requirements-cpu.txt
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

# The SLURM executor plugin: the tests resolve the cluster profiles with it (and the SLURM test runs it).
$(VENV)/.installed-slurm: envs/requirements-slurm.txt $(VENV)/.installed
	$(BIN)/python -m pip install -q -r envs/requirements-slurm.txt
	touch $@

install: $(VENV)/.installed

run: $(VENV)/.installed
	snakemake --profile profiles/default --cores $(CORES) $(if $(GPUS),--resources gpu=$(GPUS))
	snakemake --profile profiles/default --cores $(CORES) --report results/report.html

# Seed 003 alone, multilingual alignment through the image pivot (make run includes it while
# multilingual.enabled is true, as in config.yaml), then the report.
multilingual: $(VENV)/.installed
	snakemake --profile profiles/default --cores $(CORES) multilingual
	snakemake --profile profiles/default --cores $(CORES) --report results/report.html multilingual

# Three pytest-xdist workers on two cores: the end-to-end tests spend part of their time waiting on
# subprocesses and SLURM's polling (two workers kept the CPUs ~75 % busy), a third fills that time.
test: $(VENV)/.installed $(VENV)/.installed-slurm
	python -m pytest -n 3 --dist loadfile tests

lint: $(VENV)/.installed
	snakemake --lint

bench: $(VENV)/.installed
	python bench/similarity.py
	python bench/finetune_sweep.py
	python bench/pruning.py
	python bench/checkpoint_disk.py
	python bench/clip4dm_attributions.py --checkpoint results/pretrain/clip/checkpoint.pt
	python bench/splice_solver.py

# Once per cluster user: profiles/slurm with the site's values -> ~/.config/snakemake/slurm (the
# place `snakemake --profile slurm` looks; $$XDG_CONFIG_HOME/snakemake/slurm where that is set).
#   make slurm-profile PARTITION=cpu GPU_PARTITION=gpu ACCOUNT=my_account GPU_MODEL=a100 [STATUS=squeue] [FORCE=1]
slurm-profile: $(VENV)/.installed
	python -m workflow_scripts.cluster.preflight write-profile --partition "$(PARTITION)" \
	    --gpu-partition "$(GPU_PARTITION)" --account "$(ACCOUNT)" --gpu-model "$(GPU_MODEL)" \
	    $(if $(STATUS),--status-command $(STATUS)) $(if $(FORCE),--force)

# Cluster dry run + site checks (partitions, accounts, status command); prints each rule's sbatch options.
#   make preflight ARGS="--configfile my_cluster.yaml"
preflight: $(VENV)/.installed
	python -m workflow_scripts.cluster.preflight check --profile $(PROFILE) $(ARGS)

# On a GPU machine: the GPU code paths against their CPU counterparts (bench/gpu_check.py).
gpu-check: $(VENV)/.installed
	python bench/gpu_check.py $(ARGS)

clean:
	rm -rf results logs benchmarks .snakemake
