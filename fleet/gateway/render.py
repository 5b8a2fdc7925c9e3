"""The gateway's Modal app, rendered from the catalog like a model's (deploy side: never shipped).

`render_gateway(catalog)` gives a `GatewayApp`, which answers the plan's app protocol (fleet.plan.PlannedApp)
like a model's `RenderedApp`, so `fleet plan` and `fleet deploy --all` treat it as one more item: a CPU-only
app with its own small image (Starlette + httpx, no vLLM), no snapshot to lose and no weights to fetch.
"""

from __future__ import annotations

import hashlib
import re
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import FleetError
from ..render import AppFromSpec
from ..spec import Catalog, GatewaySettings, ModelSpec, Settings

NAME = "gateway"
CLASS_NAME = "Gateway"
PACKAGE_DIR = Path(__file__).resolve().parent
# What the container runs: the package minus this (deploy-side) file. Hashed into the spec hash, so a
# change to the gateway's code shows as `changed` in the plan.
SHIPPED_FILES = ("__init__.py", "config.py", "store.py", "keys.py", "usage.py", "proxy.py", "app.py")
# The versions the tests run against; pinned so a rebuild never picks up a surprise.
IMAGE_PACKAGES = ("starlette==1.10.0", "httpx==0.28.1")
PYTHON_VERSION = "3.12"
SCALEDOWN_WINDOW = 300
MAX_TIMEOUT = 24 * 3600


@dataclass(frozen=True)
class GatewaySpec:
    """The gateway as the deploy path sees an app. No GPU, no snapshot, no weights to fetch."""

    settings: Settings = field(repr=False)
    source: str  # the file its settings come from, like a model's catalog file
    models: tuple[dict[str, Any], ...]
    timeout: int
    name: str = NAME
    class_name: str = CLASS_NAME
    gpu_type: str = "CPU"
    gpu_count: int = 0
    snapshot: bool = False
    fetches_weights: bool = False
    gated: bool = False

    @property
    def gateway(self) -> GatewaySettings:
        return self.settings.gateway

    @property
    def app_name(self) -> str:
        return f"{self.settings.prefix}-{NAME}"

    @property
    def label(self) -> str:
        return self.app_name

    @property
    def module_name(self) -> str:
        return re.sub(r"[^A-Za-z0-9_]", "_", self.app_name)

    @property
    def gpu(self) -> str:
        return "none (CPU)"

    @property
    def secrets(self) -> tuple[str, ...]:
        return (self.settings.api_key_secret,)  # the internal key the gateway sends to the model apps


@dataclass(frozen=True)
class GatewayApp(AppFromSpec):
    """The rendered gateway as the plan sees an app (fleet.plan.PlannedApp)."""

    spec: GatewaySpec
    source: str
    spec_hash: str  # of the source and the gateway code it ships

    snapshot = False
    has_weights = False
    gpu_type = None
    gpu_count = 0
    # Scaling changes redeploy it: the gateway has no snapshot, so a redeploy costs a few seconds of CPU.
    scaling = None

    @property
    def startup_timeout(self) -> int:
        return 60

    @property
    def deploy_keys(self) -> dict[str, str]:
        """Recorded in the app's tags so a plan can say what changed (long values are kept as a digest)."""
        settings = self.spec.gateway
        return {
            "gateway": json.dumps(asdict(settings), sort_keys=True),
            "gateway.models": ",".join(m["name"] for m in self.spec.models),
        }


def gateway_models(models: tuple[ModelSpec, ...]) -> tuple[dict[str, Any], ...]:
    """Each model as the gateway needs it: what /v1/models shows and where and how long to wait."""
    return tuple(
        {
            "name": m.name,
            "description": m.description,
            "context_length": m.max_model_len,
            "modalities": ("text", "image") if m.multi_modal else ("text",),
            "startup_budget": float(m.startup_timeout),
            "request_timeout": float(m.request_timeout),
            "app_name": m.app_name,
            "class_name": m.class_name,
        }
        for m in models
    )


def render_gateway(catalog: Catalog) -> GatewayApp:
    """The gateway's app for this catalog."""
    from ..render import app_tags

    clash = [m for m in catalog.models if m.app_name == f"{catalog.settings.prefix}-{NAME}"]
    if clash:
        raise FleetError(f"{clash[0].file}: name: '{NAME}' is the gateway's app name; rename the model")
    spec = GatewaySpec(
        settings=catalog.settings,
        source=str(Path(catalog.models[0].source).with_name("_fleet.yaml")) if catalog.models else "_fleet.yaml",
        models=gateway_models(catalog.models),
        timeout=min(MAX_TIMEOUT, max((m.startup_timeout + m.request_timeout for m in catalog.models), default=600)),
    )
    source = _template().render(
        spec=spec,
        gateway=spec.gateway,
        tags=app_tags(spec),  # type: ignore[arg-type]
        packages=IMAGE_PACKAGES,
        python_version=PYTHON_VERSION,
        shipped_files=SHIPPED_FILES,
        scaledown_window=SCALEDOWN_WINDOW,
    )
    return GatewayApp(spec=spec, source=source, spec_hash=gateway_hash(source))


def gateway_hash(source: str) -> str:
    digest = hashlib.sha256(source.encode())
    for name in SHIPPED_FILES:
        digest.update((PACKAGE_DIR / name).read_bytes())
    return digest.hexdigest()[:16]


def _template() -> Any:
    from ..render import _template as model_template

    return model_template().environment.get_template("gateway.py.j2")


def gateway_apps(catalog: Catalog) -> list[GatewayApp]:
    """[the gateway's rendered app] when `gateway.enabled` in _fleet.yaml, else []: what a whole-catalog
    render, plan, deploy, status or orphan search adds to the models' apps."""
    return [render_gateway(catalog)] if catalog.settings.gateway.enabled else []
