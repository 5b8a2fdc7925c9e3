"""The plan as pure logic on typed state: every action, every reason, mixed changes, orphans, --force, cost,
detailed exit codes. No gRPC: deployed state is built from the tags a deploy would have written."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import pytest

from catalog_builder import model, write_catalog
from fleet.catalog import check_catalog
from fleet.plan import Action, Plan, StartupFigure, make_plan, startup_figures
from fleet.render import render_all
from fleet.state import (
    MAX_TAGS,
    TAG_SPEC_HASH,
    DeployedApp,
    ScalingValues,
    Weights,
    decode_tag_value,
    encode_tag_value,
    tags_for,
)


@dataclass(frozen=True)
class App:
    """An app as the plan sees it; not a model app, which is the point: any app answering the protocol
    (a CPU gateway, say) joins a plan."""

    name: str
    spec_hash: str = "h1"
    scaling: ScalingValues | None = ScalingValues(0, 1, 600)
    snapshot: bool = True
    deploy_keys: dict[str, str] = field(default_factory=lambda: {"gpu": "A100-80GB:1", "vllm.args": "[]"})
    gpu_type: str | None = "A100-80GB"
    gpu_count: int = 1
    startup_timeout: int = 1200
    has_weights: bool = True
    secrets: tuple[str, ...] = ()

    @property
    def app_name(self) -> str:
        return f"fleet-{self.name}"

    class_name = "Model"
    module_name = "fleet_model"
    filename = "fleet_model.py"

    @property
    def catalog_file(self) -> str:
        return f"{self.name}.yaml"


def deployed(app: App, *, weights: str = Weights.OK, **tag_overrides: str) -> DeployedApp:
    tags = {**tags_for(app, weights=weights), **tag_overrides}
    return DeployedApp(app.app_name, "ap-1", tags, datetime(2026, 11, 29, tzinfo=timezone.utc))


def state(*pairs: tuple[App, App]) -> dict[str, DeployedApp]:
    """(what was deployed, what the catalog says now) pairs -> Modal's state."""
    return {old.app_name: deployed(old) for old, _ in pairs}


def only(plan: Plan):
    assert len(plan.items) == 1
    return plan.items[0]


def test_new_app_is_created_with_a_reason() -> None:
    item = only(make_plan([App("a")], {}))
    assert item.action is Action.CREATE and item.why == "not deployed" and not item.snapshot_lost
    assert item.fetch_weights


def test_same_app_is_unchanged() -> None:
    a = App("a")
    plan = make_plan([a], state((a, a)))
    assert only(plan).action is Action.UNCHANGED and only(plan).reasons == ()
    assert plan.summary() == "0 to create, 0 to redeploy (0 snapshots lost), 0 to update live, 1 unchanged"
    assert plan.detailed_exit_code == 0 and not plan.has_changes


def test_scaling_only_is_updated_live_with_old_and_new_values() -> None:
    old = App("a")
    new = replace(old, scaling=ScalingValues(1, 3, 600))
    item = only(make_plan([new], state((old, new))))
    assert item.action is Action.UPDATE_LIVE and not item.snapshot_lost and item.cost is None
    assert item.why == "scaling.min_containers: 0 -> 1; scaling.max_containers: 1 -> 3"
    assert not item.fetch_weights


def test_engine_change_is_a_redeploy_that_loses_the_snapshot() -> None:
    old = App("a")
    new = replace(old, spec_hash="h2", deploy_keys={"gpu": "H100:1", "vllm.args": "[]"}, gpu_type="H100")
    plan = make_plan([new], state((old, new)))
    item = only(plan)
    assert item.action is Action.REDEPLOY and item.snapshot_lost
    assert item.why == "gpu: A100-80GB:1 -> H100:1"
    assert plan.summary() == "0 to create, 1 to redeploy (1 snapshots lost), 0 to update live, 0 unchanged"
    assert plan.detailed_exit_code == 2


