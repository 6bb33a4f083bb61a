# Set-up and the two everyday commands. Everything lives in .venv; nothing is downloaded at run time.
#   make main   install, then run the main job (configs/cross_domain.yaml on the embedded default)
#   make test   install, then run the test suite (what CI runs)
# Details (what is installed where, TORCH_SPEC, offline use): docs/install.md; what each dependency is for:
# docs/dependencies.md.
PYTHON ?= python3
VENV ?= .venv
# CPU machines: this pair installs from the local wheel store and imports cleanly (docs/install.md).
# GPU machines with their own torch: make install TORCH_SPEC=
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
PY := $(VENV)/bin/python

.PHONY: install main test benchmark
$(PY):
	$(PYTHON) -m venv $(VENV)

install: $(PY)
	@if [ -n "$(TORCH_SPEC)" ]; then $(PY) -m pip install --quiet $(TORCH_SPEC); fi
	$(PY) -m pip install --quiet -e ".[dev]"

main: install
	MLFLOW_DISABLE_TELEMETRY=true $(PY) -m copra_bench fit --config configs/cross_domain.yaml

test: install
	MLFLOW_DISABLE_TELEMETRY=true $(PY) -m pytest -m "not gpu"

benchmark: install
	$(PY) benchmarks/main_job.py
