"""Load the catalog: read every YAML file, merge `defaults:`, validate, and build ModelSpec objects.

Every problem in every file is collected (never only the first), each with its file, line and key path,
so one run of `fleet validate` shows the whole list.
"""

from __future__ import annotations

import copy
import difflib
import json
import math
import os
import re
import stat
from dataclasses import dataclass, field, replace
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import UNSAFE_CHARACTERS, CatalogInvalid, FleetError, NotInCatalog, Problem, display_path, excerpt
from .lock import lock_problems, with_lock
from .spec import (
    DEFAULT_MAX_GPUS,
    GPU_MEMORY_GB,
    MAX_GPUS_PER_CONTAINER,
    Catalog,
    GatewaySettings,
    ModelSpec,
    Scaling,
    Settings,
)
from .known_issues import known_issues
from .vllm_flags import check_args
from .yamlfile import KeyPath, YamlDoc, YamlError, file_kind, read_yaml

SETTINGS_FILE = "_fleet.yaml"
# A URL host label is at most 63 characters and holds `<workspace>--<label>`: keeping our label this
# short leaves room for a workspace name, so Modal never has to shorten (and garble) the URL.
MAX_LABEL_LENGTH = 40
# Environment the runtime, Modal's secrets or the image own: set in `vllm.env`, it would leak a secret into
# the generated source, undo what the runtime set up, or swap the server that carries the guard. Compared
# whatever the case (`hf_token` reads as a typo of HF_TOKEN, and some libraries read either).
_RUNTIME = "the runtime (fleet/runtime.py sets it for the engine)"
RESERVED_ENV = {
    "VLLM_API_KEY": "the API key secret in _fleet.yaml",
    "HF_TOKEN": "the HF token secret in _fleet.yaml",
    "HUGGING_FACE_HUB_TOKEN": "the HF token secret in _fleet.yaml",
    "FLEET_CONTROL_TOKEN": "the runtime (it guards the engine's control endpoints)",
    "VLLM_SERVER_DEV_MODE": "snapshot (the runtime turns it on only when sleep is used)",
    "PYTHONPATH": "the runtime (the engine imports fleet's guard through it)",
    "PYTHONUNBUFFERED": _RUNTIME,
    "TORCHINDUCTOR_COMPILE_THREADS": "the runtime (multi-threaded compile state does not survive a snapshot)",
    "VLLM_WORKER_MULTIPROC_METHOD": _RUNTIME,
    "HF_HOME": "the image (the Hugging Face cache volume is mounted there)",
    "VLLM_CACHE_ROOT": "the image (the vLLM cache volume is mounted there)",
    "VLLM_USE_RUST_FRONTEND": "fleet (it replaces the Python server that carries fleet's guard)",
    "VLLM_RUST_FRONTEND_PATH": "fleet (it replaces the Python server that carries fleet's guard)",
}
# Environment no one may set for the engine, with the reason.
FORBIDDEN_ENV = {
    "LD_PRELOAD": "it loads code into the engine before Python and fleet's guard",
    "PYTHONHOME": "it swaps the interpreter's standard library under the engine",
}
RESERVED_ENV_PREFIX = "FLEET_"  # fleet's own namespace

# Platform limits that are not in Modal's client, each with where it was learned.
SNAPSHOT_START_CAP_S = 1800  # users report the snapshotting start capped at 30 minutes (facts.md, 2026-09)


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

    return _strict_validator_class()(schema(name))


