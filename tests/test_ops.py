"""Operating the fleet: live status, logs, cost, rollback, and prime reading the logs.

Pure parts (redaction, lifecycle lines, cold starts, snapshot verdicts, cost per model and per team) on plain
values; the commands with the real `modal` client against the fake control plane (tests/fake_modal_ops.py).
"""

from __future__ import annotations

import csv
import io
import json
import threading
import time
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result
from modal_proto import api_pb2

from catalog_builder import model, write_catalog
from fake_modal_ops import RESTORING, SEGFAULT, SNAPSHOT_CREATED
from fleet import observe
from fleet.cli import main
from fleet.modal_api import BillingRow, LogLine
from fleet.render import TAG_MODEL, TAG_PREFIX, TAG_SPEC_HASH
from test_probe import KEY as PROBE_KEY
from test_probe import StandIn

UTC = timezone.utc


def fleet(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=input)


@pytest.fixture
def catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return write_catalog(
        tmp_path / "catalog",
        {
            "alpha": model("alpha", snapshot=True),
            "beta": model("beta", snapshot=False, gpu={"type": "A100-80GB", "count": 2}),
            "gamma": model("gamma", snapshot=True),
        },
    )


@pytest.fixture
def deployed(fake_modal, catalog: Path) -> Any:
    result = fleet("deploy", "--all", "--skip-weights")
    assert result.exit_code == 0, result.output
    return fake_modal


def line(text: str, container: str = "ta-1", at: float = 0.0, source: str = "stdout") -> LogLine:
    return LogLine(datetime.fromtimestamp(1_800_000_000 + at, UTC), text, container, source)


# --- redaction: a key in a log line never reaches the output ----------------------------------------------

KEY = "sk-fleet-7d9f2a61c0b84e5f"
LEAKY_LINES = [
    f"INFO: POST /v1/chat/completions headers={{'authorization': 'Bearer {KEY}'}}",
    f"Authorization: Bearer {KEY}",
    f"curl -H 'Authorization: Bearer {KEY}' https://x.modal.run/v1/models",
    f"non-default args: {{'model': '/m', 'api_key': ['{KEY}', 'k2-{KEY}'], 'port': 8000}}",
    f"vllm serve /m --api-key {KEY} other-{KEY} --port 8000",
    f"--api-key={KEY}",
    f"api-key: {KEY}",
    f"env VLLM_API_KEY={KEY},second-{KEY} python -m vllm",
    f"HF_TOKEN={KEY}",
    f"HUGGING_FACE_HUB_TOKEN: {KEY}",
    f"token={KEY}&x=1",
    f'{{"password": "{KEY}"}}',
    f"downloading with hf_{KEY[3:].replace('-', '')}abcdef",
    f"modal token secret as-{KEY[3:].replace('-', '')}ABCDEFGH",
]


@pytest.mark.parametrize("text", LEAKY_LINES)
def test_redact_removes_every_key_shape(text: str) -> None:
    out = observe.redact(text)
    assert KEY not in out and KEY[3:] not in out and KEY[3:].replace("-", "") not in out
    assert observe.REDACTED in out


def test_redact_keeps_ordinary_lines_and_the_runtimes_marker() -> None:
    plain = "INFO 11-29 04:50:01 [loggers.py] Avg prompt throughput: 12.3 tokens/s, completion_tokens=5"
    assert observe.redact(plain) == plain
    assert observe.redact("[fleet] starting vLLM: python -m vllm --model /m") == "[fleet] starting vLLM: python -m vllm --model /m"
    assert observe.redact("VLLM_API_KEY=[REDACTED]") == "VLLM_API_KEY=[REDACTED]"


# --- lifecycle lines and cold starts ------------------------------------------------------------------------


def test_lifecycle_marks_modal_and_runtime_lines() -> None:
    assert observe.lifecycle(RESTORING) == "restore"
    assert observe.lifecycle(SNAPSHOT_CREATED) == "snapshot"  # the snapshot's own first restore is not a cold start's
    assert observe.lifecycle(SEGFAULT) == "crash" and observe.exit_code(SEGFAULT) == 139
    assert observe.lifecycle("[fleet] starting vLLM: python -m vllm") == "boot"
    assert observe.lifecycle("[fleet] warm-up done in 3.1s") == "warm-up"
    assert observe.lifecycle("[fleet] vLLM asleep (level 1)") == "sleep"
    assert observe.lifecycle("[fleet] vLLM awake in 0.41s") == "wake"
    assert observe.lifecycle("INFO: 200 OK") is None


