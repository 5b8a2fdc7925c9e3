"""Load the catalog: read every YAML file, merge `defaults:`, validate, and build ModelSpec objects.

Every problem in every file is collected (never only the first), each with its file, line and key path,
so one run of `fleet validate` shows the whole list.
"""

from __future__ import annotations

import copy
import difflib
import json
import os
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import CatalogInvalid, FleetError, NotInCatalog, Problem, display_path
from .lock import lock_problems, with_lock
from .spec import (
    DEFAULT_MAX_GPUS,
    GPU_MEMORY_GB,
    MAX_GPUS_PER_CONTAINER,
    Catalog,
    ModelSpec,
    Scaling,
    Settings,
)
from .yamlfile import KeyPath, YamlDoc, YamlError, read_yaml

SETTINGS_FILE = "_fleet.yaml"
# A URL host label is at most 63 characters and holds `<workspace>--<label>`: keeping our label this
# short leaves room for a workspace name, so Modal never has to shorten (and garble) the URL.
MAX_LABEL_LENGTH = 40
# Flags fleet sets itself from catalog keys; in `vllm.args` they would fight them (or leak a key).
# vLLM's argument parser reads `--api_key` as `--api-key`: flags are compared after the same folding.
MANAGED_FLAGS: dict[str, str] = {
    "--model": "use model.id instead",
    "--revision": "use model.revision instead",
    "--served-model-name": "use name instead",
    "--tensor-parallel-size": "use gpu.count instead",
    "-tp": "use gpu.count instead",
    "--gpu-memory-utilization": "use gpu.memory_utilization instead",
    "--max-model-len": "use model.max_model_len instead",
    "--enforce-eager": "use vllm.fast_boot instead",
    "--enable-sleep-mode": "use snapshot instead",
    "--host": "the web server's host is fleet's",
    "--port": "the web server's port is fleet's",
    "--api-key": "keys come from the API key secret in _fleet.yaml, never from the catalog",
    "--hf-token": "the token comes from the HF token secret in _fleet.yaml, never from the catalog",
    "--config": "fleet passes several API keys through vLLM's config file",
}
# Environment the runtime or Modal's secrets own: set in `vllm.env`, it would leak a secret into the
# generated source or undo what the runtime set up.
RESERVED_ENV = {
    "VLLM_API_KEY": "the API key secret in _fleet.yaml",
    "HF_TOKEN": "the HF token secret in _fleet.yaml",
    "HUGGING_FACE_HUB_TOKEN": "the HF token secret in _fleet.yaml",
    "FLEET_CONTROL_TOKEN": "the runtime (it guards the engine's control endpoints)",
    "VLLM_SERVER_DEV_MODE": "snapshot (the runtime turns it on only when sleep is used)",
    "PYTHONPATH": "the runtime",
}


@dataclass
class CheckResult:
    """What loading the catalog found: the catalog (None if any error) and every problem."""

    directory: Path
    catalog: Catalog | None
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if not p.warning]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.warning]


@cache
def schema(name: str) -> dict[str, Any]:
    text = resources.files("fleet.schema").joinpath(f"{name}.schema.json").read_text(encoding="utf-8")
    return json.loads(text)


@cache
def _validator(name: str) -> Any:
    import jsonschema  # imported here: `fleet --help` must not pay for it

    return jsonschema.Draft202012Validator(schema(name))


def check_catalog(directory: Path) -> CheckResult:
    """Read and validate the whole catalog; never raises for the user's mistakes, only collects them."""
    if not directory.is_dir():
        raise FleetError(f"catalog directory '{directory}' not found (set --catalog or FLEET_CATALOG)")
    result = CheckResult(directory=directory, catalog=None)
    settings_path = directory / SETTINGS_FILE
    settings, defaults_doc = _load_settings(settings_path, result.problems)
    result.problems.extend(_stray_yml_problems(directory))
    model_paths = model_files(directory)
    if not model_paths and not result.problems:
        result.problems.append(
            Problem(display_path(directory), 0, "", "the catalog is empty: add one NAME.yaml per model")
        )
    specs = []
    for path in model_paths:
        spec = _load_model(path, settings, defaults_doc, settings_path, result.problems)
        if spec is not None:
            specs.append(spec)
    result.problems.extend(_cross_file_problems(specs))
    result.problems.extend(lock_problems(directory, specs))  # missing or stale lock entries (fleet/lock.py)
    result.problems = sorted(set(result.problems))
    if not result.errors and settings is not None:
        result.catalog = Catalog(directory, settings, tuple(sorted(specs, key=lambda s: s.name)))
    return result


def load_catalog(directory: Path, *, strict: bool = False) -> Catalog:
    """The catalog, or CatalogInvalid listing every problem (warnings count as errors when strict)."""
    result = check_catalog(directory)
    if result.errors or (strict and result.warnings) or result.catalog is None:
        raise CatalogInvalid(result.problems)
    return result.catalog


