"""The one plan: what a deploy would do to each app, and why, made once from the catalog and Modal's state.

`plan`, `deploy --dry-run`, `deploy`, `status` and `destroy --orphans` all print or apply this same object
(Terraform's discipline: `deploy` applies exactly the plan it printed). Making it is pure: no Modal call, no
file read; it compares each rendered app with the state recorded in its deployed app's tags (fleet.state).

A snapshot is the fleet's most expensive asset, so the plan tells apart:
    create        not deployed yet
    redeploy      the engine changed: a new deploy, which DISCARDS the app's GPU snapshot
    update live   only min_containers / max_containers / scaledown_window changed: Modal's autoscaler API
                  applies them to the running app, no deploy, snapshot kept
    fetch weights deployed and current, but its weight prefetch failed or never ran: retried, no deploy
    unchanged     nothing to do
    orphan        deployed by this fleet, no longer in the catalog (only `destroy --orphans` acts on it)
A change that mixes scaling with anything else is a redeploy (the redeploy carries the new scaling).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Protocol

from .prices import PRICES_READ_ON, gpu_cost_usd
from .state import (
    DeployedApp,
    RecordedState,
    ScalingValues,
    Weights,
    decode_tag_value,
    digest_value,
    encode_tag_value,
)

# A snapshot is not used on the first cold starts after a deploy (facts.md): 3 to 5 slow ones.
SLOW_COLD_STARTS = (3, 5)
# Where `fleet bench --json >> bench-history.jsonl` appends; the plan reads cold starts from it.
BENCH_HISTORY = Path("bench-history.jsonl")


class Action(str, Enum):
    CREATE = "create"
    REDEPLOY = "redeploy"
    UPDATE_LIVE = "update live"
    FETCH_WEIGHTS = "fetch weights"
    UNCHANGED = "unchanged"
    ORPHAN = "orphan"


class PlannedApp(Protocol):
    """What the plan needs of an app: a model's RenderedApp answers it, and so can any other app (a CPU
    gateway: no snapshot, no GPU, no weights)."""

    @property
    def name(self) -> str: ...
    @property
    def app_name(self) -> str: ...
    @property
    def class_name(self) -> str: ...
    @property
    def catalog_file(self) -> str: ...
    @property
    def module_name(self) -> str: ...
    @property
    def filename(self) -> str: ...  # of the rendered source, in the apps directory
    @property
    def spec_hash(self) -> str: ...
    @property
    def scaling(self) -> ScalingValues | None: ...
    @property
    def snapshot(self) -> bool: ...
    @property
    def deploy_keys(self) -> dict[str, str]: ...
    @property
    def gpu_type(self) -> str | None: ...
    @property
    def gpu_count(self) -> int: ...
    @property
    def startup_timeout(self) -> int: ...
    @property
    def has_weights(self) -> bool: ...
    @property
    def secrets(self) -> tuple[str, ...]: ...  # Modal secrets the app mounts (checked before a deploy)


@dataclass(frozen=True)
class Reason:
    """Why an item is planned the way it is: a key and its deployed -> wanted values."""

    key: str
    old: str | None  # None: not recorded (too long, private, or never written)
    new: str | None

    def __str__(self) -> str:
        if self.old is None and self.new is None:
            return self.key
        old = "(not recorded)" if self.old is None else self.old
        return f"{self.key}: {old} -> {self.new if self.new is not None else '(none)'}"

    def as_dict(self) -> dict[str, str | None]:
        return {"key": self.key, "old": self.old, "new": self.new}


@dataclass(frozen=True)
class StartupFigure:
    """How long one slow (snapshot-less) cold start of a model takes, and where the figure comes from."""

    seconds: float
    source: str
    upper_bound: bool = False


@dataclass(frozen=True)
class RedeployCost:
    """What discarding a snapshot costs: the slow cold starts until a new one is in use."""

    cold_starts: tuple[int, int]
    startup: StartupFigure
    gpu: str
    gpu_minutes: tuple[float, float]
    usd: tuple[float, float]
    prices_of: str = PRICES_READ_ON

    def __str__(self) -> str:
        low, high = self.cold_starts
        bound = "up to " if self.startup.upper_bound else ""
        return (
            f"{low}-{high} slow cold starts x {bound}{self.startup.seconds:.0f} s ({self.startup.source}) on "
            f"{self.gpu}: {self.gpu_minutes[0]:.0f}-{self.gpu_minutes[1]:.0f} GPU-min, "
            f"${self.usd[0]:.2f}-${self.usd[1]:.2f} (prices of {self.prices_of})"
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "cold_starts": list(self.cold_starts),
            "startup_s": self.startup.seconds,
            "startup_source": self.startup.source,
            "startup_upper_bound": self.startup.upper_bound,
            "gpu": self.gpu,
            "gpu_minutes": [round(m, 1) for m in self.gpu_minutes],
            "usd": [round(d, 2) for d in self.usd],
            "prices_of": self.prices_of,
        }


@dataclass(frozen=True)
class PlanItem:
    app_name: str
    action: Action
    reasons: tuple[Reason, ...]
    app: PlannedApp | None  # None for an orphan
    deployed: DeployedApp | None  # None for an app to create
    snapshot_lost: bool = False
    cost: RedeployCost | None = None
    fetch_weights: bool = False  # after the action, (re)run the weight prefetch
    record_state: bool = False  # unchanged, but its tags are in an older form: rewrite them (no deploy)

    @property
    def name(self) -> str:
        return self.app.name if self.app is not None else self.app_name

    @property
    def why(self) -> str:
        return "; ".join(str(r) for r in self.reasons)

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "app": self.app_name,
            "action": self.action.value,
            "reasons": [r.as_dict() for r in self.reasons],
            "snapshot_lost": self.snapshot_lost,
            "cost": self.cost.as_dict() if self.cost else None,
            "fetch_weights": self.fetch_weights,
            "record_state": self.record_state,
        }


@dataclass(frozen=True)
class Plan:
    items: tuple[PlanItem, ...]
    force: bool = False

    def count(self, action: Action) -> int:
        return sum(1 for i in self.items if i.action is action)

    @property
    def snapshots_lost(self) -> int:
        return sum(1 for i in self.items if i.snapshot_lost)

    @property
    def to_apply(self) -> list[PlanItem]:
        """The items a deploy acts on (orphans are `destroy --orphans`'s, unchanged ones nobody's)."""
        return [i for i in self.items if i.action not in (Action.UNCHANGED, Action.ORPHAN)]

    @property
    def orphans(self) -> list[PlanItem]:
        return [i for i in self.items if i.action is Action.ORPHAN]

    @property
    def has_changes(self) -> bool:
        return bool(self.to_apply or self.orphans)

    @property
    def detailed_exit_code(self) -> int:
        """Terraform's -detailed-exitcode: 0 nothing to do, 2 changes (1 is left for errors)."""
        return 2 if self.has_changes else 0

    def summary(self) -> str:
        c = self.count
        text = (
            f"{c(Action.CREATE)} to create, {c(Action.REDEPLOY)} to redeploy ({self.snapshots_lost} snapshots lost), "
            f"{c(Action.UPDATE_LIVE)} to update live, {c(Action.UNCHANGED)} unchanged"
        )
        if c(Action.FETCH_WEIGHTS):
            text += f", {c(Action.FETCH_WEIGHTS)} to fetch weights"
        if self.orphans:
            text += f", {len(self.orphans)} orphaned"
        return text

    def total_cost_usd(self) -> tuple[float, float] | None:
        costs = [i.cost for i in self.items if i.cost is not None]
        if not costs:
            return None
        return (sum(c.usd[0] for c in costs), sum(c.usd[1] for c in costs))

    def as_dict(self) -> dict[str, object]:
        total = self.total_cost_usd()
        return {
            "items": [i.as_dict() for i in self.items],
            "summary": {
                "create": self.count(Action.CREATE),
                "redeploy": self.count(Action.REDEPLOY),
                "snapshots_lost": self.snapshots_lost,
                "update_live": self.count(Action.UPDATE_LIVE),
                "fetch_weights": self.count(Action.FETCH_WEIGHTS),
                "unchanged": self.count(Action.UNCHANGED),
                "orphan": len(self.orphans),
                "text": self.summary(),
                "redeploy_cost_usd": [round(total[0], 2), round(total[1], 2)] if total else None,
            },
            "force": self.force,
        }


