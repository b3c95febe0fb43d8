# Quick start: `make run` (build the quickstart recipe) and `make test` (run the suite).
# Both create .venv on first use; later calls reuse it until pyproject.toml changes.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt

.PHONY: run test lint schema clean task-assets gpu-check

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Editable installs are not byte-compiled by pip, and with PYTHONDONTWRITEBYTECODE set Python
# never caches edgepipe's own modules: compile them once (~40 ms off every `edgepipe` call).
$(VENV)/.installed-run: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) -e .
	$(BIN)/python -m compileall -q edgepipe
	touch $@

$(VENV)/.installed-dev: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) -e '.[dev,openvino,remote,tflite,torch-native]'
	$(BIN)/python -m compileall -q edgepipe
	touch $@ $(VENV)/.installed-run

run: $(VENV)/.installed-run
	$(BIN)/edgepipe run pipelines/quickstart.yaml

test: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/edgepipe schema --check
	$(BIN)/python -m pytest -q

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .

schema: $(VENV)/.installed-dev
	$(BIN)/edgepipe schema

# Retrain the weights and rewrite the labelled samples the task recipes load (committed: the
# recipes run offline on a fresh clone; this is how they were made, ~2 min on 2 cores)
task-assets: $(VENV)/.installed-dev
	$(BIN)/python -m pipelines.models.assets

# The GPU paths, verified on a machine with an NVIDIA GPU in one call (README, "Verifying the GPU
# paths"): the system Python with the project on PYTHONPATH, plus wheels carried in .whl/ for
# what that machine lacks. Without a GPU it prints what it would run and exits 0.
GPU_PYTHON ?= python3
gpu-check:
	@if ls .whl/*.whl >/dev/null 2>&1; then \
		$(GPU_PYTHON) -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
			--upgrade --target /tmp/edgepipe-site .whl/*.whl \
			|| echo "gpu-check: the wheels in .whl/ do not install here (built for Python 3.12)"; fi
	PYTHONPATH=$(CURDIR):/tmp/edgepipe-site$${PYTHONPATH:+:$$PYTHONPATH} \
		$(GPU_PYTHON) benchmarks/gpu_check.py

clean:
	rm -rf build
