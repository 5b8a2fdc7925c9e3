"""The one narrow seam between fleet and Modal: everything that talks to Modal's control plane is here.

It uses the real `modal` client library (imported lazily: `validate`, `render` and `deploy --dry-run` never
load it). Tests point that client at a local fake of Modal's gRPC server, so nothing here is mocked.
"""

from __future__ import annotations

import importlib.util
import socket
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import ModuleType
from urllib.parse import urlparse

from .errors import ModalUnavailable
from .render import TAG_MANAGED

CONNECT_TIMEOUT = 5.0


@dataclass(frozen=True)
class DeployedApp:
    """What Modal knows about one deployed app of the fleet."""

    name: str
    app_id: str
    tags: dict[str, str]
    deployed_at: datetime | None


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

    def deployed_apps(self) -> dict[str, DeployedApp]:
        """Every app in the environment that fleet deployed (tagged as managed), by app name."""
        import modal

        environment = modal.Environment.from_name(self._environment_name())
        found = {}
        for app in environment.apps.list():
            if not app.name:
                continue
            tags = app.get_tags()
            if tags.get(TAG_MANAGED) != "true":
                continue
            deployed_at = app.info().lifecycle.deployed_at  # the listing already carries it
            found[app.name] = DeployedApp(app.name, app.app_id, tags, deployed_at)
        return found

    def web_url(self, app_name: str, class_name: str) -> str | None:
        import modal

        cls = modal.Cls.from_name(app_name, class_name, environment_name=self.environment)
        return cls().serve.get_web_url()

    # --- changing state ---

    def deploy(self, path: Path, module_name: str, class_name: str, tags: dict[str, str]) -> tuple[str, str | None]:
        """Deploy one rendered app file; record `tags` on it (a redeploy does not send constructor tags).

        Returns the app id and the web endpoint's URL.
        """
        module = import_app_module(path, module_name)
        app = module.app
        app.deploy(environment_name=self.environment)
        app.set_tags(tags)
        return app.app_id, getattr(module, class_name)().serve.get_web_url()

    def fetch_weights(self, app_name: str) -> str:
        """Run the deployed app's CPU download function: weights land in the shared cache before a GPU waits."""
        import modal

        download = modal.Function.from_name(app_name, "download_weights", environment_name=self.environment)
        return download.remote()

    def stop(self, app_name: str) -> None:
        import modal

        modal.App.lookup(app_name, environment_name=self.environment).stop()

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
    """One line for a failed Modal call, for the summary table."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