def test_cold_starts_group_lines_by_container() -> None:
    lines = [
        line("Creating GPU memory snapshot for Function.", "ta-1", 0, "system"),
        line("[fleet] starting vLLM: ...", "ta-1", 1),
        line(SNAPSHOT_CREATED, "ta-1", 200, "system"),
        line(RESTORING, "ta-2", 300, "system"),
        line(SEGFAULT, "ta-2", 304, "system"),
        line(RESTORING, "ta-3", 400, "system"),
        line("[fleet] vLLM awake in 0.5s", "ta-3", 401),
        line("INFO: 200 OK", "ta-4", 500),  # a container that started before the window
        line("[fleet] starting vLLM: ...", "", 600),  # no container id: cannot be grouped
    ]
    starts = observe.cold_starts(reversed(lines))
    assert [(s.container, s.kind, s.exit_code) for s in starts] == [
        ("ta-1", observe.SNAPSHOTTED, None), ("ta-2", observe.CRASHED, 139), ("ta-3", observe.RESTORED, None)
    ]


def starts_of(*kinds: str) -> list[observe.ColdStart]:
    return [observe.ColdStart(f"ta-{i}", datetime(2026, 11, 29, 1, i, tzinfo=UTC), k) for i, k in enumerate(kinds)]


def spec(snapshot: bool = True) -> Any:
    class Spec:
        pass

    s = Spec()
    s.snapshot = snapshot  # type: ignore[attr-defined]
    return s


def test_snapshot_verdicts() -> None:
    verdict = observe.snapshot_verdict
    assert verdict(spec(False), starts_of(observe.BOOTED)).state == observe.OFF
    assert verdict(spec(), []).state == observe.NONE_YET
    assert verdict(spec(), starts_of(observe.BOOTED, observe.SNAPSHOTTED)).state == observe.NONE_YET
    assert verdict(spec(), starts_of(observe.SNAPSHOTTED, observe.RESTORED)).state == observe.IN_USE
    failing = verdict(spec(), starts_of(observe.RESTORED, observe.CRASHED, observe.CRASHED))
    assert failing.state == observe.FAILING and "fleet deploy --force" in failing.note
    one_crash = verdict(spec(), starts_of(observe.RESTORED, observe.CRASHED))
    assert one_crash.state == observe.IN_USE  # one crash is noise; the last start that got through restored
    never = verdict(spec(), starts_of(*[observe.BOOTED] * observe.COLD_STARTS_BEFORE_ALARM))
    assert never.state == observe.NOT_RESTORING and "ask Modal" in never.note and "alpha" in never.note


# --- fleet status: the live columns -------------------------------------------------------------------------


def status_json() -> dict[str, Any]:
    result = fleet("status", "--json")
    assert result.exit_code == 0, result.output
    return {row["name"]: row for row in json.loads(result.stdout)}


def test_status_shows_live_columns_from_stats_and_logs(deployed) -> None:
    now = time.time()
    deployed.set_app_stats("fleet-alpha", requests_ok=40, requests_failed=2, containers=1)
    deployed.add_container("fleet-alpha")
    deployed.add_cold_start("fleet-alpha", "snapshot", container="ta-a1", at=now - 3000)
    deployed.add_cold_start("fleet-alpha", "restore", container="ta-a2", at=now - 600)
    rows = status_json()
    alpha = rows["alpha"]["live"]
    assert alpha["containers"] == 1 and alpha["requests_last_hour"] == 42 and alpha["errors_last_hour"] == 2
    assert alpha["last_cold_start"]["kind"] == "restored" and alpha["last_cold_start"]["container"] == "ta-a2"
    assert alpha["snapshot"] == "in use"

    text = fleet("status")
    header, *lines = text.stdout.splitlines()
    assert header.split()[:9] == ["NAME", "STATE", "GPU", "DEPLOYED", "AT", "CONTAINERS", "REQ/1H", "ERR/1H", "LAST"]
    first = lines[0]
    assert first.startswith("alpha") and " 1  " in first and " 42 " in first and "restored" in first and "in use" in first


