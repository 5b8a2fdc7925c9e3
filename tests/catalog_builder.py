"""Build catalogs for tests from dicts (or raw text), the way a platform team would write them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

SETTINGS = {"prefix": "fleet", "vllm_version": "0.33.0"}
PINNED = "0123456789abcdef0123456789abcdef01234567"


def model(name: str, **overrides: Any) -> dict[str, Any]:
    """A valid model entry that raises no warning; `overrides` replace top-level keys."""
    entry: dict[str, Any] = {
        "name": name,
        "model": {"id": "Qwen/Qwen3-4B-Instruct-2507", "revision": PINNED, "params_b": 4, "dtype": "bf16"},
        "gpu": {"type": "L4", "count": 1},
    }
    entry.update(overrides)
    return entry


def write_catalog(
    directory: Path,
    models: dict[str, dict[str, Any] | str | bytes],
    settings: dict[str, Any] | str | None = None,
) -> Path:
    """Write `models` (file stem -> dict, YAML text or raw bytes) and `_fleet.yaml` into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    files: dict[str, Any] = {"_fleet": SETTINGS if settings is None else settings, **models}
    for stem, content in files.items():
        path = directory / f"{stem}.yaml"
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif isinstance(content, str):
            path.write_text(content, encoding="utf-8")
        else:
            path.write_text(yaml.safe_dump(content, sort_keys=False), encoding="utf-8")
    return directory
