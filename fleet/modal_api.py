"""The one narrow seam between fleet and Modal: everything that talks to Modal's control plane is here.

It uses the real `modal` client library (imported lazily: `validate`, `render` and `deploy --dry-run` never
load it). Tests point that client at a local fake of Modal's gRPC server, so nothing here is mocked.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import json
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar
from urllib.parse import urlparse

from .errors import FleetError, ModalError, ModalUnavailable
from .state import LOCK_DICT, TAG_MANAGED, DeployedApp, LockHolder, ScalingValues

__all__ = ["DeployedApp", "ModalClient", "describe_error", "import_app_module"]

CONNECT_TIMEOUT = 5.0
CLI_TIMEOUT = 120.0
TAG_READS_IN_FLIGHT = 64
_F = TypeVar("_F", bound=Callable[..., Any])


def translated(method: _F) -> _F:
    """Modal's and gRPC's own exceptions leave the seam as fleet's ModalError (a FleetError), named by their
    kind: callers and the CLI never need to know the modal package's exception tree."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except FleetError:
            raise
        except Exception as exc:
            if not _is_modal_error(exc):
                raise
            raise ModalError(describe_error(exc)) from exc

    return wrapper  # type: ignore[return-value]


def _is_modal_error(exc: BaseException) -> bool:
    return type(exc).__module__.split(".")[0] in ("modal", "grpclib", "synchronicity") or isinstance(
        exc, (TimeoutError, ConnectionError)
    )


def _translating(cls: type) -> type:
    """Every public method of the seam translates Modal's errors, including methods added later."""
    for name, value in list(vars(cls).items()):
        if not name.startswith("_") and callable(value):
            setattr(cls, name, translated(value))
    return cls


@dataclass(frozen=True)
class Published:
    """What a deploy answered: the web endpoint's URL and the server's warnings, in Modal's words."""

    url: str | None
    warnings: tuple[str, ...] = ()


# --- operating the fleet: stats, logs, history, rollback, billing (fleet/observe.py) ------------------------
# Modal's answers are turned into the small frozen types below, so nothing past this seam sees a modal type,
# and Modal's errors into FleetErrors that name the app.


@dataclass(frozen=True)
class AppCounts:
    """One app's traffic over a window (`modal app stats`). `has_data` is Modal's own test: any request,
    call or container at all in the window; without it the zeros mean "Modal has nothing", not "zero"."""

    requests: int
    failed: int
    containers: int
    container_errors: int
    has_data: bool


@dataclass(frozen=True)
class LogLine:
    at: datetime
    text: str  # as Modal sent it: not redacted yet (fleet/observe.py redacts before anything prints it)
    container: str  # "ta-..." or "" when Modal did not say
    source: str  # stdout | stderr | system


@dataclass(frozen=True)
class Deployment:
    """One version in an app's deployment history."""

    version: int
    deployed_at: datetime | None
    deployed_by: str
    client_version: str
    rollback_of: int | None  # the version this one rolled back to, when it is a rollback
    current: bool


@dataclass(frozen=True)
class BillingRow:
    """One app's cost in one interval of the workspace's billing report."""

    app_id: str
    app_name: str
    environment: str
    interval_start: datetime
    cost: Decimal
    by_resource: dict[str, Decimal]
    tags: dict[str, str]


class AppNotDeployed(FleetError):
    pass


@contextmanager
def _modal_errors(what: str) -> Iterator[None]:
    """Modal's errors for one call, as a FleetError that says what was being done."""
    from modal.exception import NotFoundError

    try:
        yield
    except FleetError:
        raise
    except NotFoundError as exc:
        raise AppNotDeployed(f"{what}: not found on Modal ({exc})") from None
    except Exception as exc:
        if not _is_modal_error(exc):
            raise
        raise ModalUnavailable(f"{what}: {describe_error(exc)}") from None