def test_a_model_with_no_data_shows_no_data_not_zero(deployed) -> None:
    rows = status_json()
    gamma = rows["gamma"]["live"]
    assert gamma["requests_last_hour"] is None and gamma["errors_last_hour"] is None
    assert gamma["last_cold_start"] is None and gamma["snapshot"] == "none yet"
    assert gamma["containers"] == 0  # the listing of running containers is an answer: none run
    assert rows["beta"]["live"]["snapshot"] == "off"
    text = fleet("status").stdout
    gamma_line = next(ln for ln in text.splitlines() if ln.startswith("gamma"))
    assert gamma_line.count("no data") == 3  # requests, errors, last cold start


def test_status_says_when_restores_crash_or_never_happen(deployed) -> None:
    now = time.time()
    deployed.add_cold_start("fleet-alpha", "snapshot", container="ta-a1", at=now - 900)
    deployed.add_cold_start("fleet-alpha", "crash", container="ta-a2", at=now - 600)
    deployed.add_cold_start("fleet-alpha", "crash", container="ta-a3", at=now - 300)
    for i in range(observe.COLD_STARTS_BEFORE_ALARM):
        deployed.add_cold_start("fleet-gamma", "boot", container=f"ta-g{i}", at=now - 1000 + 60 * i)
    result = fleet("status")
    assert result.exit_code == 0
    assert "note: alpha: snapshot failing: the last 2 restores crashed (exit code 139)" in result.stderr
    assert "note: gamma: snapshot not restoring: 5 cold starts in the logs and none restored" in result.stderr
    assert "ask Modal" in result.stderr
    rows = status_json()
    assert rows["alpha"]["live"]["snapshot"] == "failing" and rows["gamma"]["live"]["snapshot"] == "not restoring"


def test_status_survives_a_failing_stats_call(deployed) -> None:
    deployed.stats_unavailable = True
    result = fleet("status", "--json")
    assert result.exit_code == 0, result.output
    alpha = {r["name"]: r for r in json.loads(result.stdout)}["alpha"]["live"]
    assert alpha["requests_last_hour"] is None and alpha["problems"]
    assert "stats of fleet-alpha" in alpha["problems"][0]


def test_not_deployed_models_have_no_live_columns(fake_modal, catalog: Path) -> None:
    rows = status_json()
    assert rows["alpha"]["live"] is None
    assert fake_modal.calls("AppGetTimeRangeStats") == []


# --- fleet logs ---------------------------------------------------------------------------------------------


def test_logs_mark_lifecycle_lines_and_never_print_a_key(deployed) -> None:
    now = time.time()
    deployed.add_cold_start("fleet-alpha", "snapshot", container="ta-1", at=now - 1200)
    for i, text in enumerate(LEAKY_LINES):
        deployed.add_log("fleet-alpha", text, container="ta-1", at=now - 1000 + i)
    deployed.add_cold_start("fleet-alpha", "crash", container="ta-2", at=now - 100)
    deployed.add_log("fleet-alpha", "old line", container="ta-0", at=now - 3 * 3600)

    result = fleet("logs", "alpha")
    assert result.exit_code == 0, result.output
    assert KEY not in result.output and KEY[3:].replace("-", "") not in result.output
    assert "old line" not in result.stdout  # --since defaults to the last hour
    lines = result.stdout.splitlines()
    assert len(lines) == 7 + len(LEAKY_LINES) + 2  # the snapshotting start, the leaky lines, the crash
    assert any(">> SNAPSHOT" in ln and "Creating GPU memory snapshot" in ln for ln in lines)
    assert any(">> CRASH" in ln and "exit code: 139" in ln and "ta-2" in ln for ln in lines)
    assert any(">> BOOT" in ln for ln in lines) and any(">> SLEEP" in ln for ln in lines)

    older = fleet("logs", "alpha", "--since", "4h", "--json")
    rows = [json.loads(x) for x in older.stdout.splitlines()]
    assert rows[0]["text"] == "old line" and rows[0]["step"] is None
    assert {r["step"] for r in rows} >= {"snapshot", "boot", "restore", "crash"}
    assert KEY not in older.stdout


