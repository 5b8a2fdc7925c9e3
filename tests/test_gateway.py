"""The gateway over real HTTP (uvicorn on loopback), with the real OpenAI SDK as client and a stub engine
behind it (the real-engine version is tests/engine/test_gateway_engine.py)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import openai
import pytest

from fleet.gateway.keys import list_keys, revoke
from fleet.gateway.usage import summarize
from gatewaykit import INTERNAL_KEY, ServerThread, StubModel, add_key, make_gateway, serve_gateway

DEAD_URL = "http://127.0.0.1:9"  # nothing listens on the discard port


@pytest.fixture
def stub():
    model = StubModel()
    with ServerThread(model.app) as server:
        model.url = server.url
        yield model


def client(gateway_url: str, key: str, **options) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway_url}/v1", api_key=key, max_retries=0, **options)


def test_models_are_listed_from_the_catalog_while_no_engine_runs(tmp_path: Path) -> None:
    gateway = make_gateway(tmp_path, {"tiny": DEAD_URL, "other": DEAD_URL})
    key = add_key(gateway, "search")
    with serve_gateway(gateway) as server:
        models = client(server.url, key).models.list()
        assert [m.id for m in models.data] == ["tiny", "other"]
        assert models.data[0].model_extra["context_length"] == 512
        assert httpx.get(f"{server.url}/health").json() == {"status": "ok", "models": 2}


def test_chat_goes_through_with_the_internal_key_never_the_team_key(tmp_path: Path, stub: StubModel) -> None:
    gateway = make_gateway(tmp_path, {"tiny": stub.url})
    key = add_key(gateway, "search", ("tiny",))
    with serve_gateway(gateway) as server:
        reply = client(server.url, key).chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "one two three"
    headers, _ = stub.seen[0]
    assert headers["authorization"] == f"Bearer {INTERNAL_KEY}"
    assert key not in str(stub.seen)


def test_per_model_base_url_routes_by_path(tmp_path: Path, stub: StubModel) -> None:
    gateway = make_gateway(tmp_path, {"tiny": stub.url})
    key = add_key(gateway, "search")
    with serve_gateway(gateway) as server:
        per_model = openai.OpenAI(base_url=f"{server.url}/models/tiny/v1", api_key=key, max_retries=0)
        assert [m.id for m in per_model.models.list().data] == ["tiny"]
        reply = per_model.chat.completions.create(model="whatever", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "one two three"
    assert stub.seen[0][1]["model"] == "tiny"


def test_missing_or_wrong_key_is_401(tmp_path: Path, stub: StubModel) -> None:
    gateway = make_gateway(tmp_path, {"tiny": stub.url})
    with serve_gateway(gateway) as server:
        with pytest.raises(openai.AuthenticationError) as wrong:
            client(server.url, "fleet-not-a-key").chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}])
        bare = httpx.post(f"{server.url}/v1/chat/completions", json={"model": "tiny"})
    assert wrong.value.status_code == 401 and wrong.value.code == "invalid_api_key"
    assert bare.status_code == 401 and bare.json()["error"]["code"] == "invalid_api_key"
    assert stub.seen == []


def test_key_scoped_to_another_model_is_403(tmp_path: Path, stub: StubModel) -> None:
    gateway = make_gateway(tmp_path, {"tiny": stub.url, "other": stub.url})
    key = add_key(gateway, "search", ("other",))
    with serve_gateway(gateway) as server:
        with pytest.raises(openai.PermissionDeniedError) as denied:
            client(server.url, key).chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}])
        listed = [m.id for m in client(server.url, key).models.list().data]
    assert "may not use model 'tiny'" in denied.value.message
    assert listed == ["other"]  # a key sees only its models
    assert stub.seen == []


def test_unknown_model_is_404_with_did_you_mean(tmp_path: Path) -> None:
    gateway = make_gateway(tmp_path, {}, models=("qwen3-4b", "llama-3.1-8b"))
    key = add_key(gateway, "search")
    with serve_gateway(gateway) as server:
        with pytest.raises(openai.NotFoundError) as missing:
            client(server.url, key).chat.completions.create(model="qwen3-4", messages=[{"role": "user", "content": "x"}])
    assert missing.value.code == "model_not_found"
    assert missing.value.body["message"] == "The model 'qwen3-4' does not exist. Did you mean 'qwen3-4b'?"


def test_revoked_key_is_refused_within_the_cache_ttl(tmp_path: Path, stub: StubModel) -> None:
    gateway = make_gateway(tmp_path, {"tiny": stub.url}, key_cache_ttl=1.0)
    key = add_key(gateway, "search")
    with serve_gateway(gateway) as server:
        chat = client(server.url, key).chat.completions
        chat.create(model="tiny", messages=[{"role": "user", "content": "x"}])
        assert [r.team for r in revoke(gateway.keys_store, "search")] == ["search"]
        revoked_at = time.monotonic()
        while True:
            try:
                chat.create(model="tiny", messages=[{"role": "user", "content": "x"}])
            except openai.AuthenticationError:
                break
            assert time.monotonic() - revoked_at < 1.5, "a revoked key still worked past the cache TTL"
            time.sleep(0.05)


def test_slow_model_stream_gets_keepalives_then_completes(tmp_path: Path, stub: StubModel) -> None:
    stub.delay = 1.0
    gateway = make_gateway(tmp_path, {"tiny": stub.url})
    key = add_key(gateway, "search")
    body = {"model": "tiny", "stream": True, "messages": [{"role": "user", "content": "x"}]}
    with serve_gateway(gateway) as server:
        with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}) as response:
            assert response.status_code == 200
            lines = [line for line in response.iter_lines() if line]
    keepalives = [line for line in lines if line == ": keep-alive"]
    assert len(keepalives) >= 3, lines
    assert lines[-1] == "data: [DONE]"
    assert not any('"usage"' in line for line in lines)  # fleet asked for usage; the client did not: stripped
    assert stub.seen[0][1]["stream_options"] == {"include_usage": True}


def test_stream_through_the_sdk_keeps_usage_when_the_client_asks(tmp_path: Path, stub: StubModel) -> None:
    gateway = make_gateway(tmp_path, {"tiny": stub.url})
    key = add_key(gateway, "search")
    with serve_gateway(gateway) as server:
        chunks = list(client(server.url, key).chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "x"}], stream=True, stream_options={"include_usage": True}))
        gateway.flush()
    assert "".join(c.choices[0].delta.content for c in chunks if c.choices) == "onetwothree"
    assert chunks[-1].usage.completion_tokens == 3
    [row] = summarize(gateway.usage.store.items())
    assert (row.team, row.model, row.counters.requests, row.counters.prompt_tokens, row.counters.completion_tokens) == ("search", "tiny", 1, 5, 3)


def test_failing_model_is_503_with_retry_after_never_a_hang(tmp_path: Path, stub: StubModel) -> None:
    stub.fail_with = 502
    gateway = make_gateway(tmp_path, {"tiny": stub.url, "other": DEAD_URL})
    key = add_key(gateway, "search")
    with serve_gateway(gateway) as server:
        started = time.monotonic()
        for model in ("tiny", "other"):
            with pytest.raises(openai.InternalServerError) as failed:
                client(server.url, key).chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}])
            assert failed.value.status_code == 503
            assert failed.value.response.headers["retry-after"] == "7"
        gateway.flush()
    assert time.monotonic() - started < 3
    errors = {row.model: row.counters.errors for row in summarize(gateway.usage.store.items())}
    assert errors == {"tiny": 1, "other": 1}


def test_model_slower_than_its_startup_budget_is_503(tmp_path: Path, stub: StubModel) -> None:
    stub.delay = 3.0
    gateway = make_gateway(tmp_path, {"tiny": stub.url}, startup_budget=0.5)
    key = add_key(gateway, "search")
    body = {"model": "tiny", "stream": True, "messages": [{"role": "user", "content": "x"}]}
    with serve_gateway(gateway) as server:
        with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}) as response:
            lines = [line for line in response.iter_lines() if line]
    assert lines[0] == ": keep-alive"  # the 200 went out before the budget ran out: the error is an event
    assert "no answer within its startup budget" in lines[-1] and lines[-1].startswith("data: {\"error\"")


def test_usage_is_flushed_on_shutdown(tmp_path: Path, stub: StubModel) -> None:
    gateway = make_gateway(tmp_path, {"tiny": stub.url}, usage_flush_interval=3600)
    key = add_key(gateway, "search")
    with serve_gateway(gateway) as server:
        for _ in range(3):
            client(server.url, key).chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}], max_tokens=2)
        assert summarize(gateway.usage.store.items()) == []
    [row] = summarize(gateway.usage.store.items())
    assert (row.counters.requests, row.counters.prompt_tokens, row.counters.completion_tokens) == (3, 15, 6)
    [(record, last_used)] = list_keys(gateway.keys_store)
    assert record.team == "search" and last_used is not None


def test_a_models_own_4xx_passes_through_unchanged(tmp_path: Path, stub: StubModel) -> None:
    stub.fail_with = 400
    gateway = make_gateway(tmp_path, {"tiny": stub.url})
    key = add_key(gateway, "search")
    with serve_gateway(gateway) as server:
        with pytest.raises(openai.BadRequestError) as bad:
            client(server.url, key).chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}])
        assert httpx.get(f"{server.url}/v1/nothing", headers={"authorization": f"Bearer {key}"}).status_code == 404
    assert bad.value.body == {"message": "boom"}


def test_modal_303_is_followed_so_the_client_never_sees_it(tmp_path: Path, stub: StubModel) -> None:
    stub.redirect = True
    gateway = make_gateway(tmp_path, {"tiny": stub.url})
    key = add_key(gateway, "search")
    with serve_gateway(gateway) as server:
        reply = client(server.url, key).chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}])
        gateway.flush()
    assert reply.choices[0].message.content == "one two three"
    assert "result" in stub.seen[-1][1]  # the gateway fetched the result URL itself
    [row] = summarize(gateway.usage.store.items())
    assert (row.counters.requests, row.counters.completion_tokens, row.counters.errors) == (1, 3, 0)


def test_usage_is_flushed_periodically_while_running(tmp_path: Path, stub: StubModel) -> None:
    gateway = make_gateway(tmp_path, {"tiny": stub.url}, usage_flush_interval=0.2)
    key = add_key(gateway, "search")
    with serve_gateway(gateway) as server:
        client(server.url, key).chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}])
        deadline = time.monotonic() + 5
        while not summarize(gateway.usage.store.items()):
            assert time.monotonic() < deadline, "usage never reached the store while the gateway ran"
            time.sleep(0.05)