@cache
def _strict_validator_class() -> Any:
    """Draft 2020-12 as a deploy needs it read, where jsonschema is lenient in two ways.

    - "integer" accepts 1.0 in jsonschema (the spec counts a float with no fraction as an integer); a
      1.0 reaches Modal as a float. Here an integer is an int, and never a bool.
    - "pattern" is Python's `re.search`, where `$` also matches before a final newline: "qwen\n" passed
      `^[a-z0-9-]+$`. Here a pattern's closing `$` is the true end of the string, as in ECMA-262.
    """
    import jsonschema

    base = jsonschema.Draft202012Validator

    def is_integer(checker: Any, instance: Any) -> bool:
        return isinstance(instance, int) and not isinstance(instance, bool)

    def pattern(validator: Any, regex: str, instance: Any, schema: Any) -> Any:
        if validator.is_type(instance, "string") and not _anchored(regex).search(instance):
            yield jsonschema.ValidationError(f"{excerpt(instance)} does not match {regex!r}")

    return jsonschema.validators.extend(
        base,
        validators={"pattern": pattern},
        type_checker=base.TYPE_CHECKER.redefine("integer", is_integer),
    )


@cache
def _anchored(regex: str) -> re.Pattern[str]:
    if regex.endswith("$") and not regex.endswith("\\$"):
        regex = regex[:-1] + r"\Z"
    return re.compile(regex)


def check_catalog(directory: Path) -> CheckResult:
    """Read and validate the whole catalog; never raises for the user's mistakes, only collects them."""
    if not directory.is_dir():
        raise FleetError(f"catalog directory '{directory}' not found (set --catalog or FLEET_CATALOG)")
    result = CheckResult(directory=directory, catalog=None)
    settings_path = directory / SETTINGS_FILE
    model_paths, entry_problems = scan_catalog(directory)
    result.problems.extend(entry_problems)
    settings, defaults_doc = _load_settings(settings_path, result.problems)
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
    result.problems = _merge_shared(result.problems)
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
    if os.path.lexists(path):  # a dangling link is not "no settings file"
        if any(p.file == shown for p in problems):  # scan_catalog refused the entry (a link out, a fifo...)
            return None, YamlDoc(data={})
        loaded = _read_mapping(path, problems)
        if loaded is None:
            return None, YamlDoc(data={})
        doc = loaded

    def where(key_path: KeyPath) -> tuple[str, int]:
        return shown, doc.line_of(key_path)

    found = _value_problems(doc.data, where) or _schema_problems("fleet", doc.data, where)
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
        gateway=GatewaySettings(**data["gateway"]),
    )
    if "name" in data["defaults"]:
        line = doc.line_of(("defaults", "name"))
        problems.append(Problem(shown, line, "defaults.name", "a name cannot be a default: each model has its own"))
        return None, doc
    return settings, doc


# --- models -------------------------------------------------------------------------------------------


def model_files(directory: Path) -> list[Path]:
    """The model files of a catalog: NAME.yaml, not _settings or .hidden files (see scan_catalog)."""
    return scan_catalog(directory)[0]


def scan_catalog(directory: Path) -> tuple[list[Path], list[Problem]]:
    """The model files, and a problem for every entry that looks like a catalog file but cannot be one.

    Nothing that looks like a model file is skipped silently: a model whose file is not read would have
    its live app planned as an orphan (and stopped by `destroy --orphans`). Links may point only inside
    the catalog, and a refused entry is never opened. Hidden entries (.git, editor files) are left alone,
    and so are names that are not YAML (a README).
    """
    root = directory.resolve()
    models: list[Path] = []
    problems: list[Problem] = []
    for name in sorted(os.listdir(directory)):
        if name.startswith(".") or not name.lower().endswith((".yaml", ".yml")):
            continue
        path = directory / name
        problem = _entry_problem(path, root)
        if problem is None and name.startswith("_"):
            continue  # settings (read by _load_settings) and other _files
        if problem is not None:
            problems.append(Problem(display_path(path), 0, "", problem))
        else:
            models.append(path)
    return models, problems


