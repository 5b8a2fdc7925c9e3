"""The typed form of a validated catalog: what every later stage reads (never the raw YAML dicts)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .lock import LockEntry

# Usable memory per GPU in GB, for the "weights fit" warning (Modal's GPU pages).
GPU_MEMORY_GB: dict[str, int] = {
    "T4": 16,
    "L4": 24,
    "A10": 24,
    "L40S": 48,
    "A100": 40,
    "A100-40GB": 40,
    "A100-80GB": 80,
    "RTX-PRO-6000": 96,
    "H100": 80,
    "H100!": 80,
    "H200": 141,
    "B200": 180,
    "B200+": 180,
}
MAX_GPUS_PER_CONTAINER: dict[str, int] = {"A10": 4}
DEFAULT_MAX_GPUS = 8
BYTES_PER_PARAM: dict[str, float] = {
    "fp32": 4,
    "bf16": 2,
    "fp16": 2,
    "fp8": 1,
    "int8": 1,
    "int4": 0.5,
    "nvfp4": 0.5,
}
WEB_PORT = 8000
PINNED_REVISION = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class GatewaySettings:
    """_fleet.yaml `gateway:`: the fleet's one front door (fleet/gateway/). Defaults live in the schema."""

    enabled: bool = False
    min_containers: int = 1
    max_containers: int = 10
    max_concurrent_requests: int = 1000
    keys_dict: str = "fleet-gateway-keys"
    usage_dict: str = "fleet-gateway-usage"
    key_cache_seconds: int = 30
    usage_flush_seconds: int = 60


@dataclass(frozen=True)
class Settings:
    """catalog/_fleet.yaml: what every app of the fleet shares."""

    prefix: str
    environment: str | None
    vllm_version: str
    hf_cache_volume: str
    vllm_cache_volume: str
    api_key_secret: str
    hf_token_secret: str
    gateway: GatewaySettings = field(default_factory=GatewaySettings)


@dataclass(frozen=True)
class Scaling:
    scaledown_window: int
    min_containers: int
    max_containers: int
    max_concurrent_requests: int


@dataclass(frozen=True)
class ModelSpec:
    """One catalog entry after defaults and validation."""

    name: str
    file: str  # as shown to the user in messages, e.g. catalog/qwen3.6-27b.yaml
    source: str  # the same file, named the same from any working directory: what rendering uses
    description: str
    model_id: str
    revision: str
    max_model_len: int | None
    multi_modal: bool
    gated: bool
    gpu_type: str
    gpu_count: int
    memory_utilization: float
    vllm_args: tuple[str, ...]
    fast_boot: bool
    env: tuple[tuple[str, str], ...]
    snapshot: bool
    scaling: Scaling
    startup_timeout: int
    request_timeout: int
    settings: Settings = field(repr=False, compare=False)
    line: int = field(default=1, compare=False)  # of `name:`, for problems about the model as a whole
    params_b: float | None = None
    dtype: str | None = None
    weights_gb: float | None = None
    # Its entry in catalog/fleet.lock when the lock describes this entry (fleet/lock.py `with_lock`).
    locked: LockEntry | None = None

    @property
    def app_name(self) -> str:
        return f"{self.settings.prefix}-{self.name}"

    @property
    def label(self) -> str:
        """The web endpoint's URL label: DNS-safe, so dots become dashes."""
        return self.app_name.replace(".", "-")

    @property
    def module_name(self) -> str:
        """The rendered file's module name: importable inside the container, so no '.' or '-'."""
        return re.sub(r"[^A-Za-z0-9_]", "_", self.app_name)

    @property
    def gpu(self) -> str:
        return f"{self.gpu_type}:{self.gpu_count}"

    @property
    def class_name(self) -> str:
        """A Python class name per model, e.g. qwen3.6-27b -> Qwen3_6_27b (its own snapshot class)."""
        words = re.split(r"[^A-Za-z0-9]+", self.name)
        name = "_".join(w for w in words if w)
        return name[:1].upper() + name[1:] if name[:1].isalpha() else f"M{name}"

    @property
    def secrets(self) -> tuple[str, ...]:
        names = [self.settings.api_key_secret]
        if self.gated:
            names.append(self.settings.hf_token_secret)
        return tuple(names)

    @property
    def revision_is_commit(self) -> bool:
        return bool(PINNED_REVISION.match(self.revision))

    @property
    def revision_pinned(self) -> bool:
        """Every container serves the same weights: the catalog names a commit, or the lock pinned one."""
        return self.revision_is_commit or self.locked is not None

    @property
    def served_revision(self) -> str:
        """What vLLM and the weight download are given: the locked commit, else the catalog's revision."""
        return self.locked.commit if self.locked is not None else self.revision

    def weight_bytes(self) -> float | None:
        """Size of the weights: the locked files' real bytes, else an estimate, else None."""
        if self.locked is not None and self.locked.weight_bytes:
            return float(self.locked.weight_bytes)
        if self.weights_gb is not None:
            return self.weights_gb * 1e9
        if self.params_b is not None and self.dtype is not None:
            return self.params_b * 1e9 * BYTES_PER_PARAM[self.dtype]
        return None

    def engine_options(self) -> dict[str, object]:
        """Keyword arguments of `runtime.EngineConfig` for this model, in the order they are rendered."""
        return {
            "model": self.model_id,
            "served_model_name": self.name,
            "revision": self.served_revision,
            "port": WEB_PORT,
            "tensor_parallel_size": self.gpu_count,
            "gpu_memory_utilization": self.memory_utilization,
            "max_model_len": self.max_model_len,
            "enforce_eager": self.fast_boot,
            "enable_sleep_mode": self.snapshot,
            "dev_mode": self.snapshot,
            "multi_modal": self.multi_modal,
            "extra_args": self.vllm_args,
            "env": self.env,
            # Under Modal's own startup timeout, so the runtime fails first and its log tail is shown.
            "startup_timeout": float(max(self.startup_timeout - 60, self.startup_timeout / 2)),
            # The runtime's /sleep and /wake_up budgets scale with it (None: the floor).
            "weight_bytes": self.engine_weight_bytes(),
        }

    def engine_weight_bytes(self) -> int | None:
        """The weights' size for the runtime: the catalog's weights_gb, or params_b x dtype (estimates)."""
        estimate = self.weight_bytes()
        return None if estimate is None else int(estimate)

    def usable_gpu_bytes(self) -> float:
        return GPU_MEMORY_GB[self.gpu_type] * 1e9 * self.gpu_count * self.memory_utilization


@dataclass(frozen=True)
class Catalog:
    directory: Path
    settings: Settings
    models: tuple[ModelSpec, ...]
