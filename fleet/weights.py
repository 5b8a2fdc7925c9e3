"""Fetch exactly the locked files of a model into the Hugging Face cache, and check their sizes.

Runs inside the app's `download_weights` container (shipped beside fleet/runtime.py) and in tests against a
local hub; standard library only at import, `huggingface_hub` (in the vLLM image) imported when called.
Each file is fetched by name at the locked commit (`hf_hub_download`), never through glob patterns, so a file
name with `*` or `[` in it cannot widen the download; files already in the cache are not fetched again.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

PARALLEL_FILES = 8


class WeightsError(RuntimeError):
    """A locked file is missing or has another size than the lock says."""


def fetch_locked(
    model: str,
    commit: str,
    files: tuple[tuple[str, int], ...],
    *,
    endpoint: str | None = None,
    cache_dir: str | None = None,
    token: str | None = None,
) -> str:
    """Download `files` ((path, bytes) from catalog/fleet.lock) of `model` at `commit`; the snapshot folder.

    Raises WeightsError naming every file whose size on disk differs from the lock (a re-pushed file, a
    truncated download): a container must not serve other weights than the ones reviewed.
    """
    from huggingface_hub import hf_hub_download

    def fetch(item: tuple[str, int]) -> tuple[str, int, str]:
        path, size = item
        local = hf_hub_download(
            model, path, revision=commit, endpoint=endpoint, cache_dir=cache_dir, token=token
        )
        return path, size, local

    with ThreadPoolExecutor(max_workers=PARALLEL_FILES) as pool:
        fetched = list(pool.map(fetch, files))
    wrong = [
        f"{path} ({os.path.getsize(local)} bytes, locked {size})"
        for path, size, local in fetched
        if os.path.getsize(local) != size
    ]
    if wrong:
        raise WeightsError(f"{model}@{commit[:12]}: sizes differ from catalog/fleet.lock: {', '.join(wrong)}")
    if not fetched:
        raise WeightsError(f"{model}@{commit[:12]}: the lock lists no files")
    first_path, _, first_local = fetched[0]
    return str(Path(first_local).parents[len(Path(first_path).parts) - 1])