def _entry_problem(path: Path, root: Path) -> str | None:
    """Why `path` cannot be read as a catalog file, or None when it can."""
    name = path.name
    if path.is_symlink():
        target = Path(os.path.realpath(path))
        if not os.path.lexists(target):
            return "a link to nothing (dangling): fix or remove it"
        if root not in target.parents:
            return "a link that leads outside the catalog directory: refused (fleet reads only the catalog's own files)"
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        return f"cannot read it: {exc.strerror}"
    if not stat.S_ISREG(mode):
        return f"{file_kind(mode)}, not a catalog file: remove it or rename it"
    stem, _, suffix = name.rpartition(".")
    if suffix == "yaml":
        return None
    if name.startswith("_") and name.lower() != SETTINGS_FILE:
        return None  # another _file: not fleet's
    if suffix.lower() == "yml":
        return f"model files end in .yaml: rename it to {stem}.yaml"
    return f"model files end in lower-case .yaml: rename it to {stem}.yaml"


def _read_mapping(path: Path, problems: list[Problem]) -> YamlDoc | None:
    shown = display_path(path)
    try:
        doc = read_yaml(path)
    except YamlError as exc:
        problems.append(Problem(shown, exc.line, "", exc.message))
        return None
    except OSError as exc:  # removed or made unreadable since the scan
        problems.append(Problem(shown, 0, "", f"cannot read the file: {exc.strerror}"))
        return None
    if not isinstance(doc.data, dict):
        # The whole file is this value, and the file may be anything a link or a mistake put there:
        # say what it is, not what it says.
        kind = "a list" if isinstance(doc.data, list) else f"a single {_json_type(doc.data)} value"
        if isinstance(doc.data, str):
            kind += f" of {len(doc.data)} characters"
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
    found = (
        _value_problems(doc.data, where)
        or _schema_problems("model", merged, where)
        or _semantic_problems(path, merged, where)
    )
    problems.extend(_naming(found, shown))
    if found:
        return None
    source = f"{_directory_name(str(path.parent), os.getcwd())}/{path.name}"
    spec = _to_spec(apply_defaults(schema("model"), merged), shown, source, settings, doc.line_of(("name",)))
    spec = with_lock(spec, path.parent)  # catalog/fleet.lock: the locked commit and files (fleet/lock.py)
    warnings = []
    for key_path, message in risk_warnings(spec):
        file, line = where(key_path)
        warnings.append(Problem(file, line, ".".join(key_path), message, warning=True))
    problems.extend(_naming(warnings, shown))
    return spec


def _naming(problems: list[Problem], model_file: str) -> list[Problem]:
    """Problems found while reading one model: those located in another file (a value from `defaults:` in
    _fleet.yaml) carry the model's file, so the message can say which model it broke."""
    return [replace(p, model=model_file) if p.file != model_file else p for p in problems]


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
    """Rules a JSON Schema cannot say well: file stem, GPU count per type, flags fleet owns, URL length,
    and the platform's own limits (each message says why, and where that was learned)."""
    found: list[Problem] = []

    def add(key_path: KeyPath, message: str, warning: bool = False) -> None:
        file, line = where(key_path)
        found.append(Problem(file, line, ".".join(map(str, key_path)), message, warning))

    if data["name"] != path.stem:
        stem = excerpt(path.stem)
        add(("name",), f"{excerpt(data['name'])} must equal the file stem {stem} (rename the file or the model)")
    filled = apply_defaults(schema("model"), data)
    gpu = filled["gpu"]
    limit = MAX_GPUS_PER_CONTAINER.get(gpu["type"], DEFAULT_MAX_GPUS)
    if gpu["count"] > limit:
        add(("gpu", "count"), f"Modal allows at most {limit} {gpu['type']} GPUs per container, not {gpu['count']}")
    if filled["snapshot"] and gpu["count"] > 1:
        # Where the user wrote it: the count usually sits in the model file, `snapshot: true` in defaults.
        key = ("gpu", "count") if where(("gpu", "count"))[0] == where(("name",))[0] else ("snapshot",)
        add(
            key,
            f"snapshot: true with {gpu['count']} GPUs: GPU memory snapshots do not work on more than one GPU "
            "(Modal's GPU snapshot guide: \"generally incompatible with multi-GPU code\"; users report the "
            "deploy refused); set snapshot: false for this model",
        )
    vllm = filled["vllm"]
    for finding in check_args(vllm["args"]):
        add(("vllm", "args", finding.index), finding.message, finding.warning)
    for key in vllm["env"]:
        owner = RESERVED_ENV.get(key.upper())
        if owner is None and key.upper().startswith(RESERVED_ENV_PREFIX):
            owner = f"fleet ({RESERVED_ENV_PREFIX}* names are fleet's own)"
        if owner is not None:
            add(("vllm", "env", key), f"{excerpt(key)} is set by {owner}, not in vllm.env")
        elif key.upper() in FORBIDDEN_ENV:
            add(("vllm", "env", key), f"{excerpt(key)} is not allowed in vllm.env: {FORBIDDEN_ENV[key.upper()]}")
    scaling = filled["scaling"]
    low, high = scaling["min_containers"], scaling["max_containers"]
    if low > high:
        add(("scaling", "min_containers"), f"min_containers ({low}) is above max_containers ({high})")
    return found


