# `make run` opens the leuktui app on the demo workspace; `make test` runs every check, starting
# PostgreSQL and Slurm on loopback first. Both set up .venv from nothing (pip only; torch comes
# from the machine's local wheels where present).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
HOME_DIR ?= leuktui-home
DEMO := data/demo

.PHONY: run test lint compile bench demo clean services report-example ablation-example

# Python writes the bytecode of what it imports into the venv, once: pip skips byte-compiling the
# 6 GB it installs (one core's work); importing what the app and a run use compiles that, as
# the user who made the venv, and the first process to import anything else compiles it for every
# later one. A shell's PYTHONDONTWRITEBYTECODE would make every process compile torch again, so
# the recipes here go without it.
unexport PYTHONDONTWRITEBYTECODE

$(STAMP): pyproject.toml
	@echo "leuktui: setting up $(VENV), once: pip installs torch, textual and the rest (about 6 GB; 1 to 2 minutes"
	@echo "         from a local package index, longer over the network). pip's progress follows."
	@# The venv without the copy of pip that `venv` compiles (7 s), the current pip put there by
	@# this Python's own pip where it can install into another (`--python`); else, or if that
	@# fails, the venv's own pip, upgraded.
	$(PY) -m pip --version >/dev/null 2>&1 || \
		{ $(PYTHON) -m pip --help 2>/dev/null | grep -q -- '--python ' && $(PYTHON) -m venv --without-pip $(VENV) && \
		  $(PYTHON) -m pip --python $(PY) install --quiet --upgrade pip; } || \
		{ $(PYTHON) -m venv $(VENV) && $(PY) -m pip install --quiet --upgrade pip; }
	$(PY) -m pip install --progress-bar on --no-compile -e '.[dev]'
	@echo "leuktui: compiling what the app and a run import, once (in two processes, one a CPU)"
	$(PY) -c 'import torch, torch._dynamo, engine.train' & torch_side=$$!; \
	$(PY) -c 'import sklearn.metrics, optuna, sqlalchemy, textual.app, leuktui.app, runner.scheduler' && wait $$torch_side
	touch $(STAMP)
	@echo "leuktui: $(VENV) is ready"

# Our modules compiled ahead (a syntax check before lint and run; bytecode for every process after)
compile: $(STAMP)
	@$(PY) -m compileall -q -j 0 leuktui engine runner db tests bench

$(DEMO)/train.csv: | $(STAMP)
	$(VENV)/bin/leuktui data synth $(DEMO) --n-train 600 --n-valid 200 --n-test 200 --size 96

demo: $(DEMO)/train.csv

# A new demo workspace starts with one queued run (about a minute on a CPU) to watch train.
run: $(STAMP) demo compile
	test -f $(HOME_DIR)/leuktui.db || $(VENV)/bin/leuktui --home $(HOME_DIR) queue --data-dir $(DEMO) \
		--image-size 64 --epochs 6 --scheduler cosine --name demo --tag demo --no-start
	$(VENV)/bin/leuktui --home $(HOME_DIR)

lint: $(STAMP) compile
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

# The tests drive real programs on loopback: PostgreSQL, a one-node Slurm cluster, sshd, chromium.
# tests/services/up.sh installs them where this is root and they are missing, starts the servers,
# and prints the variables the tests read; a test whose service is missing skips naming it (and
# fails under CI).
services:
	tests/services/up.sh

# The services start while pip installs (apt and pip each keep one core busy); the suite then runs
# on one pytest-xdist worker a CPU, at most 8 (TEST_WORKERS=0: in this one process).
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1); [ "$$n" -gt 8 ] && n=8; echo $$n)
test:
	@mkdir -p build
	@$(MAKE) --no-print-directory -j2 lint build/services.env
	env $$(cat build/services.env) $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup --durations=40

.PHONY: build/services.env
build/services.env:
	-tests/services/up.sh > $@

bench: $(STAMP)
	$(PY) bench/train_throughput.py

# The README's report figure, from two short runs on the synthetic demo data (a few CPU minutes).
EXAMPLE_HOME := build/report-example
report-example: $(STAMP) demo
	rm -rf $(EXAMPLE_HOME)
	$(VENV)/bin/leuktui --home $(EXAMPLE_HOME) run --data-dir $(DEMO) --image-size 64 --epochs 6 --scheduler cosine --name baseline
	$(VENV)/bin/leuktui --home $(EXAMPLE_HOME) run --data-dir $(DEMO) --image-size 64 --epochs 6 --scheduler cosine --hist-eq --name hist-eq
	$(VENV)/bin/leuktui --home $(EXAMPLE_HOME) eval 1
	$(VENV)/bin/leuktui --home $(EXAMPLE_HOME) eval 1 --tta five
	$(VENV)/bin/leuktui --home $(EXAMPLE_HOME) report 1 2 -o $(EXAMPLE_HOME)/report
	mkdir -p docs
	cp $(EXAMPLE_HOME)/report/figures/accuracy.png docs/report-example.png

# The README's ablation table: hist-eq on and off, three seeds each, on the demo data (CPU minutes).
ABLATION_HOME := build/ablation-example
ablation-example: $(STAMP) demo
	rm -rf $(ABLATION_HOME)
	$(VENV)/bin/leuktui --home $(ABLATION_HOME) queue --data-dir $(DEMO) --image-size 64 --epochs 6 --scheduler cosine \
		--grid hist_eq=false,true --seeds 3 --no-start
	$(VENV)/bin/leuktui --home $(ABLATION_HOME) scheduler start --foreground --idle-timeout 5 --max-parallel 2
	$(VENV)/bin/leuktui --home $(ABLATION_HOME) ablation --sweep 1 --cols hist_eq --markdown

clean:
	rm -rf $(VENV) $(HOME_DIR) $(DEMO) .pytest_cache
