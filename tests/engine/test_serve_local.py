"""`fleet serve NAME --local`: a catalog entry served on this machine through the runtime, stopped by Ctrl-C."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from enginekit import free_port, process_tree_of_pid

pytestmark = pytest.mark.engine
FLEET = str(Path(sys.executable).with_name("fleet"))


def local_catalog(directory: Path) -> Path:
    directory.mkdir()
    (directory / "_fleet.yaml").write_text("prefix: fleet\n")
    entry = {
        "name": "tiny",
        "model": {"id": "test/tiny", "max_model_len": 512},
        "gpu": {"type": "L4"},
        "vllm": {"env": {"VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1"}},
    }
    (directory / "tiny.yaml").write_text(yaml.safe_dump(entry))
    return directory


def read_until(process: subprocess.Popen[str], pattern: str, deadline: float) -> re.Match[str]:
    assert process.stdout is not None
    seen = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        seen.append(line)
        match = re.search(pattern, line)
        if match:
            return match
    raise AssertionError(f"no line matching {pattern!r}; output:\n{''.join(seen[-40:])}")


def test_serve_local_answers_then_stops_on_ctrl_c(tiny_model: Path, tmp_path: Path) -> None:
    port = free_port()
    command = [FLEET, "serve", "tiny", "--local", "--eager", "--cycle", "--port", str(port),
               "--model-path", str(tiny_model), "--catalog", str(local_catalog(tmp_path / "catalog"))]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 240
        read_until(process, r"sleep \+ wake cycle: ok", deadline)
        base = read_until(process, r"serving 'tiny' at (http://\S+/v1)", deadline).group(1)
        key = read_until(process, r"API key: (\S+) \(generated for this run\)", deadline).group(1)
        assert base == f"http://127.0.0.1:{port}/v1"
        reply = httpx.post(
            f"{base}/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
            timeout=60,
        )
        assert reply.status_code == 200 and reply.json()["choices"][0]["message"]["content"] is not None
        assert httpx.get(f"{base}/models", timeout=10).status_code == 401
        engine_pids = [p.pid for p in process_tree_of_pid(process.pid)][1:]
        assert engine_pids, "the engine should run as children of the CLI"
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
        time.sleep(0.5)
        import psutil

        alive = [pid for pid in engine_pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]
        assert alive == [], f"processes left after Ctrl-C: {alive}"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGKILL], ids=lambda s: s.name)
def test_serve_local_leaves_nothing_behind_on_signal(sig: signal.Signals, tiny_model: Path, tmp_path: Path) -> None:
    """SIGTERM and SIGHUP stop like Ctrl-C; SIGKILL gives the CLI no say, so the engine's watchdog must."""
    import psutil

    port = free_port()
    command = [FLEET, "serve", "tiny", "--local", "--eager", "--port", str(port),
               "--model-path", str(tiny_model), "--catalog", str(local_catalog(tmp_path / "catalog"))]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        read_until(process, r"press Ctrl-C to stop", time.monotonic() + 240)
        engine = [p for p in process_tree_of_pid(process.pid)][1:]
        assert engine, "the engine should run as children of the CLI"
        process.send_signal(sig)
        assert process.wait(timeout=60) == (-9 if sig == signal.SIGKILL else 0)
        gone, alive = psutil.wait_procs(engine, timeout=20)
        alive = [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]
        assert alive == [], f"processes left after {sig.name}: {alive}"
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
