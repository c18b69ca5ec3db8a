# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# Both create the virtual environment in $(VENV) when it is missing (about 10 minutes, 5.9 GB).
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv demo test lint typecheck notebooks real-weights real-weights-128 clean-venv
BENCHMARK ?= synthetic
# Maintainer step only (root, network to the Debian and npm registries): the real material, outside the repository.
MAINTAINER_DIR ?= $(HOME)/.cache/avalanche-exmask-real

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip setuptools wheel
	$(PY) -m pip install torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -e '.[dev,notebooks,cluster]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m avalanche_exmask demo --benchmark $(BENCHMARK)

# Rebuilds the embedded clip-art benchmark and the shipped `real` weights from Debian's openclipart-png
# and npm's emoji-datasource(-twitter, -google), then measures their transfer (about 45 minutes on one core).
real-weights: $(STAMP)
	apt-get update && apt-get install -y openclipart-png
	npm install --prefix $(MAINTAINER_DIR)/npm --no-save emoji-datasource@16.0.0 emoji-datasource-twitter@16.0.0 emoji-datasource-google@16.0.0
	$(PY) benchmarks/build_clipart_benchmark.py --emoji $(MAINTAINER_DIR)/npm/node_modules --cache $(MAINTAINER_DIR)/clipart-material.npz
	OMP_NUM_THREADS=1 $(PY) benchmarks/pretrain_tiny_clip_real.py --emoji $(MAINTAINER_DIR)/npm/node_modules --cache $(MAINTAINER_DIR)/clipart-material.npz
	$(PY) benchmarks/transfer_eval.py --out results/transfer/clipart_transfer.json

# The same recipe at 128 px with 16-pixel patches (exmask-tiny-128, about 45 minutes on one core), after
# `make real-weights` installed the material; then its transfer against the 64 px weights (issue 23).
real-weights-128: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) benchmarks/pretrain_tiny_clip_real.py --image-size 128 --patch-size 16 --emoji $(MAINTAINER_DIR)/npm/node_modules --cache $(MAINTAINER_DIR)/clipart-material-128.npz
	$(PY) benchmarks/transfer_eval.py --weights exmask-tiny-128:real real synthetic none --out results/transfer/clipart_transfer_128.json
	$(PY) benchmarks/transfer_eval.py --weights exmask-tiny-128:real real synthetic none --background photo --out results/transfer/clipart_transfer_128_photo.json

# Lint (ruff, a few seconds) and type check (mypy, about a minute cold, seconds with its cache) before the tests.
lint: $(STAMP)
	$(PY) -m ruff check avalanche_exmask benchmarks tests

typecheck: $(STAMP)
	$(PY) -m mypy

test: lint typecheck
	$(PY) -m pytest -q

notebooks: $(STAMP)
	$(PY) benchmarks/execute_notebooks.py

clean-venv:
	rm -rf $(VENV)
