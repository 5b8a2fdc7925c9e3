"""Render one standalone Modal app per model from templates/app.py.j2.

Every catalog value reaches the Python source through the `py` filter (a literal from `repr`, for plain
data only), so no model id, flag or env value can become code. Same catalog, same bytes.
"""

from __future__ import annotations

import hashlib
import math
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from .errors import FleetError
from .spec import ModelSpec, Settings

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
TAG_MANAGED = "fleet-managed"
TAG_SPEC_HASH = "fleet-spec-hash"
TAG_CATALOG_FILE = "fleet-catalog-file"
# For `fleet cost`: Modal's billing report groups an app's cost by these (the app name alone would do until
# a model is renamed or two fleets share a workspace).
TAG_MODEL = "fleet-model"
TAG_PREFIX = "fleet-prefix"


@dataclass(frozen=True)
class RenderedApp:
    spec: ModelSpec
    source: str
    spec_hash: str  # of the source and the runtime it ships: what `plan` compares with the deployed tag

    @property
    def filename(self) -> str:
        return f"{self.spec.module_name}.py"


def render_app(spec: ModelSpec) -> RenderedApp:
    source = _template().render(
        spec=spec,
        settings=spec.settings,
        image_ref=image_ref(spec.settings),
        image_env=IMAGE_ENV,
        tags=app_tags(spec),
        web_startup_timeout=WEB_STARTUP_TIMEOUT,
    )
    shipped = (LOCKED_WEIGHTS_FILE,) if spec.locked else ()
    return RenderedApp(spec=spec, source=source, spec_hash=spec_hash(source, shipped))


def app_tags(spec: ModelSpec, spec_hash: str | None = None) -> dict[str, str]:
    """Tags Modal keeps on the app: how `plan` recognises fleet's apps and their version.

    Modal allows only letters, digits, '-', '.' and '_' in tag values: the file's name, not its path.
    """
    tags = {TAG_MANAGED: "true", TAG_CATALOG_FILE: Path(spec.source).name}
    tags.update({TAG_MODEL: spec.name, TAG_PREFIX: spec.settings.prefix})
    if spec_hash is not None:
        tags[TAG_SPEC_HASH] = spec_hash
    return tags


def render_all(specs: list[ModelSpec]) -> list[RenderedApp]:
    return [render_app(spec) for spec in specs]


def image_ref(settings: Settings) -> str:
    return f"vllm/vllm-openai:v{settings.vllm_version}"


def spec_hash(source: str, shipped: tuple[Path, ...] = ()) -> str:
    """What makes a deployed app differ: its source and the runtime files shipped beside it."""
    digest = hashlib.sha256(source.encode())
    for path in RUNTIME_FILES + shipped:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def write_apps(apps: list[RenderedApp], out_dir: Path) -> list[Path]:
    written = []
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for app in apps:
            path = out_dir / app.filename
            path.write_text(app.source, encoding="utf-8")
            written.append(path)
    except OSError as exc:
        raise FleetError(f"cannot write the rendered apps into '{out_dir}': {exc.strerror}") from None
    return written


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
