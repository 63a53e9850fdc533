# `make demo` and `make test` do all the set-up on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test lint format clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,timm]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/cspnet compare resnet50 cspresnet50

lint: install
	$(VENV)/bin/ruff check cspnet tests benchmarks examples
	$(VENV)/bin/ruff format --check cspnet tests benchmarks examples

format: install
	$(VENV)/bin/ruff format cspnet tests benchmarks examples
	$(VENV)/bin/ruff check --fix cspnet tests benchmarks examples

test: install lint
	$(PY) -m pytest -n 2 --durations=15 -q

clean:
	rm -rf $(VENV) build *.egg-info