def test_logs_follow_streams_until_the_app_stops(deployed) -> None:
    deployed.add_log("fleet-alpha", f"Authorization: Bearer {KEY}", container="ta-1")
    deployed.add_cold_start("fleet-alpha", "restore", container="ta-2", at=time.time())

    def stop_later() -> None:  # the stream ends with `app_done` once the app is stopped
        time.sleep(1.0)
        deployed.add_log("fleet-alpha", "a line while following", container="ta-2")
        time.sleep(0.5)
        deployed.app("fleet-alpha").state = api_pb2.APP_STATE_STOPPED

    stopper = threading.Thread(target=stop_later)
    stopper.start()
    started = time.monotonic()
    result = fleet("logs", "alpha", "--follow")
    stopper.join()
    assert 1.5 <= time.monotonic() - started < 10
    assert "a line while following" in result.stdout
    assert result.exit_code == 0, result.output
    assert "Authorization: Bearer [REDACTED]" in result.stdout and KEY not in result.stdout
    assert ">> RESTORE" in result.stdout and ">> WAKE" in result.stdout
    assert deployed.calls("AppGetLogs")


def test_logs_of_a_quiet_model_say_how_to_look_further_back(deployed) -> None:
    deployed.add_log("fleet-gamma", "from yesterday", container="ta-1", at=time.time() - 86400 + 60)
    quiet = fleet("logs", "gamma")
    assert quiet.exit_code == 0 and quiet.stdout == "" and "try --since 1d" in quiet.stderr
    assert "from yesterday" in fleet("logs", "gamma", "--since", "1d").stdout


def test_logs_usage_errors(deployed) -> None:
    assert fleet("logs", "alpha", "--follow", "--since", "1h").exit_code == 2
    bad = fleet("logs", "alpha", "--since", "yesterday-ish")
    assert bad.exit_code == 1 and "--since 'yesterday-ish': give a duration" in bad.stderr
    missing = fleet("logs", "nope")
    assert missing.exit_code == 1 and "nope" in missing.stderr and "Traceback" not in missing.output


# --- fleet cost ---------------------------------------------------------------------------------------------


def row(app: str, day: date, resources: dict[str, str], tags: dict[str, str] | None = None) -> BillingRow:
    by = {k: Decimal(v) for k, v in resources.items()}
    return BillingRow("ap-x", app, "main", datetime(day.year, day.month, day.day, tzinfo=UTC), sum(by.values(), Decimal()), by, tags or {})


def test_model_costs_group_by_tags_then_by_app_name() -> None:
    rows = [
        row("fleet-alpha", date(2026, 11, 1), {"GPU (L4)": "2.00", "CPU": "0.10", "Memory": "0.05"},
            {TAG_MODEL: "alpha", TAG_PREFIX: "fleet"}),
        row("fleet-alpha", date(2026, 11, 2), {"L4": "1.00", "CPU": "0.05"}, {TAG_MODEL: "alpha", TAG_PREFIX: "fleet"}),
        row("fleet-beta", date(2026, 11, 1), {"A100-80GB": "10.00"}),  # deployed before the tags existed
        row("renamed-app", date(2026, 11, 1), {"GPU": "3.00"}, {TAG_MODEL: "gamma", TAG_PREFIX: "fleet"}),
        row("fleet-x", date(2026, 11, 1), {"GPU": "9.00"}, {TAG_MODEL: "x", TAG_PREFIX: "other"}),  # another fleet
        row("notebook", date(2026, 11, 1), {"CPU": "5.00"}),  # not a fleet app
    ]
    costs = {c.name: c for c in observe.model_costs(rows, "fleet", ["alpha", "beta"])}
    assert set(costs) == {"alpha", "beta", "gamma"}
    assert costs["alpha"].gpu_usd == Decimal("3.00") and costs["alpha"].other_usd == Decimal("0.20")
    assert costs["beta"].gpu_usd == Decimal("10.00") and costs["beta"].in_catalog
    assert not costs["gamma"].in_catalog
    assert [c.name for c in observe.model_costs(rows, "fleet", [])] == ["beta", "alpha", "gamma"]


