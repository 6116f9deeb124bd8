# Two commands for a newcomer: `make demo` and `make test`. Both set everything up first and
# are idempotent: a second run reuses the virtual environment, the offline model and the data.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DATA ?= data
STAMP := $(VENV)/.installed-stamp
OFFLINE := $(DATA)/offline/READY

.PHONY: setup test test-fast demo ui bench docs

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# the CPU build of torch that lies on disk; a bare `torch` would pull a multi-GB CUDA build
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dagster,k8s,lora,dev]'
	touch $@

$(OFFLINE): $(STAMP) scripts/prepare_offline.py $(wildcard data/shipped/*.jsonl)
	$(PY) scripts/prepare_offline.py --data $(DATA)

setup: $(STAMP) $(OFFLINE)

test: setup
	$(PY) -m pytest -q --durations=10

test-fast: setup
	$(PY) -m pytest -q -m "not ui"

demo: setup
	$(PY) -m infdist_assets.cli demo --data $(DATA)

docs: $(STAMP)
	$(PY) scripts/gen_docs.py
	$(PY) -m mkdocs build --strict

ui: setup
	DAGSTER_HOME=$(abspath $(DATA))/dagster_home $(VENV)/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

bench: setup
	$(PY) benchmarks/bench_core.py
	$(PY) benchmarks/bench_model.py
	$(PY) benchmarks/bench_recovery.py
	$(PY) benchmarks/bench_cost.py