def select(catalog: Catalog, names: tuple[str, ...] | list[str]) -> list[ModelSpec]:
    """The named models (all when no names), or NotInCatalog with the closest names."""
    if not names:
        return list(catalog.models)
    by_name = {m.name: m for m in catalog.models}
    _require_known(names, by_name)
    return [by_name[n] for n in dict.fromkeys(names)]


def _require_known(names: tuple[str, ...] | list[str], known: Any) -> None:
    unknown = [n for n in names if n not in known]
    if unknown:
        raise NotInCatalog("; ".join(f"'{n}' is not in the catalog{_did_you_mean(n, known)}" for n in unknown))


# --- settings -----------------------------------------------------------------------------------------


def _load_settings(path: Path, problems: list[Problem]) -> tuple[Settings | None, YamlDoc]:
    shown = display_path(path)
    doc = YamlDoc(data={})
    if path.exists():
        loaded = _read_mapping(path, problems)
        if loaded is None:
            return None, YamlDoc(data={})
        doc = loaded
    found = _schema_problems("fleet", doc.data, lambda p: (shown, doc.line_of(p)))
    problems.extend(found)
    if found:
        return None, YamlDoc(data={})
    data = apply_defaults(schema("fleet"), doc.data)
    settings = Settings(
        prefix=data["prefix"],
        environment=data["environment"],
        vllm_version=data["vllm_version"],
        hf_cache_volume=data["volumes"]["hf_cache"],
        vllm_cache_volume=data["volumes"]["vllm_cache"],
        api_key_secret=data["secrets"]["api_key"],
        hf_token_secret=data["secrets"]["hf_token"],
    )
    if "name" in data["defaults"]:
        line = doc.line_of(("defaults", "name"))
        problems.append(Problem(shown, line, "defaults.name", "a name cannot be a default: each model has its own"))
        return None, doc
    return settings, doc


# --- models -------------------------------------------------------------------------------------------


def model_files(directory: Path) -> list[Path]:
    """The model files of a catalog: NAME.yaml, not _settings or .hidden files."""
    return sorted(
        p for p in directory.glob("*.yaml") if p.is_file() and not p.name.startswith(("_", "."))
    )


def _stray_yml_problems(directory: Path) -> list[Problem]:
    """A NAME.yml would be silently skipped: say so instead."""
    return [
        Problem(display_path(path), 0, "", f"model files end in .yaml: rename it to {path.stem}.yaml")
        for path in sorted(directory.glob("*.yml"))
        if not path.name.startswith(("_", "."))
    ]


def _read_mapping(path: Path, problems: list[Problem]) -> YamlDoc | None:
    shown = display_path(path)
    try:
        doc = read_yaml(path)
    except YamlError as exc:
        problems.append(Problem(shown, exc.line, "", exc.message))
        return None
    except OSError as exc:
        problems.append(Problem(shown, 0, "", f"cannot read the file: {exc.strerror}"))
        return None
    if not isinstance(doc.data, dict):
        kind = "a list" if isinstance(doc.data, list) else f"a single value ({doc.data!r})"
        problems.append(Problem(shown, 1, "", f"expected a mapping of keys (name:, model:, gpu: ...), found {kind}"))
        return None
    return doc


def _load_model(
    path: Path,
    settings: Settings | None,
    defaults_doc: YamlDoc,
    settings_path: Path,
    problems: list[Problem],
) -> ModelSpec | None:
    doc = _read_mapping(path, problems)
    if doc is None or settings is None:
        return None
    shown = display_path(path)
    settings_shown = display_path(settings_path)
    defaults = defaults_doc.data.get("defaults", {}) if isinstance(defaults_doc.data, dict) else {}
    merged = deep_merge(defaults, doc.data)

    def where(key_path: KeyPath) -> tuple[str, int]:
        # A value that came from `defaults:` is reported where it is written, in _fleet.yaml.
        if key_path not in doc.lines and ("defaults",) + key_path in defaults_doc.lines:
            return settings_shown, defaults_doc.lines[("defaults",) + key_path]
        return shown, doc.line_of(key_path)

    # The rules below read the data as the schema describes it: only on data the schema accepted.
    found = _schema_problems("model", merged, where) or _semantic_problems(path, merged, where)
    problems.extend(found)
    if found:
        return None
    source = f"{_directory_name(str(path.parent), os.getcwd())}/{path.name}"
    spec = _to_spec(apply_defaults(schema("model"), merged), shown, source, settings, doc.line_of(("name",)))
    spec = with_lock(spec, path.parent)  # catalog/fleet.lock: the locked commit and files (fleet/lock.py)
    for key_path, message in risk_warnings(spec):
        file, line = where(key_path)
        problems.append(Problem(file, line, ".".join(key_path), message, warning=True))
    return spec


