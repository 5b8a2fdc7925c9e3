"""`fleet new HF_ID`: a catalog entry that fits, from the model's config and file sizes on the hub.

The hub gives the weights' real size (the files `fleet lock` would pin) and config.json gives the context
length, the attention shape (for the KV cache), the dtype and whether the model takes images. The GPU is the
cheapest type x count in fleet/prices.py whose memory, at the default utilization, holds

    weights + KV cache for the chosen context (one full-length sequence) + a fixed runtime overhead per GPU

and that can run the model at all (bf16 and FP8 kernels need compute capability 8.0; the tensor-parallel size
must divide the attention heads). The entry is written with yaml.safe_dump (no catalog string is pasted into
YAML), checked with the catalog's own validation, and locked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import FleetError, display_path
from .lock import Lock, LockEntry, LockFileInvalid, entry_from_repo, lock_path, read_lock, write_lock
from .prices import GPU_USD_PER_HOUR, PRICES_READ_ON
from .spec import DEFAULT_MAX_GPUS, GPU_MEMORY_GB, MAX_GPUS_PER_CONTAINER

DEFAULT_CONTEXT = 32768  # when the model allows more: what most chat traffic needs, and a KV reserve that stays modest
DEFAULT_UTILIZATION = 0.85  # the fleet's default gpu.memory_utilization (snapshot/restore headroom)
OVERHEAD_BYTES_PER_GPU = 2 * 10**9  # CUDA context, activations, CUDA graphs: vLLM's profiling leaves 1-3 GB
KV_BYTES_PER_VALUE = 2  # vLLM's default KV cache dtype follows the model's activations: bf16/fp16
TENSOR_PARALLEL_SIZES = (1, 2, 4, 8)
# GPU types that are another name (or an upgrade policy) of a type already listed.
ALIASES = {"A100": "A100-40GB", "H100!": "H100", "B200+": "B200"}
# CUDA compute capability per Modal GPU type (NVIDIA's tables).
COMPUTE_CAPABILITY: dict[str, float] = {
    "T4": 7.5, "L4": 8.9, "A10": 8.6, "L40S": 8.9, "A100-40GB": 8.0, "A100-80GB": 8.0,
    "RTX-PRO-6000": 12.0, "H100": 9.0, "H200": 9.0, "B200": 10.0,
}
MIN_CAPABILITY = {"bf16": 8.0, "fp8": 8.0, "nvfp4": 8.0}  # bf16 math; FP8/FP4 through Marlin kernels on Ampere+
TORCH_DTYPES = {"bfloat16": "bf16", "float16": "fp16", "half": "fp16", "float32": "fp32", "float": "fp32"}
REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
NAME = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$")
MAX_NAME = 40
MODELINE = "# yaml-language-server: $schema=../fleet/schema/model.schema.json\n"


@dataclass(frozen=True)
class ModelFacts:
    """What the hub says about a model, as far as sizing goes."""

    repo_id: str
    commit: str
    architectures: tuple[str, ...]
    multi_modal: bool
    dtype: str | None  # the catalog's names: bf16, fp8, ...
    max_position: int | None
    layers: int
    attention_heads: int
    kv_heads: int
    head_dim: int
    weight_bytes: int
    gated: bool

    def kv_bytes(self, tokens: int) -> int:
        """Keys and values of every layer for `tokens` tokens (all layers counted: an upper bound for hybrids)."""
        return 2 * self.layers * self.kv_heads * self.head_dim * KV_BYTES_PER_VALUE * tokens


@dataclass(frozen=True)
class GpuOption:
    gpu_type: str
    count: int
    usd_per_hour: float
    usable_bytes: float
    needed_bytes: float
    unsupported: str | None  # why this type x count cannot run the model at all

    @property
    def fits(self) -> bool:
        return self.unsupported is None and self.usable_bytes >= self.needed_bytes

    @property
    def label(self) -> str:
        return f"{self.gpu_type} x{self.count} (${self.usd_per_hour:.2f}/h)"

    def lacks(self) -> str:
        if self.unsupported:
            return self.unsupported
        short = (self.needed_bytes - self.usable_bytes) / 1e9
        return f"{self.usable_bytes / 1e9:.1f} GB usable, {short:.1f} GB short"


@dataclass(frozen=True)
class Proposal:
    name: str
    facts: ModelFacts
    context: int
    choice: GpuOption
    cheaper: GpuOption | None  # the next cheaper option, which did not fit
    cheaper_runnable: GpuOption | None  # when that one cannot run the model at all: the next cheaper that can
    cheapest_single: GpuOption | None  # when the choice has several GPUs: the cheapest one-GPU option that fits
    lock_entry: LockEntry

    def entry(self) -> dict[str, Any]:
        facts = self.facts
        model: dict[str, Any] = {"id": facts.repo_id, "revision": "main", "max_model_len": self.context}
        if facts.multi_modal:
            model["multi_modal"] = True
        if facts.gated:
            model["gated"] = True
        if facts.dtype:
            model["dtype"] = facts.dtype
        model["weights_gb"] = round(facts.weight_bytes / 1e9, 2) or 0.01
        entry: dict[str, Any] = {
            "name": self.name,
            "description": f"{facts.repo_id} (written by fleet new)",
            "model": model,
            "gpu": {"type": self.choice.gpu_type, "count": self.choice.count},
        }
        if self.choice.count > 1:
            entry["snapshot"] = False  # Modal refuses GPU snapshots on more than one GPU
        return entry

    def yaml_text(self) -> str:
        body = yaml.safe_dump(self.entry(), sort_keys=False, allow_unicode=False, width=1000)
        why = f"{self.choice.gpu_type} x{self.choice.count} is the cheapest GPU that holds {self.needed_gb():.1f} GB"
        return f"{MODELINE}# Written by `fleet new`: {why} (prices of {PRICES_READ_ON}, fleet/prices.py).\n{body}"

    def needed_gb(self) -> float:
        return self.choice.needed_bytes / 1e9

    def explanation(self) -> list[str]:
        facts, choice = self.facts, self.choice
        kv = facts.kv_bytes(self.context)
        lines = [
            f"{facts.repo_id} at {facts.commit[:12]}: {facts.weight_bytes / 1e9:.1f} GB of weights"
            f"{f' ({facts.dtype})' if facts.dtype else ''} + {kv / 1e9:.1f} GB KV cache for {self.context} tokens "
            f"({facts.layers} layers x {facts.kv_heads} KV heads x {facts.head_dim} x K,V x {KV_BYTES_PER_VALUE} bytes)"
            f" + {OVERHEAD_BYTES_PER_GPU / 1e9:.0f} GB per GPU of runtime overhead",
            f"chose {choice.label}: {GPU_MEMORY_GB[choice.gpu_type]} GB x {choice.count} x {DEFAULT_UTILIZATION} = "
            f"{choice.usable_bytes / 1e9:.1f} GB usable >= {choice.needed_bytes / 1e9:.1f} GB needed",
        ]
        if self.cheaper is not None:
            lines.append(f"next cheaper: {self.cheaper.label}: {self.cheaper.lacks()}")
            if self.cheaper_runnable is not None:
                runnable = self.cheaper_runnable
                lines.append(f"next cheaper that runs it: {runnable.label}: {runnable.lacks()}")
        else:
            lines.append("nothing cheaper in the price table")
        if self.cheapest_single is not None:
            lines.append(
                f"{choice.count} GPUs means no GPU snapshot (snapshot: false); the cheapest single GPU that fits is "
                f"{self.cheapest_single.label}"
            )
        return lines


# --- reading the model ----------------------------------------------------------------------------------


def _text_config(config: dict[str, Any]) -> dict[str, Any]:
    """Multi-modal configs keep the language model's shape under text_config (or llm_config)."""
    for key in ("text_config", "llm_config", "language_config"):
        if isinstance(config.get(key), dict):
            return {**config, **config[key]}
    return config


