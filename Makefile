# The two set-up commands of the README: `make train` (the main job) and `make test`.
# Each creates its own virtual environment on first use, with torch pinned.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: train test env

env: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[test]' $(TORCH)
	touch $@

train: $(VENV)/.installed
	$(VENV)/bin/senet train

test: $(VENV)/.installed
	$(PY) -m pytest -q -n 2