def test_mixed_change_is_one_redeploy_listing_both_kinds() -> None:
    old = App("a")
    new = replace(old, spec_hash="h2", scaling=ScalingValues(0, 4, 600), deploy_keys={"gpu": "A100-80GB:1", "vllm.args": '["--x"]'})
    item = only(make_plan([new], state((old, new))))
    assert item.action is Action.REDEPLOY
    assert [r.key for r in item.reasons] == ["vllm.args", "scaling.max_containers"]


def test_redeploy_without_snapshot_loses_none() -> None:
    old = App("a", snapshot=False)
    new = replace(old, spec_hash="h2")
    item = only(make_plan([new], state((old, new))))
    assert item.action is Action.REDEPLOY and not item.snapshot_lost and item.cost is None
    assert item.why == "rendered app (template or runtime): h1 -> h2"  # no recorded key explains it


def test_snapshot_turned_on_loses_nothing_that_existed() -> None:
    old = App("a", snapshot=False, deploy_keys={"snapshot": "false"})
    new = replace(old, snapshot=True, spec_hash="h2", deploy_keys={"snapshot": "true"})
    item = only(make_plan([new], state((old, new))))
    assert item.action is Action.REDEPLOY and not item.snapshot_lost
    assert item.why == "snapshot: false -> true"


def test_force_turns_unchanged_and_live_updates_into_redeploys() -> None:
    a, b = App("a"), App("b")
    b_new = replace(b, scaling=ScalingValues(0, 2, 600))
    plan = make_plan([a, b_new, App("c")], state((a, a), (b, b_new)), force=True)
    assert [i.action for i in plan.items] == [Action.REDEPLOY, Action.REDEPLOY, Action.CREATE]
    assert plan.items[0].why == "--force"
    assert plan.items[1].why == "--force; scaling.max_containers: 1 -> 2"
    assert plan.summary() == "1 to create, 2 to redeploy (2 snapshots lost), 0 to update live, 0 unchanged"


def test_orphans_only_of_this_prefix() -> None:
    a = App("a")
    gone = App("gone")
    other = DeployedApp("team2-x", "ap-2", {}, None)
    plan = make_plan([a], {**state((a, a), (gone, gone)), "team2-x": other}, orphans_of="fleet")
    assert [(i.name, i.action) for i in plan.items] == [("a", Action.UNCHANGED), ("fleet-gone", Action.ORPHAN)]
    assert plan.summary().endswith("1 unchanged, 1 orphaned")
    assert plan.detailed_exit_code == 2
    assert make_plan([a], state((a, a), (gone, gone))).orphans == []  # a plan of some models finds none


def test_pending_hash_is_a_redeploy_even_when_the_catalog_matches() -> None:
    """A deploy that did not record its end: Modal may run either version, so the plan never says unchanged."""
    a = App("a")
    item = only(make_plan([a], {a.app_name: deployed(a, **{TAG_SPEC_HASH: "pending"})}))
    assert item.action is Action.REDEPLOY
    assert item.why.startswith("state: pending -> a deploy did not record its end")


def test_no_recorded_hash_is_a_redeploy() -> None:
    a = App("a")
    tags = {k: v for k, v in tags_for(a, weights=Weights.OK).items() if k != TAG_SPEC_HASH}
    item = only(make_plan([a], {a.app_name: DeployedApp(a.app_name, "ap", tags, None)}))
    assert item.action is Action.REDEPLOY and item.why == "state: (not recorded) -> no spec hash recorded"


def test_pending_scaling_is_updated_live_again() -> None:
    a = App("a")
    item = only(make_plan([a], {a.app_name: deployed(a, **{"fleet-scaling": "pending"})}))
    assert item.action is Action.UPDATE_LIVE and item.why == "scaling: (not recorded) -> 0/1/600 (min/max/scaledown)"


def test_failed_weight_fetch_is_its_own_cheap_action() -> None:
    a = App("a")
    plan = make_plan([a], {a.app_name: deployed(a, weights=Weights.PENDING)})
    item = only(plan)
    assert item.action is Action.FETCH_WEIGHTS and item.fetch_weights and not item.snapshot_lost
    assert plan.summary().endswith("0 unchanged, 1 to fetch weights") and plan.detailed_exit_code == 2
    assert only(make_plan([a], {a.app_name: deployed(a, weights=Weights.SKIPPED)})).action is Action.UNCHANGED