@cache
def _directory_name(directory: str, cwd: str) -> str:
    """The catalog directory's own name ("catalog"), whatever path reached it (relative to `cwd`)."""
    return (Path(cwd) / directory).resolve().name


def _to_spec(data: dict[str, Any], shown: str, source: str, settings: Settings, line: int) -> ModelSpec:
    model, gpu, vllm, scaling, timeouts = (data[k] for k in ("model", "gpu", "vllm", "scaling", "timeouts"))
    return ModelSpec(
        name=data["name"],
        file=shown,
        source=source,
        description=data["description"],
        model_id=model["id"],
        revision=model["revision"],
        max_model_len=model["max_model_len"],
        multi_modal=model["multi_modal"],
        gated=model["gated"],
        params_b=model.get("params_b"),
        dtype=model.get("dtype"),
        weights_gb=model.get("weights_gb"),
        gpu_type=gpu["type"],
        gpu_count=gpu["count"],
        memory_utilization=gpu["memory_utilization"],
        vllm_args=tuple(vllm["args"]),
        fast_boot=vllm["fast_boot"],
        env=tuple(sorted(vllm["env"].items())),
        snapshot=data["snapshot"],
        scaling=Scaling(**scaling),
        startup_timeout=timeouts["startup"],
        request_timeout=timeouts["request"],
        settings=settings,
        line=line,
    )


def _semantic_problems(path: Path, data: dict[str, Any], where: Any) -> list[Problem]:
    """Rules a JSON Schema cannot say well: file stem, GPU count per type, flags fleet owns, URL length."""
    found: list[Problem] = []

    def add(key_path: KeyPath, message: str) -> None:
        file, line = where(key_path)
        found.append(Problem(file, line, ".".join(map(str, key_path)), message))

    if data["name"] != path.stem:
        add(("name",), f"'{data['name']}' must equal the file stem '{path.stem}' (rename the file or the model)")
    gpu = data["gpu"]
    limit = MAX_GPUS_PER_CONTAINER.get(gpu["type"], DEFAULT_MAX_GPUS)
    if gpu.get("count", 1) > limit:
        add(("gpu", "count"), f"Modal allows at most {limit} {gpu['type']} GPUs per container, not {gpu['count']}")
    vllm = data.get("vllm", {})
    for i, arg in enumerate(vllm.get("args", [])):
        flag = arg.split("=", 1)[0]
        folded = "--" + flag[2:].replace("_", "-") if flag.startswith("--") else flag
        if folded in MANAGED_FLAGS:
            add(("vllm", "args", i), f"'{flag}' is set by fleet: {MANAGED_FLAGS[folded]}")
    for key in vllm.get("env", {}):
        if key.upper() in RESERVED_ENV:
            add(("vllm", "env", key), f"'{key}' is set by {RESERVED_ENV[key.upper()]}, not in vllm.env")
    scaling = data.get("scaling", {})
    low, high = scaling.get("min_containers", 0), scaling.get("max_containers", 1)
    if low > high:
        add(("scaling", "min_containers"), f"min_containers ({low}) is above max_containers ({high})")
    return found


def _cross_file_problems(specs: list[ModelSpec]) -> list[Problem]:
    """Two models may not share a name, nor a URL label / app name (qwen3.6 and qwen3-6 would)."""
    found = []
    for attribute, what in (("name", "name"), ("label", "URL label")):
        seen: dict[str, ModelSpec] = {}
        for spec in specs:
            key = getattr(spec, attribute)
            if key in seen:
                other = seen[key]
                found.append(Problem(spec.file, spec.line, "name", f"{what} '{key}' is also used by {other.file}"))
            seen[key] = spec
    for spec in specs:
        if len(spec.label) > MAX_LABEL_LENGTH:
            found.append(
                Problem(
                    spec.file,
                    spec.line,
                    "name",
                    f"the URL label '{spec.label}' (prefix + name) is {len(spec.label)} characters; keep it "
                    f"within {MAX_LABEL_LENGTH} so '<workspace>--<label>' stays a readable 63-character host",
                )
            )
    return found


