"""Render one standalone Modal app per model from templates/app.py.j2.

Every catalog value reaches the Python source through the `py` filter (a literal from `repr`, for plain
data only), so no model id, flag or env value can become code. Same catalog, same bytes.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import tempfile
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

from .errors import FleetError
from .spec import ModelSpec, Settings
from .state import TAG_CATALOG_FILE, TAG_MANAGED, TAG_MODEL, TAG_PREFIX, TAG_SPEC_HASH, ScalingValues

# templates/ of the checkout (an editable install); a wheel installs it under <prefix>/share/fleet/.
CHECKOUT_TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
INSTALLED_TEMPLATES = Path(sys.prefix) / "share" / "fleet" / "templates"
TEMPLATES_DIR = CHECKOUT_TEMPLATES if CHECKOUT_TEMPLATES.is_dir() else INSTALLED_TEMPLATES
RUNTIME_FILES = (Path(__file__).with_name("__init__.py"), Path(__file__).with_name("runtime.py"))
# Shipped only with locked models (their download_weights fetches the locked files through it).
LOCKED_WEIGHTS_FILE = Path(__file__).with_name("weights.py")
WEB_STARTUP_TIMEOUT = 60
LINE_WIDTH = 100
# The environment every engine container needs (facts.md, the reference design).
IMAGE_ENV = {
    "HF_HOME": "/root/.cache/huggingface",
    "HF_XET_HIGH_PERFORMANCE": "1",
    "SAFETENSORS_FAST_GPU": "1",
    "TORCHINDUCTOR_COMPILE_THREADS": "1",
    "VLLM_CACHE_ROOT": "/root/.cache/vllm",
    "VLLM_WORKER_MULTIPROC_METHOD": "spawn",
}
__all__ = ["TAG_CATALOG_FILE", "TAG_MANAGED", "TAG_MODEL", "TAG_PREFIX", "TAG_SPEC_HASH"]  # re-exported from fleet.state
# Stand-ins for the live-changeable scaling values when hashing: a change to them alone is no redeploy.
# (values no catalog can hold: the schema wants them >= 0, so putting the real ones back is exact)
_MASKED_SCALING = {"min_containers": -910001, "max_containers": -910002, "scaledown_window": -910003}
# Environment values may be private: tags record only their digest.
SECRET_KEYS = frozenset({"vllm.env"})


class AppFromSpec:
    """The naming part of the plan's app protocol (fleet.plan.PlannedApp), answered from the app's spec:
    what a model's `RenderedApp` and the gateway's `GatewayApp` share."""

    spec: Any

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def app_name(self) -> str:
        return self.spec.app_name

    @property
    def module_name(self) -> str:
        return self.spec.module_name

    @property
    def class_name(self) -> str:
        return self.spec.class_name

    @property
    def filename(self) -> str:
        return f"{self.spec.module_name}.py"

    @property
    def catalog_file(self) -> str:
        return Path(self.spec.source).name

    @property
    def secrets(self) -> tuple[str, ...]:
        return self.spec.secrets


@dataclass(frozen=True)
class RenderedApp(AppFromSpec):
    """One model's rendered Modal app, and what the plan compares with the deployed app's tags.

    It answers the plan's app protocol (fleet.plan.PlannedApp): another kind of app (the gateway) can
    join a plan by answering the same attributes.
    """

    spec: ModelSpec
    source: str
    spec_hash: str  # of the source (scaling masked out) and the runtime it ships

    @property
    def scaling(self) -> ScalingValues:
        s = self.spec.scaling
        return ScalingValues(s.min_containers, s.max_containers, s.scaledown_window)

    @property
    def snapshot(self) -> bool:
        return self.spec.snapshot

    @property
    def gpu_type(self) -> str | None:
        return self.spec.gpu_type

    @property
    def gpu_count(self) -> int:
        return self.spec.gpu_count

    @property
    def startup_timeout(self) -> int:
        return self.spec.startup_timeout

    @property
    def has_weights(self) -> bool:
        return True

    @property
    def secret_keys(self) -> frozenset[str]:
        return SECRET_KEYS

    @property
    def deploy_keys(self) -> dict[str, str]:
        return deploy_keys(self.spec)

    @property
    def legacy_hash(self) -> str:
        return legacy_spec_hash(self.source)


def render_app(spec: ModelSpec) -> RenderedApp:
    """Render once with stand-ins for the live-changeable scaling values (hashed: the app's identity), then
    put the real values in their place (the source that is deployed carries them)."""
    masked = _render_source(replace(spec, scaling=replace(spec.scaling, **_MASKED_SCALING)))
    source = masked
    for key, stand_in in _MASKED_SCALING.items():
        line = f"    {key}={stand_in},\n"
        if masked.count(line) != 1:  # the template no longer renders the key as expected: a bug, not input
            raise AssertionError(f"templates/app.py.j2 must render {key!r} once as {line.strip()!r}")
        source = source.replace(line, f"    {key}={py_literal(getattr(spec.scaling, key))},\n")
    shipped = (LOCKED_WEIGHTS_FILE,) if spec.locked else ()
    return RenderedApp(spec=spec, source=source, spec_hash=spec_hash(masked, shipped))


def _render_source(spec: ModelSpec) -> str:
    return _template().render(
        spec=spec,
        settings=spec.settings,
        image_ref=image_ref(spec.settings),
        image_env=IMAGE_ENV,
        tags=app_tags(spec),
        web_startup_timeout=WEB_STARTUP_TIMEOUT,
    )


def app_tags(spec: ModelSpec) -> dict[str, str]:
    """The tags an app is created with (Modal applies constructor tags only on creation): managed and its
    file, but no spec hash, so a first deploy that ends half-way is planned again, never taken for done.
    The deploy replaces them with the full record (fleet.state.tags_for) once the app is published."""
    return {TAG_MANAGED: "true", TAG_CATALOG_FILE: Path(spec.source).name}


def deploy_keys(spec: ModelSpec) -> dict[str, str]:
    """The catalog keys whose change needs a redeploy, as their deployed values are recorded in tags."""
    return {
        "model.id": spec.model_id,
        "model.revision": spec.revision,
        "model.max_model_len": str(spec.max_model_len),
        "model.multi_modal": str(spec.multi_modal).lower(),
        "model.gated": str(spec.gated).lower(),
        "gpu": spec.gpu,
        "gpu.memory_utilization": str(spec.memory_utilization),
        "vllm.version": spec.settings.vllm_version,
        "vllm.args": json.dumps(list(spec.vllm_args)),
        "vllm.fast_boot": str(spec.fast_boot).lower(),
        "vllm.env": json.dumps(dict(spec.env), sort_keys=True),
        "snapshot": str(spec.snapshot).lower(),
        "scaling.max_concurrent_requests": str(spec.scaling.max_concurrent_requests),
        "timeouts": f"{spec.startup_timeout}.{spec.request_timeout}",
    }


def render_all(specs: list[ModelSpec]) -> list[RenderedApp]:
    return [render_app(spec) for spec in specs]


def image_ref(settings: Settings) -> str:
    return f"vllm/vllm-openai:v{settings.vllm_version}"


def spec_hash(source: str, shipped: tuple[Path, ...] = ()) -> str:
    """What makes a deployed app differ: its source and the runtime files shipped beside it."""
    extra = b"".join(_file_digest(path) for path in shipped)
    return hashlib.sha256(source.encode() + _runtime_digest() + extra).hexdigest()[:16]


@cache
def _file_digest(path: Path) -> bytes:
    return hashlib.sha256(path.read_bytes()).digest()


@cache
def _runtime_bytes() -> bytes:
    """The runtime files, read once per process (a 500-model plan would read them 500 times)."""
    return b"".join(path.read_bytes() for path in RUNTIME_FILES)


@cache
def _runtime_digest() -> bytes:
    return hashlib.sha256(_runtime_bytes()).digest()


def legacy_spec_hash(source: str) -> str:
    """The hash fleet recorded before the plan masked scaling out (the whole source, then the runtime files):
    how an app deployed by an older fleet is recognised as current, so upgrading fleet costs no snapshot."""
    return hashlib.sha256(source.encode() + _runtime_bytes()).hexdigest()[:16]


def write_apps(apps: list[RenderedApp], out_dir: Path) -> list[Path]:
    """Write each app atomically (a temporary file, then a rename): a deploy, or an interrupted render,
    never imports a half-written file. A file whose content is already right is left alone."""
    written = []
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for app in apps:
            path = out_dir / app.filename
            if not (path.is_file() and path.read_text(encoding="utf-8") == app.source):
                write_atomically(path, app.source)
            written.append(path)
    except OSError as exc:
        raise FleetError(f"cannot write the rendered apps into '{out_dir}': {exc.strerror}") from None
    return written


def write_atomically(path: Path, text: str) -> None:
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def stale_files(apps: list[RenderedApp], out_dir: Path, *, prefix: str | None = None) -> list[Path]:
    """Rendered files on disk that are missing or differ from what the catalog gives now; with `prefix`
    (a check of the whole catalog), also files of that prefix left over from models no longer in it."""
    stale = []
    for app in apps:
        path = out_dir / app.filename
        if not path.is_file() or path.read_text(encoding="utf-8") != app.source:
            stale.append(path)
    if prefix is not None and out_dir.is_dir():
        expected = {app.filename for app in apps}
        stale += sorted(p for p in out_dir.glob(f"{prefix}_*.py") if p.name not in expected)
    return stale


def py_literal(value: Any, indent: int = 0) -> str:
    """A Python literal for plain data; anything else is a bug in the caller, not something to stringify.

    A collection too long for one line is written one item per line, as a formatter would.
    """
    flat = _flat_literal(value)
    if indent + len(flat) <= LINE_WIDTH or not isinstance(value, (tuple, list, dict)) or not value:
        return flat
    inner = " " * (indent + 4)
    if isinstance(value, dict):
        items = [f"{inner}{_flat_literal(k)}: {py_literal(v, indent + 4)}," for k, v in value.items()]
    else:
        items = [f"{inner}{py_literal(v, indent + 4)}," for v in value]
    opening, closing = {tuple: "()", list: "[]", dict: "{}"}[type(value)]
    return opening + "\n" + "\n".join(items) + "\n" + " " * indent + closing


def _flat_literal(value: Any) -> str:
    if value is None or isinstance(value, (bool, int, str)):
        return repr(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"cannot render non-finite float {value!r}")
        return repr(value)
    if isinstance(value, (tuple, list)):
        items = [_flat_literal(v) for v in value]
        if isinstance(value, tuple):
            return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"
        return f"[{', '.join(items)}]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_flat_literal(k)}: {_flat_literal(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot render {type(value).__name__} into generated source")


def docstring_text(value: str) -> str:
    """Text safe inside a triple-quoted docstring: no quotes, backslashes or line breaks."""
    return "".join(c for c in value if c.isalnum() or c in " .-_:/")


@cache
def _template() -> Any:
    from jinja2 import FileSystemLoader, StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    env = SandboxedEnvironment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["py"] = py_literal
    env.filters["docstring"] = docstring_text
    return env.get_template("app.py.j2")