def _value_problems(data: Any, where: Any) -> list[Problem]:
    """Values no rule should ever see: numbers a deploy cannot take, and characters no terminal should.

    NaN passes every bound a schema sets (every comparison with it is false) and infinity passes
    `exclusiveMinimum`; neither reaches Modal as anything sensible. Control characters, ANSI escapes and
    bidirectional overrides would be printed by `list`, written into the rendered source, or make a name
    look like another: refused in every key and value (a multi-line description included).
    """
    found: list[Problem] = []

    def add(key_path: KeyPath, message: str) -> None:
        file, line = where(key_path)
        found.append(Problem(file, line, ".".join(map(_escaped_key, key_path)), message))

    def visit(value: Any, key_path: KeyPath) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if UNSAFE_CHARACTERS.search(key):
                    add(key_path + (key,), f"the key {excerpt(key)} holds a control character: {_CONTROL_HINT}")
                    continue
                visit(item, key_path + (key,))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                visit(item, key_path + (i,))
        elif isinstance(value, float) and not math.isfinite(value):
            add(key_path, f"{value} is not a number a deploy can use: write a finite number")
        elif isinstance(value, str) and UNSAFE_CHARACTERS.search(value):
            add(key_path, f"{excerpt(value)} holds a control character: {_CONTROL_HINT}")

    visit(data, ())
    return found


_CONTROL_HINT = "no newlines, tabs, escapes (ANSI), NUL, invisible or direction-changing characters in catalog values"


def _escaped_key(key: str | int) -> str:
    return excerpt(key, 60)[1:-1] if isinstance(key, str) and UNSAFE_CHARACTERS.search(key) else str(key)


