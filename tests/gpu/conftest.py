"""The GPU ring: fleet.runtime driving a CUDA build of vLLM through the snapshot lifecycle.

Skipped unless vLLM and torch are importable, a GPU answers `nvidia-smi`, and FLEET_GPU_MODEL names a model
directory (the device recipe makes a random-weight one: ../shared/gpu/make_model.py); FLEET_GPU_TP=N
serves it tensor-parallel on N GPUs (memory is summed over every GPU and listed per GPU). `make gpu-bench`
runs it; timings go to stdout and, as JSON lines, to FLEET_GPU_BENCH_OUT (default gpu-bench.jsonl).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess

import pytest


def _skip_reason() -> str | None:
    if importlib.util.find_spec("vllm") is None or importlib.util.find_spec("torch") is None:
        return "vLLM (CUDA build) is not importable"
    if shutil.which("nvidia-smi") is None:
        return "no nvidia-smi: no CUDA GPU here"
    try:
        subprocess.run(["nvidia-smi", "-L"], check=True, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return "nvidia-smi finds no GPU"
    if not os.environ.get("FLEET_GPU_MODEL"):
        return "FLEET_GPU_MODEL is not set (a model directory to serve)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _skip_reason()
    if reason:
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(pytest.mark.skip(reason=reason))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "gpu: runs a CUDA vLLM engine (needs a GPU and FLEET_GPU_MODEL)")