def make_plan(
    apps: Iterable[PlannedApp],
    deployed_state: dict[str, DeployedApp],
    *,
    force: bool = False,
    orphans_of: str | None = None,
    startup: dict[str, StartupFigure] | None = None,
) -> Plan:
    """One item per app, then (with `orphans_of`, the fleet prefix) one per app of that prefix that fleet
    deployed and the catalog no longer has; another prefix is another catalog's and never an orphan.

    `force` turns every unchanged, update-live and fetch-weights item into a redeploy. `startup` (model name
    -> figure) prices each lost snapshot; a model without one is priced at its startup timeout, an upper
    bound.
    """
    apps = list(apps)
    items = [_plan_app(app, deployed_state.get(app.app_name), force, (startup or {}).get(app.name)) for app in apps]
    if orphans_of is not None:
        in_catalog = {app.app_name for app in apps}
        for name in sorted(set(deployed_state) - in_catalog):
            if name.startswith(f"{orphans_of}-"):
                reason = Reason("not in the catalog", None, None)
                items.append(PlanItem(name, Action.ORPHAN, (reason,), None, deployed_state[name]))
    return Plan(tuple(items), force=force)


def _plan_app(app: PlannedApp, deployed: DeployedApp | None, force: bool, startup: StartupFigure | None) -> PlanItem:
    if deployed is None:
        reasons = (Reason("not deployed", None, None),)
        return PlanItem(app.app_name, Action.CREATE, reasons, app, None, fetch_weights=app.has_weights)
    recorded = deployed.recorded
    action, reasons, record_state = _compare(app, recorded)
    if force and action in (Action.UNCHANGED, Action.UPDATE_LIVE, Action.FETCH_WEIGHTS):
        action, reasons, record_state = Action.REDEPLOY, [Reason("--force", None, None), *reasons], False
    lost = action is Action.REDEPLOY and _had_snapshot(app, recorded)
    cost = _redeploy_cost(app, startup) if lost else None
    fetch = app.has_weights and (
        action in (Action.REDEPLOY, Action.FETCH_WEIGHTS)
        or (action is Action.UPDATE_LIVE and recorded.weights == Weights.PENDING)
    )
    return PlanItem(app.app_name, action, tuple(reasons), app, deployed, lost, cost, fetch, record_state)


