"""Apply a plan (fleet/plan.py) to Modal: exactly its items, in parallel, one failure never stopping the others.

Per action: create / redeploy deploy the rendered app (marking its tags "pending" first, final after, so a
deploy that ends half-way never looks finished); update live changes the autoscaler of the running class
(no deploy: the snapshot is kept); fetch weights reruns the CPU prefetch. Every step that succeeds is
recorded in the app's tags (fleet/state.py), so the next plan starts from what Modal really runs.

One `fleet deploy` per fleet at a time: a lock in a Modal Dict (`deploy_lock`). Ctrl-C stops queueing at
once, lets the deploys in flight finish, and returns the partial result; a second Ctrl-C stops waiting.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from .errors import DeployLocked, FleetError
from .modal_api import ModalClient, describe_error
from .plan import Action, Plan, PlanItem, PlannedApp, make_plan, startup_figures
from .spec import ModelSpec, Settings
from .state import LOCK_STALE_AFTER_S, LockHolder, Weights, tags_for

Progress = Callable[[str, str], None]


@dataclass(frozen=True)
class Outcome:
    item: PlanItem
    result: str  # deployed | updated live | weights fetched | skipped | failed | cancelled | interrupted
    # ("weights pending" only between the two stages of a fetch-weights item)
    seconds: float
    url: str | None = None
    error: str | None = None
    fetch_next: bool = False  # the weight prefetch is still to run
    notes: tuple[str, ...] = ()  # what Modal warned about when it took the deploy

    @property
    def failed(self) -> bool:
        return self.result == "failed"

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.item.name,
            "app": self.item.app_name,
            "action": self.item.action.value,
            "result": self.result,
            "seconds": round(self.seconds, 2),
            "url": self.url,
            "error": self.error,
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class Applied:
    outcomes: tuple[Outcome, ...]
    interrupted: bool  # Ctrl-C: queued items were cancelled

    def count(self, result: str) -> int:
        return sum(1 for o in self.outcomes if o.result == result)

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.failed]

    def summary(self) -> str:
        parts = [
            f"{self.count('deployed')} deployed",
            f"{self.count('updated live')} updated live",
            f"{self.count('skipped')} unchanged (skipped)",
        ]
        if self.count("weights fetched"):
            parts.append(f"{self.count('weights fetched')} weights fetched")
        parts.append(f"{len(self.failed)} failed")
        stopped = self.count("cancelled") + self.count("interrupted")
        if self.interrupted:
            parts.append(f"{stopped} not done (interrupted)")
        return ", ".join(parts)


class Stop:
    """Ctrl-C, as the apply loop sees it: the first stops queueing, the second stops waiting."""

    def __init__(self) -> None:
        self.requested = threading.Event()
        self.abandon = threading.Event()

    def interrupt(self) -> None:
        (self.abandon if self.requested.is_set() else self.requested).set()


def read_plan(
    client: ModalClient,
    apps: list[PlannedApp],
    prefix: str,
    *,
    force: bool = False,
    orphans: bool = True,
    history: Path | None = None,
) -> Plan:
    """The plan for `apps` against what Modal runs for the fleet `prefix` (orphans only for a whole-catalog
    plan); lost snapshots priced from the bench history when there is one."""
    return make_plan(
        apps,
        client.deployed_apps(prefix, only=None if orphans else {app.app_name for app in apps}),
        force=force,
        orphans_of=prefix if orphans else None,
        startup=startup_figures(history) if history is not None else None,
    )


def secrets_needed(apps: list[PlannedApp]) -> list[str]:
    return sorted({name for app in apps for name in app.secrets})


def check_secrets(client: ModalClient, apps: list[PlannedApp], settings: Settings) -> None:
    """Before any deploy: every secret the apps mount exists, or one error with the commands that fix it."""
    missing = client.missing_secrets(secrets_needed(apps))
    if not missing:
        return
    variable = {settings.api_key_secret: "VLLM_API_KEY=<key>", settings.hf_token_secret: "HF_TOKEN=<token>"}
    lines = [f"missing Modal secret(s): {', '.join(missing)}; nothing was deployed. Create them with:"]
    lines += [f"  modal secret create {name} {variable.get(name, 'KEY=<value>')}" for name in missing]
    raise FleetError("\n".join(lines))


@contextmanager
def deploy_lock(
    client: ModalClient, prefix: str, *, break_stale: bool = False, stale_after_s: float = LOCK_STALE_AFTER_S
) -> Iterator[LockHolder]:
    """Hold the fleet's deploy lock for the block: two deploys of one fleet would each plan the same changes
    and redeploy every changed app twice (two snapshots lost). The lock names its holder; it is released on
    exit, and one older than `stale_after_s` (its holder died) may be broken with `break_stale`."""
    me = LockHolder.me()
    holder = client.acquire_lock(prefix, me)
    if holder is not None and break_stale and holder.age_s() >= stale_after_s:
        client.break_lock(prefix, holder)
        holder = client.acquire_lock(prefix, me)
    if holder is not None:
        if break_stale:
            hint = f"it is not stale yet (--break-lock needs it older than {stale_after_s / 60:.0f} min)"
        else:
            hint = f"wait for it; if it died, rerun with --break-lock once the lock is {stale_after_s / 60:.0f} min old"
        raise DeployLocked(f"another `fleet deploy` of fleet '{prefix}' is running: {holder.describe()}; {hint}")
    try:
        yield me
    finally:
        try:
            client.release_lock(prefix, me)
        except FleetError:
            pass  # the lock outlives us; it is named with its holder and can be broken once stale


def status_rows(plan: Plan, client: ModalClient) -> list[dict[str, object]]:
    """`fleet status`: one row per catalog app and orphan, with the URL read back from Modal."""
    state = {
        Action.CREATE: "not deployed",
        Action.REDEPLOY: "out of date",
        Action.UPDATE_LIVE: "scaling out of date",
        Action.FETCH_WEIGHTS: "weights not fetched",
        Action.UNCHANGED: "in sync",
        Action.ORPHAN: "orphaned",
    }
    urls = _web_urls(client, [(i.app_name, i.app.class_name) for i in plan.items if i.deployed and i.app])
    rows = []
    for item in plan.items:
        app, deployed = item.app, item.deployed
        rows.append(
            {
                "name": item.name,
                "app": item.app_name,
                "deployed": deployed is not None,
                "in_sync": item.action is Action.UNCHANGED,
                "state": state[item.action],
                "why": item.why,
                "url": urls.get(item.app_name),
                "gpu": f"{app.gpu_type}:{app.gpu_count}" if app and app.gpu_type else None,
                "deployed_at": deployed.deployed_at.isoformat(timespec="seconds")
                if deployed and deployed.deployed_at
                else None,
            }
        )
    return rows


@dataclass(frozen=True)
class EndpointUrl:
    """Where one model answers, read back from Modal (URLs are never predicted), or why it does not."""

    name: str
    app_name: str
    deployed: bool
    url: str | None  # the web endpoint; None when not deployed or Modal has none

    @property
    def problem(self) -> str | None:
        if not self.deployed:
            return "not deployed (run `fleet deploy`)"
        return None if self.url else "deployed, but Modal has no web endpoint for it (redeploy with --force)"

    @property
    def base_url(self) -> str | None:
        """The OpenAI-compatible base URL a client is given."""
        return f"{self.url}/v1" if self.url else None


def endpoint_urls(client: ModalClient, specs: list[ModelSpec]) -> list[EndpointUrl]:
    """The one endpoint-URL lookup (`endpoints`, `smoke`, `prime`, `bench`): one row per model, in order."""
    if not specs:
        return []
    deployed = client.deployed_apps(specs[0].settings.prefix)
    urls = _web_urls(client, [(spec.app_name, spec.class_name) for spec in specs if spec.app_name in deployed])
    return [EndpointUrl(spec.name, spec.app_name, spec.app_name in deployed, urls.get(spec.app_name)) for spec in specs]


URL_LOOKUPS_IN_FLIGHT = 16


def _web_urls(client: ModalClient, apps: list[tuple[str, str]]) -> dict[str, str | None]:
    """Each deployed app's web URL, read back from Modal (never predicted), several lookups in flight:
    one after another, 50 models at 100 ms per call took 11 s of a `fleet status`."""
    if not apps:
        return {}
    with ThreadPoolExecutor(max_workers=min(URL_LOOKUPS_IN_FLIGHT, len(apps)), thread_name_prefix="url") as pool:
        found = pool.map(lambda app: client.web_url(*app), apps)
        return {app_name: url for (app_name, _), url in zip(apps, found)}


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
    plan: Plan,
    client: ModalClient,
    apps_dir: Path,
    *,
    parallel: int = 4,
    fetch_weights: bool = True,
    progress: Progress = lambda name, message: None,
    stop: Stop | None = None,
) -> Applied:
    """Carry out every item of `plan` except orphans, in a bounded pool; no re-planning.

    Weight downloads run in a pool of their own: a download can take minutes, and holding a deploy slot
    for it would hold back the deploys queued behind it. Only this thread submits work, so after Ctrl-C
    nothing new is ever scheduled.
    """
    stop = stop or Stop()
    lock = threading.Lock()

    def report(name: str, message: str) -> None:
        with lock:
            progress(name, message)

    items = [item for item in plan.items if item.action is not Action.ORPHAN]
    outcomes: dict[int, Outcome] = {}
    workers = max(1, parallel)
    deploys = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="deploy")
    downloads = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="weights")
    running: dict[Future[Outcome], int] = {
        deploys.submit(_apply_one, item, client, apps_dir, fetch_weights, report): index
        for index, item in enumerate(items)
    }
    cancelled_queue = False
    try:
        while running and not stop.abandon.is_set():
            if stop.requested.is_set() and not cancelled_queue:
                cancelled_queue = True
                for future in [f for f in running if f.cancel()]:
                    outcomes[running.pop(future)] = Outcome(items[0], "cancelled", 0.0)  # item set below
            done, _ = wait(running, timeout=0.1, return_when=FIRST_COMPLETED)
            for future in done:
                index = running.pop(future)
                outcome = future.result()
                if outcome.fetch_next and not stop.requested.is_set():
                    running[downloads.submit(_fetch_weights, outcome, client, report)] = index
                else:
                    outcomes[index] = outcome
    finally:
        abandon = stop.abandon.is_set()
        deploys.shutdown(wait=not abandon, cancel_futures=True)
        downloads.shutdown(wait=not abandon, cancel_futures=True)
    for index in running.values():  # a second Ctrl-C: these were still running
        outcomes[index] = Outcome(items[index], "interrupted", 0.0, error="interrupted while in flight")
    results = []
    for index, item in enumerate(items):
        outcome = outcomes[index]
        if outcome.result == "cancelled":
            outcome = Outcome(item, "cancelled", 0.0, error="not started (interrupted)")
        elif outcome.fetch_next and item.action is Action.FETCH_WEIGHTS:
            outcome = Outcome(item, "cancelled", 0.0, url=outcome.url, error="not started (interrupted)")
        elif outcome.fetch_next:
            error = "weights not fetched (interrupted): the next plan retries"
            outcome = replace(outcome, fetch_next=False, error=error)
        results.append(outcome)
    return Applied(tuple(results), stop.requested.is_set())


def _apply_one(item: PlanItem, client: ModalClient, apps_dir: Path, fetch_weights: bool, report: Progress) -> Outcome:
    app = item.app
    assert app is not None
    started = time.monotonic()
    fetch_next = fetch_weights and item.fetch_weights
    try:
        if item.action is Action.UNCHANGED:
            if item.record_state:  # deployed by an older fleet and current: only its record is rewritten
                client.set_tags(item.app_name, tags_for(app, weights=Weights.OK))
            url = client.web_url(item.app_name, app.class_name)
            report(item.name, "unchanged, skipped (its snapshot is kept)")
            return Outcome(item, "skipped", time.monotonic() - started, url=url)
        if item.action is Action.FETCH_WEIGHTS:
            url = client.web_url(item.app_name, app.class_name)
            if not fetch_next:
                report(item.name, "weights still to fetch, skipped (--skip-weights)")
                return Outcome(item, "skipped", time.monotonic() - started, url=url)
            return Outcome(item, "weights pending", time.monotonic() - started, url=url, fetch_next=True)
        if item.action is Action.UPDATE_LIVE:
            return _update_live(item, client, started, fetch_next, report)
        report(item.name, f"deploying ({item.action.value})")
        weights = Weights.PENDING if fetch_weights else Weights.SKIPPED
        published = client.deploy(
            apps_dir / app.filename,
            app.module_name,
            app.class_name,
            tags_for(app, weights=weights),
            pending_tags=tags_for(app, weights=Weights.PENDING, pending=True),
        )
        seconds = time.monotonic() - started
        report(item.name, f"deployed in {seconds:.1f}s: {published.url}")
        notes = deploy_notes(published.warnings, snapshot=app.snapshot)
        for note in notes:
            report(item.name, f"note: {note}")
        return Outcome(item, "deployed", seconds, url=published.url, fetch_next=fetch_next, notes=notes)
    except Exception as exc:  # noqa: BLE001 - one app's failure is reported, never raised over the others
        return _failed(item, exc, started, report)


def deploy_notes(warnings: tuple[str, ...], *, snapshot: bool) -> tuple[str, ...]:
    """Modal's warnings about a deploy, in its words; one about snapshots on a snapshot model also says what
    to ask Modal for, since GPU memory snapshots are an alpha feature a workspace must have enabled."""
    from .probe import SNAPSHOT_ALPHA_HINT

    notes = []
    for warning in warnings:
        about_snapshots = snapshot and "snapshot" in warning.lower()
        notes.append(f"Modal: {warning}" + (f" ({SNAPSHOT_ALPHA_HINT})" if about_snapshots else ""))
    return tuple(notes)


def _update_live(item: PlanItem, client: ModalClient, started: float, fetch_next: bool, report: Progress) -> Outcome:
    """Scaling only: Modal's autoscaler API on the running class, then the new values into the tags. The
    tags say "scaling pending" in between, so a failure half-way is retried, never taken as done."""
    app = item.app
    assert app is not None and app.scaling is not None and item.deployed is not None
    weights = item.deployed.recorded.weights if app.has_weights else None
    report(item.name, f"updating scaling live ({item.why}); no deploy, snapshot kept")
    client.set_tags(item.app_name, tags_for(app, weights=weights, scaling_pending=True))
    client.update_autoscaler(item.app_name, app.class_name, app.scaling)
    client.set_tags(item.app_name, tags_for(app, weights=weights))
    url = client.web_url(item.app_name, app.class_name)
    seconds = time.monotonic() - started
    report(item.name, f"scaling updated in {seconds:.1f}s")
    return Outcome(item, "updated live", seconds, url=url, fetch_next=fetch_next)


def _fetch_weights(done: Outcome, client: ModalClient, report: Progress) -> Outcome:
    """Run the app's CPU prefetch; on success record it (fleet-weights: ok). A failure leaves "pending"
    recorded, so the next plan retries the fetch alone."""
    item = done.item
    assert item.app is not None
    started = time.monotonic()
    try:
        report(item.name, "fetching weights into the shared cache (CPU container)")
        client.fetch_weights(item.app_name)
        client.set_tags(item.app_name, tags_for(item.app, weights=Weights.OK))
        report(item.name, f"weights in the cache ({time.monotonic() - started:.1f}s)")
        result = "weights fetched" if item.action is Action.FETCH_WEIGHTS else done.result
        return replace(done, result=result, seconds=done.seconds + time.monotonic() - started, fetch_next=False)
    except Exception as exc:  # noqa: BLE001 - reported per model
        what = "fetching weights failed"
        if item.action is not Action.FETCH_WEIGHTS:
            what = f"{done.result}, but {what}"
        failed = _failed(item, exc, started, report, what=what)
        return replace(failed, seconds=done.seconds + failed.seconds, url=done.url)


def _failed(item: PlanItem, exc: Exception, started: float, report: Progress, what: str = "") -> Outcome:
    error = f"{what}: {describe_error(exc)}" if what else describe_error(exc)
    report(item.name, f"FAILED: {error}")
    return Outcome(item, "failed", time.monotonic() - started, error=error)