def _merge_shared(problems: list[Problem]) -> list[Problem]:
    """One problem per place: a value from `defaults:` found wrong for several models is reported once, at
    its line in _fleet.yaml, naming the model files it was merged into (every error names its models)."""
    merged: dict[tuple[str, int, str, str, bool], list[str]] = {}
    for problem in problems:
        key = (problem.file, problem.line, problem.path, problem.message, problem.warning)
        models = merged.setdefault(key, [])
        if problem.model and problem.model not in models:
            models.append(problem.model)
    result = []
    for (file, line, path, message, warning), models in merged.items():
        if models:
            shown = ", ".join(sorted(models)[:3]) + (f" and {len(models) - 3} more" if len(models) > 3 else "")
            message = f"{message} (in the defaults merged into {shown})"
        result.append(Problem(file, line, path, message, warning))
    return sorted(result)


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

    if spec.snapshot and spec.startup_timeout > SNAPSHOT_START_CAP_S:
        warn(
            "timeouts.startup",
            f"{spec.startup_timeout} s: the start that takes a snapshot is capped at {SNAPSHOT_START_CAP_S} s "
            "whatever this says (users' reports of Modal GPU snapshots, 2026-09); a first start that needs longer "
            "never gets its snapshot: make it faster (fast_boot, weights in the volume) or set snapshot: false",
        )
    for issue in known_issues(spec.settings.vllm_version, spec):
        warn(
            "snapshot",
            f"vLLM {spec.settings.vllm_version}: {issue.what} ({issue.source}); snapshots of this model may not "
            "restore: pin another vllm_version or set snapshot: false",
        )
    if "--" in spec.label:
        warn(
            "name",
            f"the URL label '{spec.label}' holds '--', the separator Modal writes between workspace and label "
            "(<workspace>--<label>.modal.run): a reader cannot tell where the label starts; avoid '--', '.-', '-.'",
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
    """Turn one jsonschema error into messages that say what would be valid.

    A value is quoted only as a short escaped excerpt: it may be long, a secret, or hold escapes.
    """
    path: KeyPath = tuple(error.absolute_path)
    value, kind, spec = error.instance, error.validator, error.validator_value
    shown = excerpt(value)
    if kind == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        unknown, valid = [k for k in value if k not in allowed], ", ".join(allowed)
        return [
            (path + (key,), f"unknown key {excerpt(key)}{_did_you_mean(key, allowed)}; valid keys: {valid}")
            for key in unknown
        ]
    if kind == "required":
        missing = [k for k in spec if k not in value]
        return [(path, f"missing required key '{key}'") for key in missing]
    if kind == "enum":
        hint = _did_you_mean(str(value), [str(v) for v in spec]) if isinstance(value, str) else ""
        what = "a GPU type Modal documents" if path[-1:] == ("type",) and path[:1] == ("gpu",) else "allowed"
        if path[-1:] == ("count",):
            what = "a tensor-parallel size (GPUs per container)"
        return [(path, f"{shown} is not {what}{hint}; valid: {', '.join(map(str, spec))}")]
    if kind == "type":
        expected = " or ".join(spec) if isinstance(spec, list) else spec
        if "integer" in expected and isinstance(value, float) and value.is_integer():
            return [(path, f"expected integer, found {shown}: write {int(value)} (Modal takes whole numbers here)")]
        hint = ""
        if expected == "string" and isinstance(value, (bool, int, float)):
            hint = ": YAML read it as a value of that type; put it in quotes to keep it as written"
        return [(path, f"expected {expected}, found {_json_type(value)} {shown}{hint}")]
    if kind == "pattern":
        return [(path, _pattern_message(path, value))]
    bounds = {
        "minimum": "is less than the minimum of",
        "maximum": "is greater than the maximum of",
        "exclusiveMinimum": "must be greater than",
        "exclusiveMaximum": "must be less than",
        "minLength": "is shorter than the minimum length of",
        "maxLength": "is longer than the maximum length of",
    }
    if kind in bounds:
        return [(path, f"{shown} {bounds[kind]} {spec}")]
    if kind in ("maxItems", "maxProperties"):
        return [(path, f"{len(value)} entries; at most {spec}")]
    return [(path, f"{shown} breaks the schema's {kind!r} rule")]


def _pattern_message(path: KeyPath, value: str) -> str:
    shown = excerpt(value)
    if path == ("name",) or path == ("prefix",):
        return (
            f"{shown} is not DNS-safe: use lower-case letters, digits and '-'"
            + (" or '.'" if path == ("name",) else "")
            + ", starting and ending with a letter or digit"
        )
    if path == ("model", "id"):
        return f"{shown} is not a Hugging Face repo id: expected ORG/NAME, e.g. Qwen/Qwen3-8B"
    if path == ("vllm_version",):
        return f"{shown} is not a pinned release: expected X.Y.Z, e.g. 0.33.0"
    if path[:1] in (("volumes",), ("secrets",)):
        return f"{shown} is not a Modal object name: letters, digits, '.', '-' and '_' (Modal's client rule)"
    if path == ("environment",):
        return f"{shown} is not a Modal environment name: a letter or digit, then letters, digits, '-' and '_'"
    if path == ("model", "revision"):
        return f"{shown} is not a branch, tag or commit: letters, digits and . _ / + @ -"
    if path == ("vllm", "env"):
        return f"{shown} is not an environment variable name: letters, digits and '_', not starting with a digit"
    return f"{shown} has an invalid form"


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