def test_app_without_weights_or_gpu_joins_a_plan() -> None:
    gateway = App("gateway", snapshot=False, gpu_type=None, has_weights=False, scaling=ScalingValues(1, 2, 300))
    assert "fleet-weights" not in tags_for(gateway, weights=Weights.OK)
    new = replace(gateway, spec_hash="h9")
    item = only(make_plan([new], state((gateway, new))))
    assert item.action is Action.REDEPLOY and item.cost is None and not item.fetch_weights


def test_cost_of_a_lost_snapshot_from_the_startup_timeout_is_an_upper_bound() -> None:
    old = App("a", startup_timeout=1200)
    new = replace(old, spec_hash="h2")
    cost = only(make_plan([new], state((old, new)))).cost
    assert cost is not None and cost.startup.upper_bound
    # 3-5 x 1200 s on one A100-80GB at $2.50/h: 60-100 GPU-minutes, $2.50-$4.17
    assert cost.gpu_minutes == (60.0, 100.0) and cost.usd == pytest.approx((2.50, 4.1667), abs=1e-3)
    assert str(cost) == (
        "3-5 slow cold starts x up to 1200 s (timeouts.startup, an upper bound) on A100-80GB x1: "
        "60-100 GPU-min, $2.50-$4.17 (prices of 2026-11-29)"
    )


def test_cost_uses_the_bench_history_when_there_is_one(tmp_path: Path) -> None:
    history = tmp_path / "bench-history.jsonl"
    lines = [
        {"name": "a", "first_request": {"cold": True, "ttft_s": 300.0, "error": None}},
        {"name": "a", "first_request": {"cold": True, "ttft_s": 70.0, "error": None}},  # a restore
        {"name": "a", "first_request": {"cold": False, "ttft_s": 0.5, "error": None}},
        {"name": "b", "first_request": {"cold": True, "ttft_s": None, "error": "timeout"}},
    ]
    history.write_text("\n".join(json.dumps(line) for line in lines) + "\nnot json\n")
    figures = startup_figures(history)
    assert figures == {"a": StartupFigure(300.0, "slowest of 2 cold start(s) in bench-history.jsonl")}
    old = App("a", gpu_count=2)
    new = replace(old, spec_hash="h2")
    cost = only(make_plan([new], state((old, new)), startup=figures)).cost
    assert cost is not None and not cost.startup.upper_bound
    assert cost.gpu_minutes == (30.0, 50.0)  # 3-5 x 300 s x 2 GPUs
    assert startup_figures(tmp_path / "missing.jsonl") == {}


def test_plan_as_json_is_complete() -> None:
    old = App("a")
    new = replace(old, scaling=ScalingValues(0, 2, 600))
    data = make_plan([new, App("b")], state((old, new))).as_dict()
    assert data["items"][0]["action"] == "update live"
    assert data["items"][0]["reasons"] == [{"key": "scaling.max_containers", "old": "1", "new": "2"}]
    assert data["summary"]["create"] == 1 and data["summary"]["update_live"] == 1
    assert data["summary"]["text"].startswith("1 to create, 0 to redeploy (0 snapshots lost), 1 to update live")


@pytest.mark.parametrize("value", ["Qwen/Qwen3.6-27B-FP8", "A100-80GB:1", '["--a", "b c"]', "", "a_b", "é"])
def test_tag_values_are_valid_for_modal_and_decode_back(value: str) -> None:
    from modal._utils.name_utils import check_tag_dict

    encoded = encode_tag_value(value)
    check_tag_dict({"k": encoded})
    assert decode_tag_value(encoded) == value


def test_a_too_long_value_is_recorded_as_a_digest() -> None:
    encoded = encode_tag_value("x" * 100)
    assert len(encoded) <= 63 and decode_tag_value(encoded) is None


# --- with real rendered model apps -------------------------------------------------------------------------


def rendered(tmp_path: Path, **overrides: object):
    directory = write_catalog(tmp_path / "catalog", {"m": model("m", **overrides)})  # same file each time
    result = check_catalog(directory)
    assert result.catalog is not None, result.problems
    return render_all(list(result.catalog.models))[0]


