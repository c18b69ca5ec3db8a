# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# Both create the virtual environment in $(VENV) when it is missing (about 10 minutes, 5.9 GB).
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv demo test notebooks clean-venv

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip setuptools wheel
	$(PY) -m pip install torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -e '.[dev,notebooks]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m avalanche_exmask demo

test: $(STAMP)
	$(PY) -m pytest -q

notebooks: $(STAMP)
	$(PY) benchmarks/execute_notebooks.py

clean-venv:
	rm -rf $(VENV)
