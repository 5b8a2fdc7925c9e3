"""The gateway's Modal side against the fake control plane (tests/fake_modal.py), with the real client:
deployed by `fleet deploy --all` as a CPU-only app, and `fleet keys` / `fleet usage` reading and writing the
named modal.Dict."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from modal_proto import api_pb2

from catalog_builder import SETTINGS, model, write_catalog
from fleet.cli import main
from fleet.gateway.keys import hash_key
from fleet.gateway.store import ModalDictStore
from fleet.gateway.usage import UsageMeter


@pytest.fixture
def catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    settings = {**SETTINGS, "gateway": {"enabled": True, "min_containers": 1, "keys_dict": "team-keys"}}
    return write_catalog(tmp_path / "catalog", {"alpha": model("alpha"), "beta": model("beta")}, settings)


def fleet(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def test_deploy_all_deploys_the_gateway_without_a_gpu(fake_modal, catalog: Path) -> None:
    result = fleet("deploy", "--all")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "3 deployed, 0 updated live, 0 unchanged (skipped), 0 failed" in result.stdout
    assert fake_modal.unimplemented == [] and fake_modal.errors == []
    [create] = [r for r in fake_modal.function_creates_for("fleet-gateway") if r.function.function_name == "Gateway.*"]
    fn = create.function
    assert fn.resources.gpu_config.count == 0 and not fn.resources.gpu_config.gpu_type
    assert fn.checkpointing_enabled is False
    assert [fake_modal.secret_name(s) for s in fn.secret_ids] == ["vllm-api-key"]
    assert fn.autoscaler_settings.min_containers == 1
    assert fn.max_concurrent_inputs == 1000
    webhook = fn.method_definitions["serve"].webhook_config
    assert webhook.type == api_pb2.WEBHOOK_TYPE_ASGI_APP and webhook.requested_suffix == "fleet-gateway"
    assert ("fleet-gateway", "download_weights") not in fake_modal.function_calls  # no weights to fetch
    again = fleet("deploy", "--all")
    assert "0 deployed, 0 updated live, 3 unchanged (skipped), 0 failed" in again.stdout


def test_gateway_is_not_an_orphan_and_shows_in_plan(fake_modal, catalog: Path) -> None:
    assert fleet("deploy", "--all", "--skip-weights").exit_code == 0
    plan = json.loads(fleet("plan", "--all", "--json").stdout)
    assert [(i["name"], i["app"], i["action"]) for i in plan["items"]] == [
        ("alpha", "fleet-alpha", "unchanged"), ("beta", "fleet-beta", "unchanged"), ("gateway", "fleet-gateway", "unchanged")]
    assert fleet("destroy", "--orphans", "--yes").stdout.strip() == "nothing to stop"


def test_keys_create_list_revoke_through_the_modal_dict(fake_modal, catalog: Path) -> None:
    created = fleet("keys", "create", "search", "--models", "alpha", "--expires", "90d")
    assert created.exit_code == 0, created.stdout + created.stderr
    key = re.search(r"(fleet-\S+)", created.stdout).group(1)
    entries = fake_modal.dict_entries("team-keys")
    assert len(entries) == 1 and key.encode() not in b"".join([*entries, *entries.values()])
    record = ModalDictStore("team-keys").get(f"key:{hash_key(key)}")
    assert record["team"] == "search" and record["models"] == ["alpha"]

    listed = json.loads(fleet("keys", "list", "--json").stdout)
    assert [(k["team"], k["models"], k["key_id"]) for k in listed] == [("search", ["alpha"], record["key_id"])]
    assert key not in fleet("keys", "list").stdout

    unknown = fleet("keys", "create", "search", "--models", "alpah")
    assert unknown.exit_code == 1 and "'alpah' is not in the catalog" in unknown.stderr

    revoked = fleet("keys", "revoke", "search")
    assert revoked.exit_code == 0 and f"revoked {record['key_id']} (team search)" in revoked.stdout
    assert fake_modal.dict_entries("team-keys") == {}
    assert fleet("keys", "revoke", "search").exit_code == 1


def test_usage_reads_what_gateways_flushed_into_the_dict(fake_modal, catalog: Path) -> None:
    for instance in ("a", "b"):  # two gateway containers, each writing its own totals
        meter = UsageMeter(ModalDictStore("fleet-gateway-usage"), instance=instance)
        meter.record("search", "alpha", prompt_tokens=10, completion_tokens=4)
        meter.record("search", "alpha", error=True, cold_wait=True)
        meter.flush()
    rows = json.loads(fleet("usage", "--json").stdout)
    assert [(r["team"], r["model"], r["requests"], r["prompt_tokens"], r["completion_tokens"], r["errors"], r["cold_waits"]) for r in rows] == [
        ("search", "alpha", 4, 20, 8, 2, 2)]
    csv = fleet("usage", "--csv", "--team", "search").stdout.splitlines()
    assert csv[0] == "day,team,model,requests,prompt_tokens,completion_tokens,errors,cold_waits"
    assert csv[1].endswith(",search,alpha,4,20,8,2,2")


def test_endpoints_show_the_gateway_first_and_export_client_configs(fake_modal, catalog: Path) -> None:
    assert fleet("deploy", "--all", "--skip-weights").exit_code == 0
    gateway = "https://fleet-test--fleet-gateway.modal.run"
    table = fleet("endpoints").stdout.splitlines()
    assert table[1].split() == ["gateway", f"{gateway}/v1", "(any)"]
    assert table[2].split() == ["alpha", f"{gateway}/models/alpha/v1", "alpha"]
    rows = json.loads(fleet("endpoints", "--json").stdout)
    assert rows[1] == {"name": "alpha", "base_url": f"{gateway}/models/alpha/v1", "model": "alpha",
                       "direct_base_url": "https://fleet-test--fleet-alpha.modal.run/v1"}
    env = fleet("endpoints", "--format", "openai-env").stdout.splitlines()
    assert f"OPENAI_BASE_URL={gateway}/v1" in env and f"FLEET_BETA_BASE_URL={gateway}/models/beta/v1" in env
    assert "OPENAI_API_KEY=${FLEET_API_KEY}" in env
    litellm = fleet("endpoints", "--format", "litellm").stdout
    assert "every 300 s" in litellm and "wake no GPU" in litellm
    import yaml

    config = yaml.safe_load(litellm)
    assert config["model_list"][0] == {"model_name": "alpha", "litellm_params": {
        "model": "openai/alpha", "api_base": f"{gateway}/v1", "api_key": "os.environ/FLEET_API_KEY"}}