def test_model_app_tags_are_valid_and_few(tmp_path: Path) -> None:
    from modal._utils.name_utils import check_tag_dict

    app = rendered(tmp_path, vllm={"args": ["--reasoning-parser", "qwen3"], "env": {"TOKEN_LIKE": "s3cret"}})
    tags = tags_for(app, weights=Weights.OK)
    check_tag_dict(tags)
    assert len(tags) <= MAX_TAGS
    assert "s3cret" not in json.dumps(tags)  # env values only as a digest


def test_scaling_edit_keeps_the_hash_and_plans_a_live_update(tmp_path: Path) -> None:
    before = rendered(tmp_path)
    after = rendered(tmp_path, scaling={"max_containers": 3, "scaledown_window": 900})
    assert after.spec_hash == before.spec_hash and after.source != before.source  # the source carries the values
    item = only(make_plan([after], {before.app_name: deployed(before)}))  # type: ignore[arg-type]
    assert item.action is Action.UPDATE_LIVE
    assert item.why == "scaling.max_containers: 1 -> 3; scaling.scaledown_window: 600 -> 900"


def test_env_change_is_a_redeploy_that_never_shows_the_value(tmp_path: Path) -> None:
    before = rendered(tmp_path, vllm={"env": {"A": "one"}})
    after = rendered(tmp_path, vllm={"env": {"A": "two"}})
    item = only(make_plan([after], {before.app_name: deployed(before)}))  # type: ignore[arg-type]
    assert item.action is Action.REDEPLOY and item.why == "vllm.env: (private) -> (private, changed)"


def test_concurrency_change_is_a_redeploy(tmp_path: Path) -> None:
    """@modal.concurrent(max_inputs) cannot change live (facts.md): only the three autoscaler keys can."""
    before = rendered(tmp_path)
    after = rendered(tmp_path, scaling={"max_concurrent_requests": 16})
    item = only(make_plan([after], {before.app_name: deployed(before)}))  # type: ignore[arg-type]
    assert item.action is Action.REDEPLOY and item.why == "scaling.max_concurrent_requests: 4 -> 16"


def test_tags_edited_by_hand_never_crash_the_plan() -> None:
    a = App("a")
    tags = {**tags_for(a, weights=Weights.OK), "fleet-k-gpu": "_zz", "fleet-scaling": "lots", "fleet-weights": "?"}
    item = only(make_plan([a], {a.app_name: DeployedApp(a.app_name, "ap", tags, None)}))
    # the hash still matches (it decides what runs; keys only explain a difference): scaling is re-applied live
    assert item.action is Action.UPDATE_LIVE and item.why == "scaling: (not recorded) -> 0/1/600 (min/max/scaledown)"
    changed = replace(a, spec_hash="h2")
    item = only(make_plan([changed], {a.app_name: DeployedApp(a.app_name, "ap", tags, None)}))
    assert item.action is Action.REDEPLOY and "gpu: (not recorded) -> A100-80GB:1" in item.why


@pytest.mark.parametrize("value", [None, "text", {"pid": "x", "since": "yesterday"}, {"user": "u" * 1000}])
def test_a_lock_written_by_another_tool_reads_as_stale_not_as_a_crash(value: object) -> None:
    from fleet.state import LockHolder

    holder = LockHolder.from_dict(value)
    assert holder.since == 0 and holder.age_s() > 3600 and len(holder.user) <= 64
    assert "since 1970-01-01" in holder.describe()


def test_force_also_redeploys_an_app_recorded_by_an_older_fleet() -> None:
    a = App("a")
    legacy = {"fleet-managed": "true", TAG_SPEC_HASH: "0123abcd"}
    current = replace(a)
    object.__setattr__(current, "legacy_hash", "0123abcd")  # what the older fleet hashed: it is current
    deployed_state = {a.app_name: DeployedApp(a.app_name, "ap", legacy, None)}
    item = only(make_plan([current], deployed_state))
    assert item.action is Action.UNCHANGED and item.record_state
    forced = only(make_plan([current], deployed_state, force=True))
    assert forced.action is Action.REDEPLOY and not forced.record_state and forced.why.startswith("--force")
