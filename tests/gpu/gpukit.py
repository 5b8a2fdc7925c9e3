"""Helpers of the GPU ring: GPU memory from nvidia-smi (no CUDA context in the test process, so it counts
only the engine's), raw HTTP with or without key and control token, a streamed time-to-first-token, and the
JSON-lines timing record."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import threading
import time
from typing import Any

BENCH_OUT = os.environ.get("FLEET_GPU_BENCH_OUT", "gpu-bench.jsonl")


def gpu_used_per_gpu() -> list[int]:
    """Memory used on each GPU, MiB, all processes."""
    out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    return [int(line) for line in out.split()]


def gpu_used_mib() -> int:
    """Memory used on every GPU together, MiB (a tensor-parallel engine holds memory on each)."""
    return sum(gpu_used_per_gpu())


def gpu_apps() -> str:
    return subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader"],
                          capture_output=True, text=True, timeout=30).stdout.strip()


def gpu_info() -> str:
    return subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader", "-i", "0"],
                          capture_output=True, text=True, timeout=30).stdout.strip()


class MemoryWatch:
    """Polls GPU memory in a thread: when it first fell under `floor_mib` after `mark()`."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append((time.monotonic(), gpu_used_mib()))
            except Exception:  # noqa: BLE001 - a failed read is a missing sample
                pass
            self._stop.wait(self.interval)

    def __enter__(self) -> "MemoryWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def first_under(self, floor_mib: int, since: float) -> float | None:
        return next((t - since for t, used in self.samples if t >= since and used <= floor_mib), None)


def raw(port: int, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
        timeout: float = 30.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    data = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
    h = {"Content-Type": "application/json"} if body is not None else {}
    h.update(headers or {})
    try:
        conn.request(method, path, body=data, headers=h)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def stream_ttft(port: int, key: str, model: str, prompt: str = "Hi", max_tokens: int = 8) -> dict[str, Any]:
    """Seconds to the first streamed content chunk, and to the end."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": prompt}],
                       "max_tokens": max_tokens, "temperature": 0, "stream": True}).encode()
    t0 = time.monotonic()
    conn.request("POST", "/v1/chat/completions", body=body,
                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
    response = conn.getresponse()
    first = None
    for line in response:
        line = line.strip()
        if not line.startswith(b"data:") or line == b"data: [DONE]":
            if line == b"data: [DONE]":
                break
            continue
        delta = json.loads(line[5:])["choices"][0].get("delta", {})
        if first is None and delta.get("content"):
            first = time.monotonic() - t0
    conn.close()
    return {"status": response.status, "first_token_s": first and round(first, 4),
            "total_s": round(time.monotonic() - t0, 4)}


def record(row: dict[str, Any]) -> None:
    line = json.dumps(row, sort_keys=True)
    print("GPU-BENCH " + line, flush=True)
    with open(BENCH_OUT, "a") as f:
        f.write(line + "\n")
