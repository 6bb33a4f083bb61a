# Set-up and the two everyday commands. Everything lives in .venv; nothing is downloaded at run time.
#   make main   install, then run the main job (configs/cross_domain.yaml on the embedded default)
#   make test   install, then run the test suite (what CI runs)
# Details (what is installed where, TORCH_SPEC, offline use): docs/install.md; what each dependency is for:
# docs/dependencies.md.
PYTHON ?= python3
VENV ?= .venv
# The torch pair pip installs first. This pair installs and imports on CPU-only machines (docs/install.md: why not
# 2.13). A machine whose torch is already installed (a GPU machine, a container): make install TORCH_SPEC=
# keeps that torch: the venv then sees the system's packages, and torch/torchvision are pinned to the installed
# versions while the project is installed, so pip never replaces or downgrades them.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
PY := $(VENV)/bin/python
KEEP_TORCH := $(VENV)/keep-installed-torch.txt

.PHONY: install main test benchmark
$(PY):
	@echo "==> creating the virtual environment $(VENV) with $(PYTHON)$(if $(TORCH_SPEC),, (seeing the system's packages: TORCH_SPEC is empty))"
	$(PYTHON) -m venv $(if $(TORCH_SPEC),,--system-site-packages) $(VENV)

install: $(PY)
ifneq ($(strip $(TORCH_SPEC)),)
	@echo "==> [1/2] installing $(TORCH_SPEC) into $(VENV) (the CPU/CUDA build pip picks; several hundred MB the first time)"
	$(PY) -m pip install $(TORCH_SPEC)
	@echo "==> [2/2] installing copra_bench (editable) and its dependencies from pyproject.toml, plus pytest"
	$(PY) -m pip install -e ".[dev]"
else
	@echo "==> [1/2] TORCH_SPEC is empty: keeping the torch and torchvision $(PY) already imports"
	@$(PY) -c "import torch, torchvision" 2>/dev/null || { echo "error: $(PY) cannot import torch and torchvision. Install them first (into $(VENV), or into $(PYTHON) before the venv is created; an existing $(VENV) made without TORCH_SPEC= does not see the system's packages: delete it), or run make install without TORCH_SPEC= (docs/install.md)"; exit 2; }
	$(PY) -c "from importlib.metadata import version; print(f'torch=={version(\"torch\")}'); print(f'torchvision=={version(\"torchvision\")}')" > $(KEEP_TORCH)
	@echo "    pinned while installing: $$(tr '\n' ' ' < $(KEEP_TORCH))"
	@echo "==> [2/2] installing copra_bench (editable) and its other dependencies from pyproject.toml, plus pytest"
	$(PY) -m pip install --constraint $(KEEP_TORCH) -e ".[dev]"
endif

main: install
	@echo "==> running the main job: python -m copra_bench fit --config configs/cross_domain.yaml"
	MLFLOW_DISABLE_TELEMETRY=true $(PY) -m copra_bench fit --config configs/cross_domain.yaml

test: install
	@echo "==> running the test suite: pytest -m 'not gpu'"
	MLFLOW_DISABLE_TELEMETRY=true $(PY) -m pytest -m "not gpu"

benchmark: install
	$(PY) benchmarks/main_job.py
