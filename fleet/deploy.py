"""Plan and apply: compare the catalog with what Modal runs, then deploy what changed, in parallel.

State lives in Modal, not in a local file: each deployed app carries tags (managed by fleet, spec hash,
catalog file), so two people on two laptops see the same plan. Unchanged apps are skipped, because a
redeploy throws away the app's GPU snapshot and costs several slow cold starts.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from .modal_api import DeployedApp, ModalClient, describe_error
from .render import TAG_SPEC_HASH, RenderedApp, app_tags
from .spec import ModelSpec

Progress = Callable[[str, str], None]


class Action(str, Enum):
    NEW = "new"
    CHANGED = "changed"
    UNCHANGED = "unchanged"
    ORPHANED = "orphaned"


@dataclass(frozen=True)
class PlanItem:
    app_name: str
    action: Action
    rendered: RenderedApp | None  # None for an orphan
    deployed: DeployedApp | None  # None for a new app

    @property
    def name(self) -> str:
        return self.rendered.spec.name if self.rendered else self.app_name


@dataclass(frozen=True)
class Outcome:
    item: PlanItem
    result: str  # deployed | skipped | failed
    seconds: float
    url: str | None = None
    error: str | None = None

    @property
    def failed(self) -> bool:
        return self.result == "failed"


def make_plan(
    apps: list[RenderedApp], deployed: dict[str, DeployedApp], *, include_orphans: bool
) -> list[PlanItem]:
    """Each catalog app as new / changed / unchanged, then (if asked) managed apps no longer in the catalog."""
    items = []
    for app in apps:
        current = deployed.get(app.spec.app_name)
        if current is None:
            action = Action.NEW
        elif current.tags.get(TAG_SPEC_HASH) == app.spec_hash:
            action = Action.UNCHANGED
        else:
            action = Action.CHANGED
        items.append(PlanItem(app.spec.app_name, action, app, current))
    if include_orphans:
        in_catalog = {app.spec.app_name for app in apps}
        for name in sorted(set(deployed) - in_catalog):
            items.append(PlanItem(name, Action.ORPHANED, None, deployed[name]))
    return items


def secrets_needed(specs: list[ModelSpec]) -> list[str]:
    return sorted({name for spec in specs for name in spec.secrets})


def apply_plan(
    items: list[PlanItem],
    client: ModalClient,
    apps_dir: Path,
    *,
    force: bool = False,
    parallel: int = 4,
    fetch_weights: bool = True,
    progress: Progress = lambda name, message: None,
) -> list[Outcome]:
    """Deploy new and changed apps (all with `force`) in a bounded pool; one failure never stops the others."""
    lock = threading.Lock()

    def report(name: str, message: str) -> None:
        with lock:
            progress(name, message)

    def run(item: PlanItem) -> Outcome:
        return _apply_one(item, client, apps_dir, force=force, fetch_weights=fetch_weights, report=report)

    work = [item for item in items if item.rendered is not None]
    with ThreadPoolExecutor(max_workers=max(1, parallel), thread_name_prefix="deploy") as pool:
        return list(pool.map(run, work))


def _apply_one(
    item: PlanItem,
    client: ModalClient,
    apps_dir: Path,
    *,
    force: bool,
    fetch_weights: bool,
    report: Progress,
) -> Outcome:
    assert item.rendered is not None
    spec = item.rendered.spec
    started = time.monotonic()
    try:
        if item.action is Action.UNCHANGED and not force:
            url = client.web_url(item.app_name, spec.class_name)
            report(item.name, "unchanged, skipped (its snapshot is kept)")
            return Outcome(item, "skipped", time.monotonic() - started, url=url)
        report(item.name, f"deploying ({item.action.value})")
        path = apps_dir / item.rendered.filename
        _, url = client.deploy(path, spec.module_name, spec.class_name, app_tags(spec, item.rendered.spec_hash))
        if fetch_weights:
            report(item.name, "deployed; fetching weights into the shared cache")
            client.fetch_weights(item.app_name)
        seconds = time.monotonic() - started
        report(item.name, f"deployed in {seconds:.1f}s: {url}")
        return Outcome(item, "deployed", seconds, url=url)
    except Exception as exc:  # noqa: BLE001 - one model's failure is reported, never raised over the others
        error = describe_error(exc)
        report(item.name, f"FAILED: {error}")
        return Outcome(item, "failed", time.monotonic() - started, error=error)