class OpsMixin:
    """The calls `fleet status` (live columns), `logs`, `cost` and `rollback` make; part of ModalClient."""

    environment: str | None

    def _ops_app(self, app_name: str) -> Any:
        """The deployed app's handle (every call on it needs its id). The first miss lists every live app
        of the environment in one call, so a status of 50 models costs one listing, not 50 lookups."""
        import modal

        cache: dict[str, Any] = self.__dict__.setdefault("_ops_apps", {})
        with self.__dict__.setdefault("_ops_lock", threading.Lock()):
            if app_name not in cache and not self.__dict__.get("_ops_listed"):
                self.__dict__["_ops_listed"] = True
                with _modal_errors("listing the environment's apps"):
                    environment = modal.Environment.from_name(self._environment_name())  # type: ignore[attr-defined]
                    cache.update({app.name: app for app in environment.apps.list() if app.name})
        if app_name not in cache:  # not live: the lookup says why, in Modal's words
            with _modal_errors(f"app {app_name}"):
                cache[app_name] = modal.App.lookup(app_name, environment_name=self.environment)
        return cache[app_name]

    def running_containers(self) -> dict[str, int]:
        """Containers running now, per deployed app of the environment: one call for the whole fleet."""
        from modal.experimental import list_deployed_apps

        with _modal_errors("listing running containers"):
            listed = list_deployed_apps(self._environment_name())  # type: ignore[attr-defined]
            return {info.name: info.containers for info in listed}

    def app_counts(self, app_name: str, since: datetime, until: datetime) -> AppCounts:
        app = self._ops_app(app_name)
        with _modal_errors(f"stats of {app_name}"):
            stats = app.stats(since=since, until=until)
        servers, functions = stats.servers.total, stats.functions.total
        traffic = [servers.requests.total, servers.requests.failed, functions.calls.total, functions.calls.failed]
        containers = [servers.containers, functions.containers]
        return AppCounts(
            requests=servers.requests.total + functions.calls.total,
            failed=servers.requests.failed + functions.calls.failed,
            containers=sum(c.total for c in containers),
            container_errors=sum(c.errors for c in containers),
            has_data=any(traffic) or any(c.total or c.errors for c in containers),
        )

    def search_logs(self, app_name: str, since: datetime, text: str) -> list[LogLine]:
        """The app's lines since `since` that contain `text` (Modal filters them: few lines, one round trip
        or two, where reading every line of a busy model would take seconds)."""
        app = self._ops_app(app_name)
        with _modal_errors(f"logs of {app_name}"):
            return [_log_line(entry) for entry in app.logs.fetch(since=since, search_text=text)]

    def logs_between(self, app_name: str, since: datetime, until: datetime | None = None) -> Iterator[LogLine]:
        app = self._ops_app(app_name)
        with _modal_errors(f"logs of {app_name}"):
            for entry in app.logs.fetch(since=since, until=until):
                yield _log_line(entry)

    def follow_logs(self, app_name: str) -> Iterator[LogLine]:
        """New log lines as they come, until the app stops (or the user interrupts)."""
        app = self._ops_app(app_name)
        with _modal_errors(f"logs of {app_name}"):
            for entry in app.logs.stream():
                yield _log_line(entry)

    def deployment_history(self, app_name: str) -> list[Deployment]:
        """Newest first. modal 1.6 has no Python API for it; `modal app history` is public, so it is used."""
        args = ["app", "history", app_name, "--json"] + (["--env", self.environment] if self.environment else [])
        try:
            rows = json.loads(self._modal_cli(*args))  # type: ignore[attr-defined]
        except ValueError as exc:
            raise ModalUnavailable(f"`modal app history` did not print JSON: {exc}") from None
        found = [_deployment(row) for row in rows]
        newest = max((d.version for d in found), default=0)
        return sorted(
            (Deployment(**{**d.__dict__, "current": d.version == newest}) for d in found),
            key=lambda d: d.version,
            reverse=True,
        )

    def rollback(self, app_name: str, version: int | None) -> str:
        """Redeploy an earlier version through `modal app rollback` (the previous one when `version` is
        None); returns what Modal printed (its last line names the deployment's page)."""
        args = ["app", "rollback", app_name] + ([f"v{version}"] if version is not None else [])
        args += ["--env", self.environment] if self.environment else []
        out = self._modal_cli(*args)  # type: ignore[attr-defined]
        lines = [line.strip() for line in out.splitlines() if line.strip()]
        return lines[-1] if lines else ""

    def set_app_tag(self, app_name: str, key: str, value: str) -> None:
        """Change one tag, keeping the others (tags are sent whole)."""
        app = self._ops_app(app_name)
        with _modal_errors(f"tags of {app_name}"):
            tags = dict(app.get_tags())
            tags[key] = value
            app.set_tags(tags)

    def billing_report(self, start: datetime, end: datetime, tag_names: list[str]) -> list[BillingRow]:
        """The workspace's daily cost per app in [start, end), with the given tags (`modal billing report`)."""
        import modal

        with _modal_errors("billing report"):
            items = modal.Workspace.from_context().billing.report(
                start=start, end=end, resolution="d", tag_names=tag_names
            )
        return [
            BillingRow(
                app_id=item.object_id,
                app_name=item.description,
                environment=item.environment_name,
                interval_start=item.interval_start,
                cost=item.cost,
                by_resource=dict(item.cost_by_resource),
                tags=dict(item.tags),
            )
            for item in items
        ]

    def billing_rates(self) -> dict[str, Decimal]:
        """The workspace's current prices (`modal billing rates`), by Modal's resource name."""
        import modal

        with _modal_errors("billing rates"):
            rates = modal.Workspace.from_context().billing.rates()
            return {key: rates[key] for key in rates}


