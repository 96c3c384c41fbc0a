# `make run` opens the leuktui app on the demo workspace; `make test` runs every check, starting
# PostgreSQL and Slurm on loopback first. Both set up .venv from nothing (pip only; torch comes
# from the machine's local wheels where present).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
HOME_DIR ?= leuktui-home
DEMO := data/demo

.PHONY: run test lint bench demo clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(DEMO)/train.csv: | $(STAMP)
	$(VENV)/bin/leuktui data synth $(DEMO) --n-train 600 --n-valid 200 --n-test 200 --size 96

demo: $(DEMO)/train.csv

# A new demo workspace starts with one queued run (about a minute on a CPU) to watch train.
run: $(STAMP) demo
	test -f $(HOME_DIR)/leuktui.db || $(VENV)/bin/leuktui --home $(HOME_DIR) queue --data-dir $(DEMO) \
		--image-size 64 --epochs 6 --scheduler cosine --name demo --tag demo --no-start
	$(VENV)/bin/leuktui --home $(HOME_DIR)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

# The database and Slurm tests run against real servers on loopback: tests/services/up.sh starts
# them (installing them first where this is root) and prints the variables the tests read.
test: lint
	env $$(tests/services/up.sh) $(PY) -m pytest -q --durations=10

bench: $(STAMP)
	$(PY) bench/train_throughput.py

clean:
	rm -rf $(VENV) $(HOME_DIR) $(DEMO) .pytest_cache
