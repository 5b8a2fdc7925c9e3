"""Local mode and the pieces under it: the JSON file store, keys, usage sums, `fleet keys|usage --local`,
`fleet gateway --local` as a process, and the gateway's rendered app (hostile catalog strings stay data)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result

from catalog_builder import SETTINGS, model, write_catalog
from fleet.catalog import load_catalog
from fleet.cli import main
from fleet.gateway.keys import KeyCache, hash_key, list_keys, new_key, parse_duration, revoke, store_key
from fleet.gateway.render import render_gateway
from fleet.gateway.store import JsonFileStore
from fleet.gateway.usage import UsageMeter, summarize
from gatewaykit import INTERNAL_KEY, ServerThread, StubModel, free_port


def fleet(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


@pytest.fixture
def catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return write_catalog(tmp_path / "catalog", {"tiny": model("tiny"), "other": model("other")},
                         {**SETTINGS, "gateway": {"enabled": True}})


def test_json_store_keeps_every_write_of_concurrent_writers(tmp_path: Path) -> None:
    path = tmp_path / "state" / "usage.json"

    def writer(n: int) -> None:
        store = JsonFileStore(path)  # one per thread, like separate processes
        for i in range(25):
            store.put_many({f"w{n}-{i}": i})

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(JsonFileStore(path).items()) == 100
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert [p.name for p in path.parent.iterdir() if p.suffix == ".tmp"] == []


def test_keys_are_stored_hashed_and_the_cache_expires(tmp_path: Path) -> None:
    store = JsonFileStore(tmp_path / "keys.json")
    key, record = new_key("search", ("tiny",), parse_duration("90d"), now=1000.0)
    store_key(store, key, record)
    assert key not in (tmp_path / "keys.json").read_text()
    assert hash_key(key) in (tmp_path / "keys.json").read_text()
    assert record.expires == 1000.0 + 90 * 86400 and record.allows("tiny") and not record.allows("other")
    cache = KeyCache(store, ttl=30)
    assert cache.cached(key, 0.0) == (False, None)
    assert cache.fetch(key, 0.0) == record
    revoke(store, "search")
    assert cache.cached(key, 29.0) == (True, record)  # inside the TTL: still the cached answer
    assert cache.cached(key, 30.0) == (False, None)  # past it: asked again...
    assert cache.fetch(key, 30.0) is None  # ...and refused
    with pytest.raises(ValueError, match="team name"):
        new_key("bad team!", (), None)
    with pytest.raises(ValueError, match="duration"):
        parse_duration("90 days")


def test_usage_sums_instances_and_filters(tmp_path: Path) -> None:
    store = JsonFileStore(tmp_path / "usage.json")
    day1, day2 = 1_790_000_000.0, 1_790_000_000.0 + 86400
    for instance in ("a", "b"):
        meter = UsageMeter(store, instance=instance)
        meter.record("search", "tiny", prompt_tokens=3, completion_tokens=2, now=day1)
        meter.record("ads", "tiny", prompt_tokens=1, now=day2, cold_wait=True)
        assert meter.flush() == 2 and meter.flush() == 0  # nothing new: nothing written
    rows = [r.to_json() for r in summarize(store.items())]
    assert rows == [
        {"day": "2026-09-21", "team": "search", "model": "tiny", "requests": 2, "prompt_tokens": 6,
         "completion_tokens": 4, "errors": 0, "cold_waits": 0},
        {"day": "2026-09-22", "team": "ads", "model": "tiny", "requests": 2, "prompt_tokens": 2,
         "completion_tokens": 0, "errors": 0, "cold_waits": 2},
    ]
    assert [r.team for r in summarize(store.items(), since_day="2026-09-22")] == ["ads"]
    assert [r.team for r in summarize(store.items(), team="search")] == ["search"]
    text = (tmp_path / "usage.json").read_text()
    assert "prompt" not in text.replace("prompt_tokens", "")  # numbers only


def test_keys_cli_local_create_list_revoke(catalog: Path, tmp_path: Path) -> None:
    created = fleet("keys", "create", "search", "--all", "--local", "--expires", "30d")
    assert created.exit_code == 0, created.stdout + created.stderr
    key = created.stdout.splitlines()[1]
    assert key.startswith("fleet-") and "This is the only time the key is shown" in created.stderr
    listed = fleet("keys", "list", "--local").stdout
    assert listed.splitlines()[0].split() == ["TEAM", "KEY", "ID", "MODELS", "CREATED", "EXPIRES", "LAST", "USED"]
    assert "search" in listed and "never" in listed and key not in listed
    both = fleet("keys", "create", "x", "--all", "--models", "tiny", "--local")
    assert both.exit_code == 2 and "give --models a,b or --all" in both.stderr
    assert fleet("keys", "revoke", "search", "--local").exit_code == 0
    assert fleet("keys", "list", "--local").stdout.startswith("no keys")
    missing = fleet("keys", "revoke", "search", "--local")
    assert missing.exit_code == 1 and "error: no key of team or with id 'search'" in missing.stderr


def test_gateway_local_process_serves_counts_and_flushes_on_ctrl_c(catalog: Path, tmp_path: Path) -> None:
    stub = StubModel()
    key = fleet("keys", "create", "search", "--models", "tiny", "--local").stdout.splitlines()[1]
    port = free_port()
    env = {**os.environ, "FLEET_API_KEY": INTERNAL_KEY}
    with ServerThread(stub.app) as upstream:
        command = [sys.executable, "-c", "from fleet.cli import main; main()", "gateway", "--local",
                   "--upstream", f"tiny={upstream.url}/v1", "--port", str(port)]
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            first = process.stdout.readline()
            assert f"gateway at http://127.0.0.1:{port}/v1 for 2 model(s); running locally: tiny" in first
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 20
            while True:
                try:
                    httpx.get(f"{base}/health")
                    break
                except httpx.ConnectError:
                    assert time.monotonic() < deadline
                    time.sleep(0.1)
            auth = {"authorization": f"Bearer {key}"}
            reply = httpx.post(f"{base}/v1/chat/completions", headers=auth, json={"model": "tiny", "messages": []})
            assert reply.status_code == 200 and reply.json()["usage"]["completion_tokens"] == 3
        finally:
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=20) == 0
    rows = json.loads(fleet("usage", "--local", "--json").stdout)
    assert [(r["team"], r["model"], r["requests"], r["completion_tokens"]) for r in rows] == [("search", "tiny", 1, 3)]
    [(_, last_used)] = list_keys(JsonFileStore(Path(".fleet/gateway/keys.json")))
    assert last_used is not None


def test_gateway_local_refuses_an_upstream_not_in_the_catalog(catalog: Path) -> None:
    result = fleet("gateway", "--local", "--upstream", "tiyn=http://127.0.0.1:1")
    assert result.exit_code == 1 and "'tiyn' is not in the catalog" in result.stderr and "tiny" in result.stderr
    bad = fleet("gateway", "--local", "--upstream", "tiny")
    assert bad.exit_code == 2 and "use NAME=URL" in bad.stderr


def test_rendered_gateway_keeps_hostile_catalog_strings_as_data(tmp_path: Path) -> None:
    hostile = 'x"""\nimport os; os.system("rm -rf /")  # \\'
    directory = write_catalog(tmp_path / "catalog", {"tiny": model("tiny")},
                              {**SETTINGS, "gateway": {"enabled": True, "min_containers": 0}})
    # validate refuses control characters; the renderer must keep even those inert, so set them directly
    loaded = load_catalog(directory)
    catalog = replace(loaded, models=tuple(replace(m, description=hostile) for m in loaded.models))
    app = render_gateway(catalog)
    namespace: dict = {}
    models_line = re.search(r"^MODELS = .*?^\)$", app.source, re.S | re.M).group(0)
    exec(compile(models_line, "gateway", "exec"), namespace)  # only the literal: no modal needed
    assert namespace["MODELS"][0]["description"] == hostile
    assert "import os" not in app.source.replace(repr(hostile), "")
    assert "vllm" not in app.source.split("image = (")[1].split(")\n")[0]  # its own image: no vLLM
    assert app.spec.app_name == "fleet-gateway" and app.filename == "fleet_gateway.py"
    assert render_gateway(catalog).source == app.source  # same catalog, same bytes