def test_split_by_team_shares_each_days_cost_by_tokens() -> None:
    alpha = observe.ModelCost("alpha", "fleet-alpha", Decimal("9"), Decimal("1"), True,
                              ((date(2026, 11, 1), Decimal("6")), (date(2026, 11, 2), Decimal("4"))))
    beta = observe.ModelCost("beta", "fleet-beta", Decimal("3"), Decimal("0"), True, ((date(2026, 11, 1), Decimal("3")),))
    usage = [
        observe.UsageRow("search", "alpha", date(2026, 11, 1), 100, 100),
        observe.UsageRow("support", "alpha", date(2026, 11, 1), 300, 300),
        observe.UsageRow("search", "alpha", date(2026, 11, 2), 10, 0),
        observe.UsageRow("support", "gamma", date(2026, 11, 1), 10, 0),  # a model with no cost: nothing to share
    ]
    split = {(t.team, t.model): t for t in observe.split_by_team([alpha, beta], usage)}
    assert split[("search", "alpha")].usd == Decimal("1.5") + Decimal("4")
    assert split[("support", "alpha")].usd == Decimal("4.5") and split[("support", "alpha")].tokens == 600
    assert split[(observe.NO_USAGE, "beta")].usd == Decimal("3")  # cost and no tokens: shown, not dropped
    assert sum(t.usd for t in split.values()) == Decimal("13")
    assert observe.split_by_team([alpha], []) == [observe.TeamCost(observe.NO_USAGE, "alpha", 0, Decimal("10"))]


def test_periods_are_whole_utc_days() -> None:
    now = datetime(2026, 11, 29, 15, 30, tzinfo=UTC)
    assert observe.period("last month", None, now) == (datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC))
    assert observe.period(None, None, now) == (datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))
    assert observe.period("last week", None, now)[0] == datetime(2026, 11, 16, tzinfo=UTC)  # a Monday
    assert observe.period(None, "2026-11-20", now) == (datetime(2026, 11, 20, tzinfo=UTC), datetime(2026, 11, 30, tzinfo=UTC))
    assert observe.period(None, "3d", now)[0] == datetime(2026, 11, 26, tzinfo=UTC)
    with pytest.raises(observe.FleetError, match="one of 'today'"):
        observe.period("last fortnight", None, now)