def _int(config: dict[str, Any], *keys: str) -> int | None:
    for key in keys:
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def dtype_of(config: dict[str, Any]) -> str | None:
    quant = config.get("quantization_config") or _text_config(config).get("quantization_config")
    if isinstance(quant, dict):
        method = str(quant.get("quant_method", "")).lower()
        algo = str(quant.get("quant_algo", "")).lower()
        bits = quant.get("bits") or quant.get("w_bit")
        if method == "fp8" or algo == "fp8":
            return "fp8"
        if "nvfp4" in (method, algo):
            return "nvfp4"
        if method in ("mxfp4",) or bits == 4 or quant.get("load_in_4bit"):
            return "int4"
        if bits == 8 or quant.get("load_in_8bit"):
            return "int8"
        return None  # another scheme: the weights' real size still sizes the GPU
    raw = config.get("torch_dtype") or config.get("dtype") or _text_config(config).get("torch_dtype")
    return TORCH_DTYPES.get(str(raw)) if raw else None


def facts_from(config: Any, entry: LockEntry, gated: bool) -> ModelFacts:
    if not isinstance(config, dict):
        raise FleetError(f"{entry.model_id}: config.json is not a JSON object")
    text = _text_config(config)
    heads = _int(text, "num_attention_heads", "n_head", "n_heads")
    layers = _int(text, "num_hidden_layers", "n_layer", "n_layers")
    if heads is None or layers is None:
        raise FleetError(
            f"{entry.model_id}: config.json has no num_hidden_layers / num_attention_heads: fleet new cannot size "
            "its KV cache; write the catalog entry by hand"
        )
    hidden = _int(text, "hidden_size", "n_embd", "d_model")
    head_dim = _int(text, "head_dim") or (hidden // heads if hidden else None)
    if head_dim is None:
        raise FleetError(f"{entry.model_id}: config.json has neither head_dim nor hidden_size")
    architectures = tuple(str(a) for a in config.get("architectures") or ())
    multi_modal = any(k in config for k in ("vision_config", "visual", "vision_tower", "mm_vision_tower")) or any(
        a.endswith("ForConditionalGeneration") and "VL" in a or "Vision" in a for a in architectures
    )
    return ModelFacts(
        repo_id=entry.model_id,
        commit=entry.commit,
        architectures=architectures,
        multi_modal=multi_modal,
        dtype=dtype_of(config),
        max_position=_int(text, "max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"),
        layers=layers,
        attention_heads=heads,
        kv_heads=_int(text, "num_key_value_heads", "num_kv_heads") or heads,
        head_dim=head_dim,
        weight_bytes=entry.weight_bytes,
        gated=gated,
    )


# --- choosing the GPU -----------------------------------------------------------------------------------


def gpu_options(facts: ModelFacts, context: int, only_type: str | None = None) -> list[GpuOption]:
    """Every type x count Modal offers (one name per type), cheapest first; each with what it lacks."""
    options = []
    types = [only_type] if only_type else [t for t in GPU_USD_PER_HOUR if t not in ALIASES]
    for gpu_type in types:
        for count in TENSOR_PARALLEL_SIZES:
            if count > MAX_GPUS_PER_CONTAINER.get(gpu_type, DEFAULT_MAX_GPUS):
                continue
            needed = facts.weight_bytes + facts.kv_bytes(context) + OVERHEAD_BYTES_PER_GPU * count
            options.append(
                GpuOption(
                    gpu_type=gpu_type,
                    count=count,
                    usd_per_hour=GPU_USD_PER_HOUR[gpu_type] * count,
                    usable_bytes=GPU_MEMORY_GB[gpu_type] * 1e9 * count * DEFAULT_UTILIZATION,
                    needed_bytes=needed,
                    unsupported=_unsupported(facts, ALIASES.get(gpu_type, gpu_type), count),
                )
            )
    return sorted(options, key=lambda o: (o.usd_per_hour, o.count, -o.usable_bytes))


def _unsupported(facts: ModelFacts, gpu_type: str, count: int) -> str | None:
    need = MIN_CAPABILITY.get(facts.dtype or "")
    have = COMPUTE_CAPABILITY.get(gpu_type)
    if need is not None and have is not None and have < need:
        return f"no {facts.dtype} support (compute capability {have} < {need})"
    if facts.attention_heads % count:
        return f"{facts.attention_heads} attention heads do not split over {count} GPUs"
    return None


def choose(options: list[GpuOption]) -> tuple[GpuOption, GpuOption | None, GpuOption | None, GpuOption | None]:
    """(the cheapest that fits, the next cheaper one, the next cheaper one that supports the model when the
    first does not, the cheapest single GPU that fits when the choice has more)."""
    fitting = [o for o in options if o.fits]
    if not fitting:
        biggest = max(options, key=lambda o: o.usable_bytes)
        raise FleetError(
            f"no GPU type x count holds it: even {biggest.label} has {biggest.usable_bytes / 1e9:.0f} GB usable for "
            f"{biggest.needed_bytes / 1e9:.0f} GB needed (lower --max-model-len, or pick a quantized variant)"
        )
    choice = fitting[0]
    cheaper = [o for o in options if (o.usd_per_hour, o.count) < (choice.usd_per_hour, choice.count) and not o.fits]
    single = next((o for o in fitting if o.count == 1), None) if choice.count > 1 else None
    nearest = cheaper[-1] if cheaper else None
    runnable = [o for o in cheaper if o.unsupported is None]
    nearest_runnable = runnable[-1] if runnable and nearest is not None and nearest.unsupported else None
    return choice, nearest, nearest_runnable, single


# --- the command's stage function ---------------------------------------------------------------------------


def fleet_prefix(catalog_dir: Path) -> str:
    """The app-name prefix of the catalog's _fleet.yaml (its default when the file or key is absent); the
    catalog may be empty: `fleet new` writes its first model."""
    from .catalog import SETTINGS_FILE, schema
    from .yamlfile import YamlError, read_yaml

    if not catalog_dir.is_dir():
        raise FleetError(f"catalog directory '{catalog_dir}' not found (set --catalog or FLEET_CATALOG)")
    default: str = schema("fleet")["properties"]["prefix"]["default"]
    path = catalog_dir / SETTINGS_FILE
    if not path.exists():
        return default
    try:
        data = read_yaml(path).data
    except (OSError, YamlError) as exc:
        raise FleetError(f"{display_path(path)}: cannot read it ({exc}): run `fleet validate`") from None
    prefix = data.get("prefix", default) if isinstance(data, dict) else default
    return prefix if isinstance(prefix, str) else default


def max_name_length(prefix: str) -> int:
    """The URL label is `<prefix>-<name>`, at most MAX_LABEL_LENGTH characters (fleet/catalog.py)."""
    from .catalog import MAX_LABEL_LENGTH

    return min(MAX_NAME, MAX_LABEL_LENGTH - len(prefix) - 1)


def default_name(repo_id: str, prefix: str) -> str:
    """Org/Some_Model-7B.Instruct -> some-model-7b.instruct: DNS-safe and within the label limit."""
    name = re.sub(r"[^a-z0-9.-]+", "-", repo_id.split("/")[-1].lower())
    name = re.sub(r"-{2,}", "-", name).strip(".-")[: max_name_length(prefix)].strip(".-")
    return name or "model"


def check_inputs(repo_id: str, name: str, gpu: str | None, prefix: str) -> None:
    if not REPO_ID.match(repo_id):
        raise FleetError(f"{repo_id!r} is not a Hugging Face repo id: expected ORG/NAME, e.g. Qwen/Qwen3-8B")
    limit = max_name_length(prefix)
    if not NAME.match(name) or len(name) > limit:
        raise FleetError(
            f"{name!r} is not a model name: lower-case letters, digits, '-' and '.', starting and ending with a "
            f"letter or digit, at most {limit} characters with the prefix '{prefix}' (set --name)"
        )
    if gpu is not None and gpu not in GPU_USD_PER_HOUR:
        raise FleetError(f"{gpu!r} is not a GPU type: valid: {', '.join(GPU_USD_PER_HOUR)}")


def propose(
    hub: Any,
    repo_id: str,
    *,
    prefix: str = "fleet",
    name: str | None = None,
    gpu: str | None = None,
    max_model_len: int | None = None,
) -> Proposal:
    """Read the model from the hub and size it: no file written."""
    name = name or default_name(repo_id, prefix)
    check_inputs(repo_id, name, gpu, prefix)
    repo = hub.files_at(repo_id, "main")
    entry = entry_from_repo(hub, name, repo, "auto")
    if "config.json" not in repo.sizes:
        raise FleetError(f"{repo_id} has no config.json: not a transformers-format model vLLM can load by id")
    facts = facts_from(hub.read_json(repo_id, "config.json", repo.commit), entry, repo.gated)
    context = max_model_len or min(facts.max_position or DEFAULT_CONTEXT, DEFAULT_CONTEXT)
    if facts.max_position and context > facts.max_position:
        raise FleetError(f"--max-model-len {context} is above the model's {facts.max_position} positions")
    choice, cheaper, runnable, single = choose(gpu_options(facts, context, gpu))
    return Proposal(name, facts, context, choice, cheaper, runnable, single, entry)


def write_proposal(catalog_dir: Path, proposal: Proposal) -> Path:
    """Write catalog/NAME.yaml, check it validates, then add its lock entry. Refuses to overwrite."""
    from .catalog import check_catalog

    path = catalog_dir / f"{proposal.name}.yaml"
    if path.exists():
        raise FleetError(f"{display_path(path)} already exists: choose another --name")
    try:
        old = read_lock(lock_path(catalog_dir))
    except LockFileInvalid as exc:
        raise FleetError(f"{exc}; then run fleet new again") from None
    before = set(check_catalog(catalog_dir).errors)
    try:
        path.write_text(proposal.yaml_text(), encoding="utf-8")
    except OSError as exc:
        raise FleetError(f"cannot write {display_path(path)}: {exc.strerror}") from None
    # Errors the new file brought, wherever they are reported (a clash of URL labels lands on either file).
    added = [p for p in check_catalog(catalog_dir).errors if p not in before]
    if added:
        path.unlink()
        raise FleetError(f"the new entry does not fit the catalog, nothing written: {added[0]}")
    write_lock(lock_path(catalog_dir), Lock({**old.entries, proposal.name: proposal.lock_entry}))
    return path