def test_render_writes_the_gateway_and_check_sees_it(catalog: Path) -> None:
    assert fleet("render").exit_code == 0
    assert Path("build/apps/fleet_gateway.py").is_file()
    assert fleet("render", "--check").exit_code == 0
    clash = write_catalog(catalog.parent / "clash", {"gateway": model("gateway")}, {**SETTINGS, "gateway": {"enabled": True}})
    result = fleet("render", "--catalog", str(clash))
    assert result.exit_code == 1 and "'gateway' is the gateway's app name" in result.stderr


def test_gateway_settings_are_validated_with_did_you_mean(tmp_path: Path) -> None:
    directory = write_catalog(tmp_path / "catalog", {"tiny": model("tiny")},
                              {**SETTINGS, "gateway": {"enabeld": True, "key_cache_seconds": 120}})
    result = fleet("validate", "--catalog", str(directory))
    assert result.exit_code == 1
    assert "gateway.enabeld" in result.stderr and "did you mean 'enabled'" in result.stderr
    assert "gateway.key_cache_seconds" in result.stderr
    settings = load_catalog(write_catalog(tmp_path / "ok", {"tiny": model("tiny")}, SETTINGS)).settings.gateway
    assert (settings.enabled, settings.key_cache_seconds, settings.keys_dict) == (False, 30, "fleet-gateway-keys")