def test_cost_reads_the_billing_report_by_tags(deployed) -> None:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    assert deployed.app("fleet-alpha").tags[TAG_MODEL] == "alpha"  # every app carries the tags billing groups by
    deployed.add_billing("fleet-alpha", today, {"GPU (L4)": "4.00", "CPU": "0.25", "Memory": "0.10"})
    deployed.add_billing("fleet-beta", today, {"GPU (A100-80GB)": "20.00", "CPU": "1.00"})
    deployed.add_billing("someone-elses-app", today, {"CPU": "7.00"})

    result = fleet("cost", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["billed"] and report["total_usd"] == "25.35"
    models = {m["model"]: m for m in report["models"]}
    assert models["beta"] == {"model": "beta", "app": "fleet-beta", "gpu_usd": "20.00", "other_usd": "1.00",
                              "total_usd": "21.00", "in_catalog": True}
    assert models["alpha"]["gpu_usd"] == "4.00" and models["alpha"]["other_usd"] == "0.35"
    rates = {r["model"]: r for r in report["rates"]}
    assert rates["beta"] == {"model": "beta", "gpu": "A100-80GB:2", "usd_per_hour": "5.00", "source": "Modal billing rates"}
    assert report["teams"] == []  # no usage store connected: no split
    request = deployed.calls("WorkspaceBillingReport")[0]
    assert set(request.tag_names) == {TAG_MODEL, TAG_PREFIX} and request.resolution == "d"

    table = fleet("cost")
    assert table.exit_code == 0
    lines = table.stdout.splitlines()
    assert lines[1].split() == ["MODEL", "GPU", "GPU", "$", "OTHER", "$", "TOTAL", "$", "GPU", "$/H"]
    assert lines[2].split() == ["beta", "A100-80GB:2", "20.00", "1.00", "21.00", "5.00"]
    assert "total: $25.35" in table.stdout and "someone" not in table.stdout
    assert "per team: no gateway usage recorded for this period (the split needs `gateway: {enabled: true}`)" in table.stdout

    as_csv = list(csv.reader(io.StringIO(fleet("cost", "--csv").stdout)))
    assert as_csv[0] == ["model", "app", "gpu_usd", "other_usd", "total_usd", "gpu_usd_per_hour", "rate_source"]
    assert as_csv[1][:5] == ["beta", "fleet-beta", "20.00", "1.00", "21.00"]
    assert [r[0] for r in as_csv[1:]] == ["beta", "alpha", "gamma"]  # gamma: no cost, its rate still listed


def test_cost_splits_per_team_by_the_gateways_usage(deployed, catalog: Path) -> None:
    """The usage the gateway wrote into its Modal Dict (fleet/gateway/usage.py) splits each model's bill."""
    from fleet.gateway.store import ModalDictStore
    from fleet.gateway.usage import UsageMeter

    settings = catalog / "_fleet.yaml"
    settings.write_text(settings.read_text() + "gateway: {enabled: true, usage_dict: fleet-usage}\n")
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    deployed.add_billing("fleet-alpha", today, {"GPU (L4)": "3.00"})
    for instance, (team, prompt, completion) in enumerate([("search", 10, 20), ("ads", 40, 0), ("ads", 20, 0)]):
        meter = UsageMeter(ModalDictStore("fleet-usage"), instance=f"container-{instance}")
        meter.record(team, "alpha", prompt_tokens=prompt, completion_tokens=completion)
        meter.record("ads", "alpha", now=(today - timedelta(days=400)).timestamp())  # outside the period
        meter.flush()
    result = fleet("cost")
    assert result.exit_code == 0, result.output
    assert "Per team" in result.stdout
    teams = {ln.split()[0]: ln.split()[-1] for ln in result.stdout.splitlines()[-3:] if ln.split()[1:2] == ["alpha"]}
    assert teams == {"ads": "2.00", "search": "1.00"}
    split = json.loads(fleet("cost", "--json").stdout)["teams"]
    assert split == [{"team": "ads", "model": "alpha", "tokens": 60, "usd": "2.00"},
                     {"team": "search", "model": "alpha", "tokens": 30, "usd": "1.00"}]


def test_cost_without_credentials_shows_the_dated_price_table(catalog: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODAL_TOKEN_ID", raising=False)
    monkeypatch.delenv("MODAL_TOKEN_SECRET", raising=False)
    monkeypatch.setenv("MODAL_CONFIG_PATH", "/nonexistent/modal.toml")
    monkeypatch.setattr("modal.config._user_config", {})
    result = fleet("cost")
    assert result.exit_code == 0, result.output
    assert "no Modal credentials" in result.stderr
    assert "beta   A100-80GB:2  5.00" in result.stdout
    assert "prices of 2026-11-29 (fleet/prices.py)" in result.stdout
    report = json.loads(fleet("cost", "--json").stdout)
    assert report["billed"] is False and report["total_usd"] is None and report["models"] == []


def test_cost_usage_errors(catalog: Path) -> None:
    assert fleet("cost", "--for", "today", "--since", "1d").exit_code == 2
    assert fleet("cost", "--json", "--csv").exit_code == 2
    bad = fleet("cost", "--for", "someday")
    assert bad.exit_code == 1 and "error: --for 'someday': one of" in bad.stderr


# --- fleet rollback -----------------------------------------------------------------------------------------


def redeploy_alpha(catalog: Path) -> None:
    path = catalog / "alpha.yaml"
    entry = yaml.safe_load(path.read_text())
    # a change that needs a redeploy (a scaling change alone is applied live: no new version)
    entry["gpu"] = {**entry["gpu"], "memory_utilization": 0.8}
    path.write_text(yaml.safe_dump(entry))
    assert fleet("deploy", "alpha", "--skip-weights").exit_code == 0


def plan_action(result: Result) -> str:
    [item] = json.loads(result.stdout)["items"]
    return item["action"]


def test_rollback_shows_history_warns_and_marks_the_app_changed(deployed, catalog: Path) -> None:
    redeploy_alpha(catalog)
    assert plan_action(fleet("plan", "alpha", "--json")) == "unchanged"
    result = fleet("rollback", "alpha", "--yes")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["VERSION", "DEPLOYED", "AT", "BY", "CLIENT"]
    assert lines[1].startswith("v2 *") and lines[2].startswith("v1")
    assert "from v2 to v1" in result.stdout and "GPU snapshot is rebuilt" in result.stdout
    assert "alpha: rolled back to v1" in result.stdout
    rollback = deployed.calls("AppRollback")
    assert len(rollback) == 1 and rollback[0].version == 1
    app = deployed.app("fleet-alpha")
    assert app.version == 3 and app.tags[TAG_SPEC_HASH] == "rolled-back-to-v1"
    assert app.tags[TAG_MODEL] == "alpha"  # the other tags are kept
    assert plan_action(fleet("plan", "alpha", "--json")) == "redeploy"  # what runs is not what the catalog says


def test_rollback_asks_first_and_checks_the_version(deployed, catalog: Path) -> None:
    redeploy_alpha(catalog)
    declined = fleet("rollback", "alpha", input="n\n")
    assert declined.exit_code == 1 and "Roll back?" in declined.stdout
    assert deployed.calls("AppRollback") == []
    missing = fleet("rollback", "alpha", "--to", "v9", "--yes")
    assert missing.exit_code == 1 and "no version v9 in the app's history (it has v2, v1)" in missing.stderr
    current = fleet("rollback", "alpha", "--to", "2", "--yes")
    assert current.exit_code == 1 and "v2 is the current deployment" in current.stderr
    assert fleet("rollback", "alpha", "--to", "two").exit_code == 2
    single = fleet("rollback", "gamma", "--yes")
    assert single.exit_code == 1 and "nothing to roll back to" in single.stderr
    assert deployed.calls("AppRollback") == []


# --- prime reads the logs ----------------------------------------------------------------------------------


def test_prime_reports_a_snapshot_in_use_from_the_logs_without_target(deployed) -> None:
    """A model primed before: every cold start is already fast, so timings show no drop; the logs show the
    restores."""
    app_id = deployed.app("fleet-alpha").app_id
    counter = iter(range(100))

    def start_container() -> None:
        task = deployed.add_container("fleet-alpha")
        deployed.add_cold_start("fleet-alpha", "restore", container=task, at=time.time())
        next(counter)

    def is_running() -> bool:
        return any(aid == app_id for aid, _ in deployed.tasks.values())

    with StandIn(model="alpha", fast_cold=0.05, is_running=is_running, on_cold_start=start_container) as server:
        result = fleet("prime", "alpha", "--url", server.base_url, "--max-cold-starts", "4", "--api-key", PROBE_KEY)
    assert result.exit_code == 0, result.output
    assert "alpha: primed: snapshot in use: restored from the snapshot (in the logs)" in result.stdout
    assert "(logs: restored)" in result.stderr
    assert next(counter) == 2


def test_prime_says_when_the_logs_never_show_a_restore(deployed) -> None:
    app_id = deployed.app("fleet-alpha").app_id

    def start_container() -> None:
        task = deployed.add_container("fleet-alpha")
        deployed.add_cold_start("fleet-alpha", "boot", container=task, at=time.time())

    def is_running() -> bool:
        return any(aid == app_id for aid, _ in deployed.tasks.values())

    with StandIn(model="alpha", fast_cold=0.05, is_running=is_running, on_cold_start=start_container) as server:
        result = fleet("prime", "alpha", "--url", server.base_url, "--max-cold-starts", "3", "--target", "10",
                       "--api-key", PROBE_KEY)
    assert result.exit_code == 1
    assert "the logs show 3 cold start(s) and not one restore from the snapshot" in result.stdout
    assert "ask Modal" in result.stdout and "enable GPU memory snapshots" in result.stdout
