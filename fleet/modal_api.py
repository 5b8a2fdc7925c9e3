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
from collections.abc import Callable
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


@_translating
class ModalClient:
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
    ) -> str | None:
        """Deploy one rendered app file; record `tags` on it (a redeploy does not send constructor tags).

        With `pending_tags`, an app already deployed is first marked with them: if that write fails, nothing
        is deployed; if the deploy or the final write fails, the app stays marked pending, so the next plan
        never takes it for what the catalog says. Returns the web endpoint's URL.
        """
        import modal
        from modal.exception import NotFoundError

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
        app.deploy(environment_name=self.environment)
        try:
            app.set_tags(tags)
        except Exception as exc:
            raise ModalError(
                f"deployed, but recording its state failed ({describe_error(exc)}): it stays marked pending, so "
                "the next plan redeploys it"
            ) from exc
        return getattr(module, class_name)().serve.get_web_url()

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