def risk_warnings(spec: ModelSpec) -> list[tuple[tuple[str, ...], str]]:
    """Legal but risky choices (key path, message): shown, exit 0, errors under --strict."""
    found = []

    def warn(key: str, message: str) -> None:
        found.append((tuple(key.split(".")), message))

    if spec.snapshot and spec.gpu_count > 1:
        warn(
            "snapshot",
            f"GPU memory snapshots with {spec.gpu_count} GPUs: Modal documents multi-GPU snapshots as generally "
            "incompatible; expect failed restores, or set snapshot: false",
        )
    if not spec.revision_pinned:
        warn(
            "model.revision",
            f"'{spec.revision}' is not a commit: pin the 40-character commit hash so every snapshot and "
            "container serves the same weights",
        )
    if spec.snapshot and spec.memory_utilization > 0.9:
        warn(
            "gpu.memory_utilization",
            f"{spec.memory_utilization} with snapshots on leaves little headroom for snapshot/restore; 0.85 is safe",
        )
    weights = spec.weight_bytes()
    if weights is not None and weights > spec.usable_gpu_bytes():
        warn(
            "gpu",
            f"the weights (~{weights / 1e9:.0f} GB) do not fit in {spec.gpu_count} x {spec.gpu_type} "
            f"({GPU_MEMORY_GB[spec.gpu_type]} GB each) at memory_utilization {spec.memory_utilization} "
            f"(~{spec.usable_gpu_bytes() / 1e9:.0f} GB usable); use more or larger GPUs",
        )
    return found


# --- JSON Schema --------------------------------------------------------------------------------------


def _schema_problems(name: str, data: Any, where: Any) -> list[Problem]:
    found = []
    for error in _validator(name).iter_errors(data):
        for key_path, message in _explain(error):
            file, line = where(key_path)
            found.append(Problem(file, line, ".".join(map(str, key_path)), message))
    return found


def _explain(error: Any) -> list[tuple[KeyPath, str]]:
    """Turn one jsonschema error into messages that say what would be valid."""
    path: KeyPath = tuple(error.absolute_path)
    value, kind, spec = error.instance, error.validator, error.validator_value
    if kind == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        unknown = [k for k in value if k not in allowed]
        return [
            (path + (key,), f"unknown key '{key}'{_did_you_mean(key, allowed)}; valid keys: {', '.join(allowed)}")
            for key in unknown
        ]
    if kind == "required":
        missing = [k for k in spec if k not in value]
        return [(path, f"missing required key '{key}'") for key in missing]
    if kind == "enum":
        hint = _did_you_mean(str(value), [str(v) for v in spec])
        what = "a GPU type Modal documents" if path[-1:] == ("type",) and path[:1] == ("gpu",) else "allowed"
        if path[-1:] == ("count",):
            what = "a tensor-parallel size (GPUs per container)"
        return [(path, f"{value!r} is not {what}{hint}; valid: {', '.join(map(str, spec))}")]
    if kind == "type":
        expected = " or ".join(spec) if isinstance(spec, list) else spec
        return [(path, f"expected {expected}, found {_json_type(value)} {value!r}")]
    if kind == "pattern":
        return [(path, _pattern_message(path, value))]
    return [(path, error.message)]


def _pattern_message(path: KeyPath, value: str) -> str:
    if path == ("name",) or path == ("prefix",):
        return (
            f"{value!r} is not DNS-safe: use lower-case letters, digits and '-'"
            + (" or '.'" if path == ("name",) else "")
            + ", starting and ending with a letter or digit"
        )
    if path == ("model", "id"):
        return f"{value!r} is not a Hugging Face repo id: expected ORG/NAME, e.g. Qwen/Qwen3-8B"
    if path == ("vllm_version",):
        return f"{value!r} is not a pinned release: expected X.Y.Z, e.g. 0.33.0"
    return f"{value!r} has an invalid form"


def _json_type(value: Any) -> str:
    names = {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", dict: "mapping"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _did_you_mean(word: str, options: Any) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


# --- data helpers -------------------------------------------------------------------------------------


def deep_merge(base: Any, override: Any) -> Any:
    """`override` on top of `base`: mappings merge key by key; lists and scalars are replaced whole."""
    if not isinstance(base, dict) or not isinstance(override, dict):
        return copy.deepcopy(override)
    merged = copy.deepcopy(base)
    for key, value in override.items():
        merged[key] = deep_merge(merged[key], value) if key in merged else copy.deepcopy(value)
    return merged


def apply_defaults(node_schema: dict[str, Any], data: Any) -> Any:
    """Fill in the schema's `default` values, so each default is declared once: in the schema."""
    if not isinstance(data, dict) or "properties" not in node_schema:
        return data
    filled = dict(data)
    for key, sub in node_schema["properties"].items():
        if key not in filled:
            if "default" in sub:
                filled[key] = copy.deepcopy(sub["default"])
            elif "properties" in sub:
                filled[key] = {}
        if key in filled:
            filled[key] = apply_defaults(sub, filled[key])
    return filled


def select_problems(result: CheckResult, names: tuple[str, ...]) -> list[Problem]:
    """The problems that concern the named models (and the shared _fleet.yaml); all when no names."""
    if not names:
        return result.problems
    _require_known(names, {p.stem for p in model_files(result.directory)})
    files = {display_path(result.directory / f"{n}.yaml") for n in names}
    files.add(display_path(result.directory / SETTINGS_FILE))
    return [p for p in result.problems if p.file in files]
