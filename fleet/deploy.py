"""Plan and apply: compare the catalog with what Modal runs, then deploy what changed, in parallel.

State lives in Modal, not in a local file: each deployed app carries tags (managed by fleet, spec hash,
catalog file), so two people on two laptops see the same plan. Unchanged apps are skipped, because a
redeploy throws away the app's GPU snapshot and costs several slow cold starts.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path

from .errors import FleetError
from .modal_api import DeployedApp, ModalClient, describe_error
from .render import TAG_SPEC_HASH, RenderedApp, app_tags
from .spec import ModelSpec, Settings

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
    apps: list[RenderedApp], deployed: dict[str, DeployedApp], *, orphans_of: str | None = None
) -> list[PlanItem]:
    """Each catalog app as new / changed / unchanged; with `orphans_of` (the fleet prefix), then every app
    of that prefix that fleet deployed and the catalog no longer has. Another prefix is another catalog's."""
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
    if orphans_of is not None:
        in_catalog = {app.spec.app_name for app in apps}
        for name in sorted(set(deployed) - in_catalog):
            if name.startswith(f"{orphans_of}-"):
                items.append(PlanItem(name, Action.ORPHANED, None, deployed[name]))
    return items


def secrets_needed(specs: list[ModelSpec]) -> list[str]:
    return sorted({name for spec in specs for name in spec.secrets})


def check_secrets(client: ModalClient, specs: list[ModelSpec], settings: Settings) -> None:
    """Before any deploy: every secret the models mount exists, or one error with the commands that fix it."""
    missing = client.missing_secrets(secrets_needed(specs))
    if not missing:
        return
    variable = {settings.api_key_secret: "VLLM_API_KEY=<key>", settings.hf_token_secret: "HF_TOKEN=<token>"}
    lines = [f"missing Modal secret(s): {', '.join(missing)}; nothing was deployed. Create them with:"]
    lines += [f"  modal secret create {name} {variable.get(name, 'KEY=<value>')}" for name in missing]
    raise FleetError("\n".join(lines))


def status_rows(items: list[PlanItem], client: ModalClient) -> list[dict[str, object]]:
    """`fleet status`: one row per catalog model and orphan, with the URL read back from Modal."""
    state = {Action.NEW: "not deployed", Action.CHANGED: "out of date", Action.UNCHANGED: "in sync"}
    rows = []
    for item in items:
        spec = item.rendered.spec if item.rendered else None
        deployed = item.deployed
        rows.append(
            {
                "name": item.name,
                "app": item.app_name,
                "deployed": deployed is not None,
                "in_sync": item.action is Action.UNCHANGED,
                "state": state.get(item.action, "orphaned"),
                "url": client.web_url(item.app_name, spec.class_name) if deployed and spec else None,
                "gpu": spec.gpu if spec else None,
                "deployed_at": deployed.deployed_at.isoformat(timespec="seconds")
                if deployed and deployed.deployed_at
                else None,
            }
        )
    return rows


def stop_apps(client: ModalClient, app_names: list[str]) -> list[tuple[str, str | None]]:
    """Stop each app; (name, error or None) for each, so one failure does not keep the others running."""
    results = []
    for app_name in app_names:
        try:
            client.stop(app_name)
            results.append((app_name, None))
        except Exception as exc:  # noqa: BLE001 - reported per app
            results.append((app_name, describe_error(exc)))
    return results


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
    """Deploy new and changed apps (all with `force`) in a bounded pool; one failure never stops the others.

    Weight downloads run in a pool of their own: a download can take minutes, and holding a deploy slot
    for it would hold back the deploys queued behind it.
    """
    lock = threading.Lock()

    def report(name: str, message: str) -> None:
        with lock:
            progress(name, message)

    work = [item for item in items if item.rendered is not None]
    workers = max(1, parallel)
    with (
        ThreadPoolExecutor(max_workers=workers, thread_name_prefix="deploy") as deploys,
        ThreadPoolExecutor(max_workers=workers, thread_name_prefix="weights") as downloads,
    ):

        def deploy_then_fetch(item: PlanItem) -> Outcome | Future[Outcome]:
            outcome = _deploy_one(item, client, apps_dir, force=force, report=report)
            # The gateway (fleet/gateway/render.py) has no weights: `fetches_weights` is False on its spec.
            if fetch_weights and outcome.result == "deployed" and getattr(item.rendered.spec, "fetches_weights", True):
                return downloads.submit(_fetch_weights, outcome, client, report)
            return outcome

        pending = [deploys.submit(deploy_then_fetch, item) for item in work]
        results = [future.result() for future in pending]
        return [r.result() if isinstance(r, Future) else r for r in results]


def _deploy_one(item: PlanItem, client: ModalClient, apps_dir: Path, *, force: bool, report: Progress) -> Outcome:
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
        url = client.deploy(path, spec.module_name, spec.class_name, app_tags(spec, item.rendered.spec_hash))
        seconds = time.monotonic() - started
        report(item.name, f"deployed in {seconds:.1f}s: {url}")
        return Outcome(item, "deployed", seconds, url=url)
    except Exception as exc:  # noqa: BLE001 - one model's failure is reported, never raised over the others
        return _failed(item, exc, started, report)


def _fetch_weights(deployed: Outcome, client: ModalClient, report: Progress) -> Outcome:
    item = deployed.item
    started = time.monotonic()
    try:
        report(item.name, "fetching weights into the shared cache (CPU container)")
        client.fetch_weights(item.app_name)
        report(item.name, f"weights in the cache ({time.monotonic() - started:.1f}s)")
        return replace(deployed, seconds=deployed.seconds + time.monotonic() - started)
    except Exception as exc:  # noqa: BLE001 - reported per model
        failed = _failed(item, exc, started, report, what="deployed, but fetching weights failed")
        return replace(failed, seconds=deployed.seconds + failed.seconds, url=deployed.url)


def _failed(item: PlanItem, exc: Exception, started: float, report: Progress, what: str = "") -> Outcome:
    error = f"{what}: {describe_error(exc)}" if what else describe_error(exc)
    report(item.name, f"FAILED: {error}")
    return Outcome(item, "failed", time.monotonic() - started, error=error)