def _deployment(row: dict[str, Any]) -> Deployment:
    """One row of `modal app history --json`: {"version": "v3", "time_deployed": "2026-...+00:00", ...}."""
    stamp = row.get("time_deployed")
    return Deployment(
        version=int(str(row.get("version", "v0")).lstrip("v") or 0),
        deployed_at=datetime.fromisoformat(stamp) if stamp else None,
        deployed_by=str(row.get("deployed_by") or ""),
        client_version=str(row.get("client") or ""),
        rollback_of=None,
        current=False,
    )


def _log_line(entry: Any) -> LogLine:
    container = next((c for c in entry.context_ids if c.startswith("ta-")), "")
    return LogLine(entry.timestamp, entry.message.rstrip("\n"), container, entry.source)



@_translating
class ModalClient(OpsMixin):
    """Modal, as fleet needs it. One instance per command; safe to call from several threads."""

    def __init__(self, environment: str | None) -> None:
        self.environment = environment

    # --- before anything starts ---

    def require_credentials(self) -> None:
        """Fail in a second, with how to log in, instead of a 60 s retry loop deep inside a deploy."""
        import modal.config

        config = modal.config.config
        if not (config.get("token_id") and config.get("token_secret")):
            raise ModalUnavailable(
                "no Modal credentials: run `modal setup` (or `modal token set --token-id ... --token-secret ...`), "
                "or set MODAL_TOKEN_ID and MODAL_TOKEN_SECRET"
            )
        server = urlparse(config.get("server_url"))
        port = server.port or (443 if server.scheme == "https" else 80)
        try:
            socket.create_connection((server.hostname, port), timeout=CONNECT_TIMEOUT).close()
        except OSError as exc:
            raise ModalUnavailable(f"cannot reach Modal at {config.get('server_url')}: {exc}") from None

    def missing_secrets(self, names: list[str]) -> list[str]:
        import modal
        from modal.exception import NotFoundError

        missing = []
        for name in names:
            try:
                modal.Secret.from_name(name, environment_name=self.environment).hydrate()
            except NotFoundError:
                missing.append(name)
        return missing

    # --- reading state ---

    def deployed_apps(self, prefix: str, only: set[str] | None = None) -> dict[str, DeployedApp]:
        """Every app of this fleet (`prefix`) in the environment that fleet deployed, by app name; with
        `only`, just those app names (a plan of a few models reads a few apps' tags, not the fleet's)."""
        import modal

        environment = modal.Environment.from_name(self._environment_name())
        ours = [
            app
            for app in environment.apps.list()
            if app.name and app.name.startswith(f"{prefix}-") and (only is None or app.name in only)
        ]

        async def tags_of(app: modal.App, slots: asyncio.Semaphore) -> dict[str, str]:
            async with slots:
                return await app.get_tags.aio()

        async def all_tags() -> list[dict[str, str]]:
            # One tag lookup per app (the listing has no tags), all in flight together on one connection:
            # a 500-model plan waits for one round of requests, not 500 in a row.
            slots = asyncio.Semaphore(TAG_READS_IN_FLIGHT)
            return await asyncio.gather(*(tags_of(app, slots) for app in ours))

        found = [
            DeployedApp(app.name, app.app_id, tags, app.info().lifecycle.deployed_at)  # info(): from the listing
            for app, tags in zip(ours, asyncio.run(all_tags()))
            if tags.get(TAG_MANAGED) == "true"
        ]
        return {d.name: d for d in found}

    def web_url(self, app_name: str, class_name: str) -> str | None:
        """The app's endpoint URL, or None when the app (or its class) is not there."""
        import modal
        from modal.exception import NotFoundError

        try:
            cls = modal.Cls.from_name(app_name, class_name, environment_name=self.environment)
            return cls().serve.get_web_url()
        except NotFoundError:
            return None

    # --- changing state ---

    def deploy(
        self,
        path: Path,
        module_name: str,
        class_name: str,
        tags: dict[str, str],
        *,
        pending_tags: dict[str, str] | None = None,
    ) -> Published:
        """Deploy one rendered app file; record `tags` on it (a redeploy does not send constructor tags).

        With `pending_tags`, an app already deployed is first marked with them: if that write fails, nothing
        is deployed; if the deploy or the final write fails, the app stays marked pending, so the next plan
        never takes it for what the catalog says. Returns the web endpoint's URL and Modal's warnings (an
        option it ignores, such as GPU snapshots in a workspace that does not have them, is said there).
        """
        import modal
        from modal.exception import NotFoundError
        from modal.runner import deploy_app

        module = import_app_module(path, module_name)
        app = module.app
        if pending_tags is not None:
            try:
                existing = modal.App.lookup(app.name, environment_name=self.environment)
            except NotFoundError:
                existing = None  # a new app is created with pending constructor tags (render.app_tags)
            if existing is not None:
                try:
                    existing.set_tags(pending_tags)
                except Exception as exc:
                    raise ModalError(
                        f"could not mark the app pending before deploying ({describe_error(exc)}); nothing was deployed"
                    ) from exc
        # deploy_app (what App.deploy runs) hands back the server's warnings; App.deploy drops them.
        result = deploy_app(app, environment_name=self.environment)
        try:
            modal.App.lookup(app.name, environment_name=self.environment).set_tags(tags)
        except Exception as exc:
            raise ModalError(
                f"deployed, but recording its state failed ({describe_error(exc)}): it stays marked pending, so "
                "the next plan redeploys it"
            ) from exc
        url = getattr(module, class_name)().serve.get_web_url()
        return Published(url, tuple(result.warnings))

    def set_tags(self, app_name: str, tags: dict[str, str]) -> None:
        """Replace the tags of a deployed app (Modal's set_tags replaces the whole set)."""
        import modal

        modal.App.lookup(app_name, environment_name=self.environment).set_tags(tags)

    def update_autoscaler(self, app_name: str, class_name: str, scaling: ScalingValues) -> ScalingValues:
        """Change a deployed class's scaling in place: no deploy, the GPU snapshot is kept. Returns the values
        Modal reports back. (A later deploy resets Modal's override to the source's values, which carry the
        same numbers: the rendered source is always rendered from the catalog.)"""
        import warnings

        import modal
        from modal.exception import DeprecationError

        # modal 1.6.4's Cls-instance update_autoscaler (the class API, not deprecated) calls the deprecated
        # Function.update_autoscaler inside (modal/cls.py), which would print a deprecation warning to users.
        warnings.filterwarnings(
            "ignore", message=r".*`Function\.update_autoscaler\(\)` is deprecated", category=DeprecationError
        )
        cls = modal.Cls.from_name(app_name, class_name, environment_name=self.environment)
        now = cls().update_autoscaler(
            min_containers=scaling.min_containers,
            max_containers=scaling.max_containers,
            scaledown_window=scaling.scaledown_window,
        )
        return ScalingValues(
            int(now.min_containers or 0), int(now.max_containers or 0), int(now.scaledown_window or 0)
        )

    # --- the deploy lock (a Modal Dict: its put-if-absent is atomic on the server) ---

    def acquire_lock(self, key: str, holder: LockHolder) -> LockHolder | None:
        """Take the lock `key` for `holder`; None when taken, else whoever holds it now."""
        locks = self._locks()
        if locks.put(key, holder.as_dict(), skip_if_exists=True):
            return None
        current = locks.get(key)
        if current is None:  # released between the two calls: try once more
            if locks.put(key, holder.as_dict(), skip_if_exists=True):
                return None
            return LockHolder.from_dict(locks.get(key))
        return LockHolder.from_dict(current)

    def release_lock(self, key: str, holder: LockHolder) -> bool:
        """Release `key` if `holder` (by its token) still holds it; another's lock is never removed."""
        locks = self._locks()
        current = locks.get(key)
        if current is None or LockHolder.from_dict(current).token != holder.token:
            return False
        locks.pop(key, None)
        return True

    def break_lock(self, key: str, stale: LockHolder) -> bool:
        """Remove a stale lock, only if it is still the one that was judged stale (same token)."""
        return self.release_lock(key, stale)

    def _locks(self) -> Any:
        import modal

        return modal.Dict.from_name(LOCK_DICT, environment_name=self.environment, create_if_missing=True)

    def fetch_weights(self, app_name: str) -> str:
        """Run the deployed app's CPU download function: weights land in the shared cache before a GPU waits."""
        import modal

        download = modal.Function.from_name(app_name, "download_weights", environment_name=self.environment)
        return download.remote()

    def stop(self, app_name: str) -> None:
        import modal

        modal.App.lookup(app_name, environment_name=self.environment).stop()

    # --- containers (`fleet prime`, `fleet bench`) ---
    # modal 1.6 has no public Python API for containers; the `modal container` CLI is public, so it is used.

    def containers(self, app_name: str) -> list[str]:
        """Ids of the running containers of a deployed app."""
        import modal

        app_id = modal.App.lookup(app_name, environment_name=self.environment).app_id
        args = ["container", "list", "--json", "--app-id", app_id]
        if self.environment:
            args += ["--env", self.environment]
        try:
            rows = json.loads(self._modal_cli(*args))
        except ValueError as exc:
            raise ModalUnavailable(f"`modal container list` did not print JSON: {exc}") from None
        return [row["container_id"] for row in rows if row.get("app_id", app_id) == app_id]

    def stop_container(self, container_id: str) -> None:
        """Stop one container (its in-flight requests are cancelled). One already stopped is no error."""
        try:
            self._modal_cli("container", "stop", container_id, "-y")
        except ModalUnavailable as exc:
            if "already stopped" not in str(exc):
                raise

    def _modal_cli(self, *args: str) -> str:
        command = [sys.executable, "-m", "modal", *args]
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=CLI_TIMEOUT
            )
        except subprocess.TimeoutExpired:
            raise ModalUnavailable(f"`modal {' '.join(args)}` did not finish in {CLI_TIMEOUT:g}s") from None
        if done.returncode != 0:
            lines = [line.strip() for line in (done.stderr + done.stdout).splitlines() if line.strip()]
            reason = lines[-1] if lines else f"exit code {done.returncode}"
            raise ModalUnavailable(f"`modal {' '.join(args)}` failed: {reason}")
        return done.stdout

    def _environment_name(self) -> str:
        import modal.config

        return self.environment or modal.config.config.get("environment") or "main"


def import_app_module(path: Path, module_name: str) -> ModuleType:
    """Import a rendered app the way `modal deploy FILE` does, so Modal finds its source to ship.

    Always a fresh import: the file may have been rendered again since the last one.
    """
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def describe_error(exc: BaseException) -> str:
    """A failed Modal call, named by its kind: the first line goes in tables, all of it at the end."""
    text = str(exc).strip()
    if isinstance(exc, FleetError):  # already translated: its message names the kind
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