def _compare(app: PlannedApp, recorded: RecordedState) -> tuple[Action, list[Reason], bool]:
    """What the catalog wants against what the tags say runs: (action, reasons, record_state)."""
    if not recorded.keys and recorded.spec_hash is not None:  # recorded by a fleet from before this plan
        if recorded.spec_hash == getattr(app, "legacy_hash", None):
            # It runs exactly what the catalog says: nothing to deploy, only its record to rewrite.
            return Action.UNCHANGED, [Reason("state", "recorded by an older fleet", "rewritten (no deploy)")], True
        return Action.REDEPLOY, [Reason("state", "recorded by an older fleet", "the rendered app changed")], False
    if recorded.pending:
        unknown = Reason("state", "pending", "a deploy did not record its end: what runs is unknown")
        return Action.REDEPLOY, [unknown], False
    if recorded.spec_hash is None:
        return Action.REDEPLOY, [Reason("state", None, "no spec hash recorded")], False
    scaling_changes = _scaling_changes(app.scaling, recorded)
    if recorded.spec_hash != app.spec_hash:
        explained = _key_changes(app, recorded)
        changed = explained or [Reason("rendered app (template or runtime)", recorded.spec_hash, app.spec_hash)]
        return Action.REDEPLOY, changed + scaling_changes, False
    if scaling_changes:
        return Action.UPDATE_LIVE, scaling_changes, False
    if app.has_weights and recorded.weights == Weights.PENDING:
        return Action.FETCH_WEIGHTS, [Reason("weights", "pending", "the last prefetch did not finish")], False
    return Action.UNCHANGED, [], False


