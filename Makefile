# The two set-up commands of the README: `make train` (the main job) and `make test`.
# Each creates its own virtual environment on first use, with torch pinned.
# `make test-floor` runs the core tests again at the lowest torch/torchvision pyproject.toml
# admits (the releases on the GPU machines), in a second environment; CI runs both.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH := torch==2.14.1 torchvision==0.29.1
FLOOR_VENV ?= .venv-floor
FLOOR_TORCH := torch==2.11.0 torchvision==0.26.0
# models, their interface, weight files, a short training with its CLI, resume after SIGKILL,
# the GPU session kit on the CPU, experiment tracking
FLOOR_TESTS := tests/test_models.py tests/test_interface.py tests/test_weights.py tests/test_train_run.py \
	tests/test_resume.py tests/test_gpu_session.py tests/test_tracking.py

.PHONY: train test test-floor env

env: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[test]' $(TORCH)
	touch $@

$(FLOOR_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(FLOOR_VENV)
	$(FLOOR_VENV)/bin/python -m pip install -q $(FLOOR_TORCH)
	$(FLOOR_VENV)/bin/python -m pip install -q -e '.[test]' $(FLOOR_TORCH)
	touch $@

train: $(VENV)/.installed
	$(VENV)/bin/senet train

test: $(VENV)/.installed
	$(PY) -m pytest -q -n 2

test-floor: $(FLOOR_VENV)/.installed
	$(FLOOR_VENV)/bin/python -c "import torch, torchvision; print('floor: torch', torch.__version__, 'torchvision', torchvision.__version__)"
	$(FLOOR_VENV)/bin/python -m pytest -q -n 2 $(FLOOR_TESTS)
