"""`fleet deploy`, `plan`, `status`, `endpoints`, `destroy` against the fake control plane, real client."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from catalog_builder import model, write_catalog
from fleet.cli import main
from fleet.render import TAG_SPEC_HASH


@pytest.fixture
def catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return write_catalog(
        tmp_path / "catalog",
        {
            "alpha": model("alpha"),
            "beta": model("beta", gpu={"type": "H100", "count": 2}, snapshot=False),
            "gamma": model("gamma", model={"id": "meta-llama/Llama-3.1-8B-Instruct", "gated": True}),
        },
    )


def fleet(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def deployed_functions(fake) -> int:
    return len(fake.calls("FunctionCreate"))


def test_deploy_all_then_again_deploys_nothing(fake_modal, catalog: Path) -> None:
    first = fleet("deploy", "--all")
    assert first.exit_code == 0, first.stdout + first.stderr
    assert "3 deployed, 0 updated live, 0 unchanged (skipped), 0 failed" in first.stdout
    for name in ("alpha", "beta", "gamma"):
        app = fake_modal.app(f"fleet-{name}")
        assert app.state_name == "deployed" and app.tags[TAG_SPEC_HASH]
    creates = deployed_functions(fake_modal)

    started = time.monotonic()
    second = fleet("deploy", "--all")
    assert second.exit_code == 0
    assert "0 deployed, 0 updated live, 3 unchanged (skipped), 0 failed" in second.stdout
    assert "[alpha] unchanged, skipped (its snapshot is kept)" in second.stdout
    assert deployed_functions(fake_modal) == creates
    assert time.monotonic() - started < 3


def test_summary_shows_each_url(fake_modal, catalog: Path) -> None:
    result = fleet("deploy", "--all")
    table = result.stdout.split("\n\n")[2].splitlines()
    assert table[0].split() == ["NAME", "ACTION", "RESULT", "TIME", "URL", "/", "ERROR"]
    assert table[1].split()[:3] == ["alpha", "create", "deployed"]
    assert table[1].split()[-1] == "https://fleet-test--fleet-alpha.modal.run"


def edit(catalog: Path, name: str, **changes: object) -> None:
    path = catalog / f"{name}.yaml"
    entry = yaml.safe_load(path.read_text())
    entry.update(changes)
    path.write_text(yaml.safe_dump(entry))


def plan_rows(result: Result) -> dict[str, str]:
    """NAME -> ACTION of a text plan (the table before the summary line)."""
    lines = result.stdout.splitlines()
    end = next(i for i, line in enumerate(lines) if " to create, " in line)
    rows = [line for line in lines[1:end] if not line.startswith("  ")]
    return {re.split(r"\s{2,}", row)[0]: re.split(r"\s{2,}", row)[1] for row in rows}


def test_editing_one_file_redeploys_only_that_model(fake_modal, catalog: Path) -> None:
    assert fleet("deploy", "--all").exit_code == 0
    edit(catalog, "beta", vllm={"args": ["--max-num-seqs", "8"]})
    plan = fleet("plan", "--all")
    assert [line.split()[1] for line in plan.stdout.splitlines()[1:4]] == ["unchanged", "redeploy", "unchanged"]
    assert 'beta   redeploy   vllm.args: [] -> ["--max-num-seqs", "8"]' in plan.stdout
    fake_modal.requests.clear()
    result = fleet("deploy", "--all")
    assert "1 deployed, 0 updated live, 2 unchanged (skipped), 0 failed" in result.stdout
    assert {req.function.function_name for req in fake_modal.calls("FunctionCreate")} == {"Beta.*", "download_weights"}
    assert fake_modal.app("fleet-beta").tags[TAG_SPEC_HASH] != ""


def test_weights_are_fetched_once_per_deployed_model(fake_modal, catalog: Path) -> None:
    assert fleet("deploy", "--all").exit_code == 0
    assert sorted(fake_modal.function_calls) == [
        ("fleet-alpha", "download_weights"),
        ("fleet-beta", "download_weights"),
        ("fleet-gamma", "download_weights"),
    ]
    assert fleet("deploy", "--all").exit_code == 0
    assert len(fake_modal.function_calls) == 3  # unchanged apps: nothing fetched again
    fake_modal.function_calls.clear()
    assert fleet("deploy", "alpha", "--force", "--skip-weights").exit_code == 0
    assert fake_modal.function_calls == []


def test_failed_weight_download_is_reported(fake_modal, catalog: Path) -> None:
    fake_modal.fail_call_for("fleet-gamma", "download_weights", "401 Client Error: gated repo")
    result = fleet("deploy", "--all")
    assert result.exit_code == 1
    assert "error: gamma: deployed, but fetching weights failed: RemoteError: 401 Client Error: gated repo" in result.stderr
    assert "2 deployed, 0 updated live, 0 unchanged (skipped), 1 failed" in result.stdout


def test_force_redeploys_everything(fake_modal, catalog: Path) -> None:
    assert fleet("deploy", "--all").exit_code == 0
    result = fleet("deploy", "--all", "--force")
    assert "3 deployed, 0 updated live, 0 unchanged (skipped), 0 failed" in result.stdout


def test_one_failure_leaves_the_others_deployed(fake_modal, catalog: Path) -> None:
    fake_modal.fail_deploy_for("fleet-beta", "GPU quota exceeded for H100")
    result = fleet("deploy", "--all")
    assert result.exit_code == 1
    assert "2 deployed, 0 updated live, 0 unchanged (skipped), 1 failed" in result.stdout
    assert "error: beta: InvalidError: GPU quota exceeded for H100" in result.stderr
    assert fake_modal.app("fleet-alpha").state_name == "deployed"
    assert fake_modal.app("fleet-gamma").state_name == "deployed"


def test_no_credentials_fails_fast_with_how_to_log_in(catalog: Path, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MODAL_TOKEN_ID", raising=False)
    monkeypatch.delenv("MODAL_TOKEN_SECRET", raising=False)
    monkeypatch.setattr("modal.config._user_config", {})
    started = time.monotonic()
    result = fleet("deploy", "--all")
    assert result.exit_code == 1
    assert "error: no Modal credentials: run `modal setup`" in result.stderr
    assert time.monotonic() - started < 5


def test_unreachable_modal_fails_fast(catalog: Path, monkeypatch) -> None:
    monkeypatch.setenv("MODAL_TOKEN_ID", "ak-x")
    monkeypatch.setenv("MODAL_TOKEN_SECRET", "as-x")
    monkeypatch.setenv("MODAL_SERVER_URL", "http://127.0.0.1:9")
    result = fleet("deploy", "--all")
    assert result.exit_code == 1
    assert "error: cannot reach Modal at http://127.0.0.1:9" in result.stderr


def test_missing_secret_is_reported_before_any_deploy(fake_modal, catalog: Path) -> None:
    fake_modal.existing_secrets.discard("huggingface-secret")
    result = fleet("deploy", "--all")
    assert result.exit_code == 1
    assert "missing Modal secret(s): huggingface-secret; nothing was deployed" in result.stderr
    assert "modal secret create huggingface-secret HF_TOKEN=<token>" in result.stderr
    assert fake_modal.calls("FunctionCreate") == [] and fake_modal.deployed_apps() == []


def test_dry_run_needs_no_account(catalog: Path, monkeypatch) -> None:
    monkeypatch.delenv("MODAL_TOKEN_ID", raising=False)
    monkeypatch.delenv("MODAL_TOKEN_SECRET", raising=False)
    monkeypatch.setattr("modal.config._user_config", {})  # no ~/.modal.toml profile either
    result = fleet("deploy", "--all", "--dry-run")
    assert result.exit_code == 0, result.stderr
    assert "Dry run: 3 app(s) rendered into build/apps; nothing deployed." in result.stdout
    assert (catalog.parent / "build/apps/fleet_alpha.py").is_file()
    assert result.stdout.splitlines()[2].split()[:2] == ["alpha", "create?"]


def test_dry_run_with_an_account_shows_what_would_be_skipped(fake_modal, catalog: Path) -> None:
    assert fleet("deploy", "alpha").exit_code == 0
    fake_modal.requests.clear()
    result = fleet("deploy", "--all", "--dry-run")
    assert result.exit_code == 0
    rows = {line.split()[0]: line.split()[1] for line in result.stdout.splitlines()[2:5]}
    assert rows == {"alpha": "unchanged", "beta": "create", "gamma": "create"}
    assert "2 to create, 0 to redeploy (0 snapshots lost), 0 to update live, 1 unchanged" in result.stdout
    assert fake_modal.calls("FunctionCreate") == [] and fake_modal.calls("AppPublish") == []


def test_deploy_refuses_an_invalid_catalog_before_modal(fake_modal, catalog: Path) -> None:
    (catalog / "alpha.yaml").write_text("name: alpha\ngpu: {type: T1000}\n")
    result = fleet("deploy", "--all")
    assert result.exit_code == 1
    assert "catalog/alpha.yaml:2: gpu.type: 'T1000' is not a GPU type Modal documents" in result.stderr
    assert fake_modal.requests == []


def test_deploy_needs_names_or_all(catalog: Path) -> None:
    assert fleet("deploy").exit_code == 2


def test_deploy_one_model(fake_modal, catalog: Path) -> None:
    result = fleet("deploy", "gamma")
    assert result.exit_code == 0
    assert [a.name for a in fake_modal.deployed_apps()] == ["fleet-gamma"]


def test_plan_finds_an_orphan_and_destroy_stops_it(fake_modal, catalog: Path) -> None:
    assert fleet("deploy", "--all").exit_code == 0
    (catalog / "beta.yaml").unlink()
    plan = fleet("plan", "--all")
    rows = [line.split() for line in plan.stdout.splitlines()[1:]]
    assert rows[2] == ["fleet-beta", "orphan", "not", "in", "the", "catalog"]
    assert plan.stdout.splitlines()[-1] == "0 to create, 0 to redeploy (0 snapshots lost), 0 to update live, 2 unchanged, 1 orphaned"
    destroyed = fleet("destroy", "--orphans", "--yes")
    assert destroyed.exit_code == 0 and "stopped fleet-beta" in destroyed.stdout
    assert fake_modal.app("fleet-beta").state_name == "stopped"
    assert "orphan" not in fleet("plan", "--all").stdout


def test_destroy_asks_first(fake_modal, catalog: Path) -> None:
    assert fleet("deploy", "alpha").exit_code == 0
    declined = CliRunner().invoke(main, ["destroy", "alpha"], input="n\n")
    assert declined.exit_code == 1 and fake_modal.app("fleet-alpha").state_name == "deployed"
    accepted = CliRunner().invoke(main, ["destroy", "alpha"], input="y\n")
    assert accepted.exit_code == 0 and fake_modal.app("fleet-alpha").state_name == "stopped"


def test_status_and_endpoints_read_urls_back_from_modal(fake_modal, catalog: Path) -> None:
    assert fleet("deploy", "alpha", "beta").exit_code == 0
    status = fleet("status", "--json")
    rows = {r["name"]: r for r in __import__("json").loads(status.stdout)}
    assert rows["alpha"]["state"] == "in sync" and rows["alpha"]["url"] == "https://fleet-test--fleet-alpha.modal.run"
    assert rows["beta"]["gpu"] == "H100:2" and rows["beta"]["deployed_at"]
    assert rows["gamma"]["state"] == "not deployed" and rows["gamma"]["url"] is None
    endpoints = fleet("endpoints", "--json")
    assert __import__("json").loads(endpoints.stdout) == [
        {"name": "alpha", "base_url": "https://fleet-test--fleet-alpha.modal.run/v1", "model": "alpha"},
        {"name": "beta", "base_url": "https://fleet-test--fleet-beta.modal.run/v1", "model": "beta"},
    ]


def test_another_prefix_is_never_an_orphan(fake_modal, catalog: Path, tmp_path: Path) -> None:
    other = write_catalog(tmp_path / "other", {"delta": model("delta")}, settings={"prefix": "team2"})
    assert fleet("deploy", "--all", "--catalog", str(other), "--out", str(tmp_path / "other-apps")).exit_code == 0
    assert fleet("deploy", "--all").exit_code == 0
    assert "orphan" not in fleet("plan", "--all").stdout
    assert fleet("destroy", "--orphans", "--yes").stdout.strip() == "nothing to stop"
    assert fake_modal.app("team2-delta").state_name == "deployed"


# --- live scaling: no deploy, snapshot kept ----------------------------------------------------------------


def test_scaling_only_edit_is_applied_live_and_recorded(fake_modal, catalog: Path) -> None:
    assert fleet("deploy", "--all").exit_code == 0
    edit(catalog, "alpha", scaling={"min_containers": 1, "max_containers": 3, "scaledown_window": 900})
    plan = fleet("plan", "--all")
    assert plan_rows(plan)["alpha"] == "update live"
    assert "alpha  update live  scaling.min_containers: 0 -> 1; scaling.max_containers: 1 -> 3; " in plan.stdout
    assert plan.stdout.splitlines()[-1] == "0 to create, 0 to redeploy (0 snapshots lost), 1 to update live, 2 unchanged"
    fake_modal.requests.clear()

    result = fleet("deploy", "--all")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "0 deployed, 1 updated live, 2 unchanged (skipped), 0 failed" in result.stdout
    assert fake_modal.calls("AppPublish") == [] and fake_modal.calls("FunctionCreate") == []
    updates = fake_modal.calls("FunctionUpdateSchedulingParams")
    assert len(updates) == 1
    settings = updates[0].settings
    assert (settings.min_containers, settings.max_containers, settings.scaledown_window) == (1, 3, 900)
    assert len(fake_modal.function_calls) == 3  # weights already fetched at the first deploy: none again
    assert fake_modal.app("fleet-alpha").tags["fleet-scaling"] == "1.3.900"
    again = fleet("plan", "--all", "--detailed-exitcode")
    assert again.exit_code == 0, again.stdout
    assert set(plan_rows(again).values()) == {"unchanged"}
    # the rendered source carries the new values, so a later redeploy keeps them
    assert "min_containers=1," in (catalog.parent / "build/apps/fleet_alpha.py").read_text()


def test_mixed_edit_redeploys_once(fake_modal, catalog: Path) -> None:
    assert fleet("deploy", "--all").exit_code == 0
    edit(catalog, "alpha", scaling={"max_containers": 2}, vllm={"fast_boot": True})
    plan = fleet("plan", "--all")
    assert "alpha  redeploy   vllm.fast_boot: false -> true; scaling.max_containers: 1 -> 2" in plan.stdout
    assert "  alpha: redeploy discards its snapshot: 3-5 slow cold starts x up to 1800 s" in plan.stdout
    fake_modal.requests.clear()
    result = fleet("deploy", "--all")
    assert "1 deployed, 0 updated live, 2 unchanged (skipped), 0 failed" in result.stdout
    assert len(fake_modal.calls("AppPublish")) == 1
    assert fake_modal.calls("FunctionUpdateSchedulingParams") == []
    create = [r for r in fake_modal.calls("FunctionCreate") if r.function.function_name == "Alpha.*"][0]
    assert create.function.autoscaler_settings.max_containers == 2
    assert set(plan_rows(fleet("plan", "--all")).values()) == {"unchanged"}


def test_plan_detailed_exitcode_and_json(fake_modal, catalog: Path) -> None:
    assert fleet("plan", "--all", "--detailed-exitcode").exit_code == 2
    assert fleet("deploy", "--all").exit_code == 0
    assert fleet("plan", "--all", "--detailed-exitcode").exit_code == 0
    edit(catalog, "beta", scaling={"max_containers": 5})
    result = fleet("plan", "--all", "--json", "--detailed-exitcode")
    assert result.exit_code == 2
    data = __import__("json").loads(result.stdout)
    assert [i["action"] for i in data["items"]] == ["unchanged", "update live", "unchanged"]
    assert data["summary"]["text"] == "0 to create, 0 to redeploy (0 snapshots lost), 1 to update live, 2 unchanged"


def test_plan_error_exits_1_even_with_detailed_exitcode(catalog: Path, monkeypatch) -> None:
    monkeypatch.setenv("MODAL_TOKEN_ID", "ak-x")
    monkeypatch.setenv("MODAL_TOKEN_SECRET", "as-x")
    monkeypatch.setenv("MODAL_SERVER_URL", "http://127.0.0.1:9")
    assert fleet("plan", "--all", "--detailed-exitcode").exit_code == 1


def test_force_is_a_planning_option(fake_modal, catalog: Path) -> None:
    assert fleet("deploy", "--all").exit_code == 0
    plan = fleet("plan", "--all", "--force")
    assert set(plan_rows(plan).values()) == {"redeploy"}
    assert "alpha  redeploy  --force" in plan.stdout
    assert "0 to create, 3 to redeploy (2 snapshots lost), 0 to update live, 0 unchanged" in plan.stdout


def test_deploy_prints_the_plan_it_applies(fake_modal, catalog: Path) -> None:
    assert fleet("deploy", "alpha").exit_code == 0
    edit(catalog, "alpha", scaling={"max_containers": 4})
    result = fleet("deploy", "--all")
    head = result.stdout.split("\n\n")[0]
    assert head.splitlines()[1:4] == [
        "alpha  update live  scaling.max_containers: 1 -> 4",
        "beta   create       not deployed",
        "gamma  create       not deployed",
    ]
    assert head.splitlines()[-1] == "2 to create, 0 to redeploy (0 snapshots lost), 1 to update live, 0 unchanged"


# --- state never claims what is not deployed ------------------------------------------------------------


def test_failed_final_tag_write_leaves_the_app_pending_so_a_revert_is_not_unchanged(fake_modal, catalog: Path) -> None:
    assert fleet("deploy", "--all").exit_code == 0
    original = (catalog / "alpha.yaml").read_text()
    edit(catalog, "alpha", vllm={"args": ["--max-num-seqs", "8"]})
    fake_modal.fail_set_tags_for("fleet-alpha", "tag service unavailable", calls=(2,))  # 1: pending mark, 2: final
    result = fleet("deploy", "alpha")
    assert result.exit_code == 1
    assert "error: alpha: deployed, but recording its state failed (InvalidError: tag service unavailable)" in result.stderr
    assert fake_modal.app("fleet-alpha").tags[TAG_SPEC_HASH] == "pending"
    (catalog / "alpha.yaml").write_text(original)  # back to what the recorded hash said before
    plan = fleet("plan", "--all")
    assert plan_rows(plan)["alpha"] == "redeploy"  # Modal runs the edited version: never "unchanged"
    assert "state: pending -> a deploy did not record its end" in plan.stdout
    fake_modal.clear_failures()
    fake_modal._reset_tags()
    assert fleet("deploy", "alpha").exit_code == 0
    assert set(plan_rows(fleet("plan", "--all")).values()) == {"unchanged"}


def test_failed_pending_mark_deploys_nothing(fake_modal, catalog: Path) -> None:
    assert fleet("deploy", "--all").exit_code == 0
    edit(catalog, "alpha", vllm={"args": ["--max-num-seqs", "8"]})
    recorded = dict(fake_modal.app("fleet-alpha").tags)
    fake_modal.fail_set_tags_for("fleet-alpha", "tag service unavailable", calls=(1,))
    fake_modal.requests.clear()
    result = fleet("deploy", "alpha")
    assert result.exit_code == 1
    assert "could not mark the app pending before deploying (InvalidError: tag service unavailable); nothing was deployed" in result.stderr
    assert fake_modal.calls("AppPublish") == []
    assert fake_modal.app("fleet-alpha").tags == recorded  # still true: Modal runs what they say
    assert plan_rows(fleet("plan", "alpha"))["alpha"] == "redeploy"


def test_failed_publish_of_a_new_app_is_never_taken_for_deployed(fake_modal, catalog: Path) -> None:
    fake_modal.fail_deploy_for("fleet-beta", "GPU quota exceeded for H100")
    assert fleet("deploy", "--all").exit_code == 1
    fake_modal.clear_failures()
    assert plan_rows(fleet("plan", "--all"))["beta"] in ("create", "redeploy")


def test_failed_weight_prefetch_is_retried_alone_by_the_next_deploy(fake_modal, catalog: Path) -> None:
    fake_modal.fail_call_for("fleet-gamma", "download_weights", "503 hub unavailable")
    assert fleet("deploy", "--all").exit_code == 1
    assert fake_modal.app("fleet-gamma").tags["fleet-weights"] == "pending"
    plan = fleet("plan", "--all")
    assert plan_rows(plan)["gamma"] == "fetch weights"
    assert plan.stdout.splitlines()[-1].endswith("2 unchanged, 1 to fetch weights")
    fake_modal.clear_failures()
    fake_modal.requests.clear()
    fake_modal.function_calls.clear()
    result = fleet("deploy", "--all")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "gamma  fetch weights  weights fetched" in result.stdout
    assert fake_modal.calls("AppPublish") == [] and fake_modal.function_calls == [("fleet-gamma", "download_weights")]
    assert fake_modal.app("fleet-gamma").tags["fleet-weights"] == "ok"
    assert fleet("plan", "--all", "--detailed-exitcode").exit_code == 0


def test_skip_weights_is_recorded_and_not_nagged_about(fake_modal, catalog: Path) -> None:
    assert fleet("deploy", "alpha", "--skip-weights").exit_code == 0
    assert fake_modal.app("fleet-alpha").tags["fleet-weights"] == "skipped"
    assert plan_rows(fleet("plan", "alpha"))["alpha"] == "unchanged"


# --- one deploy per fleet at a time -----------------------------------------------------------------------


def _fleet_process(catalog: Path, *args: str):
    import os
    import subprocess
    import sys

    fleet_bin = str(Path(sys.executable).with_name("fleet"))
    command = [fleet_bin]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    return subprocess.Popen(
        [*command, *args, "--catalog", str(catalog)], cwd=catalog.parent, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def test_two_deploys_at_once_one_waits_out_with_the_holder_named(fake_modal, catalog: Path) -> None:
    fake_modal.deploy_delay = 3.0
    first = _fleet_process(catalog, "deploy", "--all")
    deadline = time.monotonic() + 30
    while not fake_modal.dict_entries("fleet-deploy-locks") and time.monotonic() < deadline:
        time.sleep(0.05)
    second = _fleet_process(catalog, "deploy", "--all")
    out2, err2 = second.communicate(timeout=60)
    out1, err1 = first.communicate(timeout=60)
    assert first.returncode == 0, out1 + err1
    assert second.returncode == 1
    assert "error: another `fleet deploy` of fleet 'fleet' is running: " in err2
    assert f"(pid {first.pid}) since " in err2 and "rerun with --break-lock" in err2
    assert len(fake_modal.calls("AppPublish")) == 3  # each app once: no snapshot lost twice
    assert fake_modal.dict_entries("fleet-deploy-locks") == {}  # released on exit


def test_lock_is_released_after_a_failed_deploy(fake_modal, catalog: Path) -> None:
    fake_modal.fail_deploy_for("fleet-beta", "GPU quota exceeded for H100")
    assert fleet("deploy", "--all").exit_code == 1
    assert fake_modal.dict_entries("fleet-deploy-locks") == {}


def _hold_lock(age_s: float) -> None:
    import modal

    from fleet.state import LOCK_DICT, LockHolder

    holder = LockHolder("ci", "runner-7", 4242, time.time() - age_s, "t0k3n")
    modal.Dict.from_name(LOCK_DICT, create_if_missing=True).put("fleet", holder.as_dict())


def test_stale_lock_is_broken_only_on_request_and_only_when_stale(fake_modal, catalog: Path) -> None:
    _hold_lock(age_s=120)
    refused = fleet("deploy", "alpha")
    assert refused.exit_code == 1
    assert "is running: ci@runner-7 (pid 4242) since " in refused.stderr and "(2 min ago)" in refused.stderr
    young = fleet("deploy", "alpha", "--break-lock")
    assert young.exit_code == 1 and "it is not stale yet (--break-lock needs it older than 60 min)" in young.stderr
    assert fake_modal.calls("AppPublish") == []

    _hold_lock(age_s=2 * 3600)
    assert fleet("deploy", "alpha").exit_code == 1
    broken = fleet("deploy", "alpha", "--break-lock")
    assert broken.exit_code == 0, broken.stdout + broken.stderr
    assert len(fake_modal.calls("AppPublish")) == 1
    assert fake_modal.dict_entries("fleet-deploy-locks") == {}


# --- Ctrl-C means stop -------------------------------------------------------------------------------------


@pytest.fixture
def eight_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return write_catalog(tmp_path / "catalog", {f"m{i}": model(f"m{i}") for i in range(8)})


def _interrupt_when_publishing(fake, process, *, in_flight: int, times: int, sig: int | None = None) -> None:
    import signal

    deadline = time.monotonic() + 60
    while len(fake.calls("AppPublish")) < in_flight and time.monotonic() < deadline:
        time.sleep(0.02)
    for _ in range(times):
        process.send_signal(sig or signal.SIGINT)
        time.sleep(0.3)


def test_ctrl_c_stops_queueing_lets_in_flight_finish_and_exits_130(fake_modal, eight_models: Path) -> None:
    fake_modal.deploy_delay = 2.0
    process = _fleet_process(eight_models, "deploy", "--all", "--parallel", "4")
    _interrupt_when_publishing(fake_modal, process, in_flight=4, times=1)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, out + err
    assert "interrupted: nothing new starts; waiting for the deploys in flight" in err
    assert "cannot schedule new futures" not in out + err and "Traceback" not in err
    table = out.split("\n\n")[-2].splitlines()
    results = [line.split()[2] for line in table[1:]]
    assert sorted(results) == ["cancelled"] * 4 + ["deployed"] * 4
    assert out.strip().splitlines()[-1] == (
        "4 deployed, 0 updated live, 0 unchanged (skipped), 0 failed, 4 not done (interrupted)"
    )
    assert len(fake_modal.calls("AppPublish")) == 4  # nothing queued started after Ctrl-C
    assert fake_modal.dict_entries("fleet-deploy-locks") == {}
    # the interrupted run's apps are recorded as they are: 4 deployed (weights still to fetch), 4 to create
    plan = fleet("plan", "--all", "--catalog", str(eight_models))
    assert sorted(plan_rows(plan).values()) == ["create"] * 4 + ["fetch weights"] * 4


def test_second_ctrl_c_stops_waiting_without_a_traceback(fake_modal, eight_models: Path) -> None:
    fake_modal.deploy_delay = 20.0
    process = _fleet_process(eight_models, "deploy", "--all", "--parallel", "4")
    started = time.monotonic()
    _interrupt_when_publishing(fake_modal, process, in_flight=4, times=2)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, out + err
    assert time.monotonic() - started < 15  # did not wait out the 20 s deploys
    assert "interrupted again: not waiting for the deploys in flight" in err
    assert "cannot schedule new futures" not in out + err and "Traceback" not in err
    results = sorted(line.split()[2] for line in out.split("\n\n")[-2].splitlines()[1:])
    assert results == ["cancelled"] * 4 + ["interrupted"] * 4
    assert fake_modal.dict_entries("fleet-deploy-locks") == {}
    assert len(fake_modal.calls("AppPublish")) == 4


def test_modal_errors_are_translated_in_the_seam(fake_modal, catalog: Path) -> None:
    result = fleet("plan", "--all", "--env", "no-such-env")
    assert result.exit_code == 1
    assert "error: Modal: NotFoundError: Environment 'no-such-env' not found" in result.stderr
    assert "Traceback" not in result.stderr


def test_deploy_json_reports_the_plan_and_each_outcome(fake_modal, catalog: Path) -> None:
    result = fleet("deploy", "alpha", "--json")
    assert result.exit_code == 0, result.stdout + result.stderr
    data = __import__("json").loads(result.stdout)
    assert data["plan"]["summary"]["create"] == 1 and data["interrupted"] is False
    assert [(o["name"], o["action"], o["result"]) for o in data["outcomes"]] == [("alpha", "create", "deployed")]
    assert "[alpha] deploying (create)" in result.stderr  # progress goes to stderr with --json


def test_status_says_why_an_app_is_out_of_date(fake_modal, catalog: Path) -> None:
    assert fleet("deploy", "alpha").exit_code == 0
    edit(catalog, "alpha", scaling={"max_containers": 2})
    rows = {r["name"]: r for r in __import__("json").loads(fleet("status", "--json").stdout)}
    assert rows["alpha"]["state"] == "scaling out of date"
    assert rows["alpha"]["why"] == "scaling.max_containers: 1 -> 2"


def test_apps_deployed_by_an_older_fleet_cost_no_snapshot(fake_modal, catalog: Path) -> None:
    """Before this plan, tags held only the hash of the whole source: a current app is recognised by it,
    kept, and its record rewritten; a changed one is a redeploy."""
    from fleet.render import legacy_spec_hash

    assert fleet("deploy", "alpha", "beta").exit_code == 0
    for name in ("alpha", "beta"):
        source = (catalog.parent / f"build/apps/fleet_{name}.py").read_text()
        fake_modal.app(f"fleet-{name}").tags = {
            "fleet-managed": "true", "fleet-catalog-file": f"{name}.yaml", TAG_SPEC_HASH: legacy_spec_hash(source),
        }
    edit(catalog, "beta", scaling={"max_containers": 2})
    plan = fleet("plan", "alpha", "beta")
    assert "alpha  unchanged  state: recorded by an older fleet -> rewritten (no deploy)" in plan.stdout
    assert "beta   redeploy   state: recorded by an older fleet -> the rendered app changed" in plan.stdout
    fake_modal.requests.clear()
    assert fleet("deploy", "alpha").exit_code == 0
    assert fake_modal.calls("AppPublish") == []
    assert fake_modal.app("fleet-alpha").tags["fleet-scaling"] == "0.1.600"
    assert plan_rows(fleet("plan", "alpha"))["alpha"] == "unchanged"
    assert "older fleet" not in fleet("plan", "alpha").stdout


def test_usage_error_with_detailed_exitcode_is_not_taken_for_changes(catalog: Path) -> None:
    result = fleet("plan", "alpha", "--all", "--detailed-exitcode")
    assert result.exit_code == 1 and "give model NAMES or --all, not both" in result.stderr
    assert fleet("plan", "--no-such-option", "--detailed-exitcode").exit_code == 1
    assert fleet("plan", "alpha", "--all").exit_code == 2  # without it, click's usual code


def test_plan_of_some_models_reads_only_their_tags(fake_modal, catalog: Path) -> None:
    assert fleet("deploy", "--all").exit_code == 0
    fake_modal.requests.clear()
    assert plan_rows(fleet("plan", "alpha")) == {"alpha": "unchanged"}
    assert len(fake_modal.calls("AppGetTags")) == 1


def test_sigterm_from_a_cancelled_ci_job_stops_like_ctrl_c(fake_modal, eight_models: Path) -> None:
    import signal

    fake_modal.deploy_delay = 2.0
    process = _fleet_process(eight_models, "deploy", "--all", "--parallel", "4")
    _interrupt_when_publishing(fake_modal, process, in_flight=4, times=1, sig=signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, out + err
    assert len(fake_modal.calls("AppPublish")) == 4 and "Traceback" not in err
    assert out.strip().splitlines()[-1].endswith("4 not done (interrupted)")


def test_live_update_whose_record_fails_is_applied_again_not_forgotten(fake_modal, catalog: Path) -> None:
    assert fleet("deploy", "--all").exit_code == 0
    original = (catalog / "alpha.yaml").read_text()
    edit(catalog, "alpha", scaling={"max_containers": 3})
    fake_modal.fail_set_tags_for("fleet-alpha", "tag service unavailable", calls=(2,))  # 1: pending, 2: final
    result = fleet("deploy", "alpha")
    assert result.exit_code == 1 and "error: alpha: InvalidError: tag service unavailable" in result.stderr
    assert len(fake_modal.calls("FunctionUpdateSchedulingParams")) == 1  # Modal runs max 3 now
    assert fake_modal.app("fleet-alpha").tags["fleet-scaling"] == "pending"
    (catalog / "alpha.yaml").write_text(original)  # reverted: the running override (3) is not what it says (1)
    plan = fleet("plan", "alpha")
    assert plan_rows(plan)["alpha"] == "update live"  # never "unchanged" while Modal runs another value
    fake_modal._reset_tags()
    assert fleet("deploy", "alpha").exit_code == 0
    assert fake_modal.calls("FunctionUpdateSchedulingParams")[-1].settings.max_containers == 1
    assert plan_rows(fleet("plan", "alpha"))["alpha"] == "unchanged"


def test_deploy_says_what_modal_warned_about_and_what_to_ask_for_snapshots(fake_modal, tmp_path: Path) -> None:
    """GPU snapshots are an alpha feature: when Modal's answer to a deploy says it ignored the option, the
    deploy says so plainly, with what to ask Modal for, instead of leaving slow cold starts unexplained."""
    catalog = write_catalog(tmp_path / "catalog", {"alpha": model("alpha", snapshot=True)})
    fake_modal.publish_warnings["fleet-alpha"] = ["GPU memory snapshots are not enabled for this workspace"]
    result = CliRunner().invoke(main, ["deploy", "--all", "--skip-weights", "--catalog", str(catalog),
                                       "--out", str(tmp_path / "apps")])
    assert result.exit_code == 0, result.output
    note = [line for line in result.stdout.splitlines() if line.startswith("note: alpha: ")]
    assert note == [
        "note: alpha: Modal: GPU memory snapshots are not enabled for this workspace (GPU memory snapshots are an "
        "alpha feature that Modal enables per workspace: if cold starts stay slow, ask Modal (support or your "
        "shared Slack channel) to enable GPU memory snapshots for this workspace)"
    ]
    report = CliRunner().invoke(main, ["deploy", "--all", "--force", "--skip-weights", "--json", "--catalog",
                                       str(catalog), "--out", str(tmp_path / "apps")])
    [outcome] = json.loads(report.stdout)["outcomes"]
    assert outcome["notes"] == [note[0].removeprefix("note: alpha: ")]