def _key_changes(app: PlannedApp, recorded: RecordedState) -> list[Reason]:
    changes = []
    wanted = app.deploy_keys
    secret = getattr(app, "secret_keys", frozenset())
    for key in sorted(set(wanted) | set(recorded.keys)):
        old_encoded = recorded.keys.get(key)
        new = wanted.get(key)
        if new is not None and old_encoded is not None and _same(old_encoded, new, key in secret):
            continue
        old = decode_tag_value(old_encoded) if old_encoded is not None else None
        if key in secret:  # never shown: only that it changed
            changes.append(Reason(key, "(private)" if old_encoded else None, "(private, changed)"))
        else:
            changes.append(Reason(key, old, new))
    return changes


def _same(encoded: str, value: str, secret: bool) -> bool:
    return encoded == (digest_value(value) if secret else encode_tag_value(value))


def _scaling_changes(wanted: ScalingValues | None, recorded: RecordedState) -> list[Reason]:
    if wanted is None:
        return []
    old = recorded.scaling
    if old is None:
        return [Reason("scaling", None, wanted.tag().replace(".", "/") + " (min/max/scaledown)")]
    return [
        Reason(f"scaling.{key}", str(getattr(old, key)), str(value))
        for key, value in wanted.as_dict().items()
        if getattr(old, key) != value
    ]


def _had_snapshot(app: PlannedApp, recorded: RecordedState) -> bool:
    """Whether the deployed app has a snapshot to lose: as recorded, else as the catalog says."""
    old = recorded.keys.get("snapshot")
    return old == "true" if old is not None else app.snapshot


def _redeploy_cost(app: PlannedApp, startup: StartupFigure | None) -> RedeployCost | None:
    if app.gpu_type is None:
        return None
    figure = startup or StartupFigure(float(app.startup_timeout), "timeouts.startup, an upper bound", True)
    low, high = SLOW_COLD_STARTS
    seconds = (low * figure.seconds, high * figure.seconds)
    return RedeployCost(
        cold_starts=SLOW_COLD_STARTS,
        startup=figure,
        gpu=f"{app.gpu_type} x{app.gpu_count}",
        gpu_minutes=(seconds[0] * app.gpu_count / 60, seconds[1] * app.gpu_count / 60),
        usd=(
            gpu_cost_usd(app.gpu_type, app.gpu_count, seconds[0]),
            gpu_cost_usd(app.gpu_type, app.gpu_count, seconds[1]),
        ),
    )


def startup_figures(history: Path = BENCH_HISTORY) -> dict[str, StartupFigure]:
    """The slowest cold start to first token per model in a `fleet bench --json` history file (one JSON
    report per line): the snapshot-less start a redeploy brings back. {} when there is no file; lines that
    are not bench reports are skipped."""
    try:
        lines = history.read_text(encoding="utf-8").splitlines()
    except OSError:
        return {}
    slowest: dict[str, list[float]] = {}
    for line in lines:
        try:
            report = json.loads(line)
            first = report["first_request"]
            if first.get("cold") and first.get("ttft_s") is not None and not first.get("error"):
                slowest.setdefault(str(report["name"]), []).append(float(first["ttft_s"]))
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
    return {
        name: StartupFigure(max(values), f"slowest of {len(values)} cold start(s) in {history.name}")
        for name, values in slowest.items()
    }

