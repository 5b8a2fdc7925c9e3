"""`fleet lock` speed and what the lock saves in downloads, against the local hub (tests/fake_hub.py) with the
real huggingface_hub client. Ratios within one run; timings on a shared machine are noisy.

1. Lock 100 models (each a sharded safetensors repository with an index: 2 hub calls per model), in parallel
   (16 at once, the default) and one at a time, with the hub on this machine and with 50 ms added per request
   (a hub across the internet).
2. Bytes `download_weights` fetches for the shipped catalog's repositories (shaped like the real ones, weight
   files 1000x smaller so they really download): without the lock (the old `snapshot_download` of the whole
   repository) and with it (`fleet.weights.fetch_locked`, exactly the locked files); then the same at full size
   from the declared file sizes.

    python benchmarks/bench_lock.py
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from catalog_builder import model, write_catalog  # noqa: E402
from fake_hub import TOKEN_WITH_ACCESS, FakeHub, _config, _index, _shards, add_real_shapes, real_shapes  # noqa: E402

MODELS = 100
SCALE = 1000


def many_repos(hub: FakeHub, count: int) -> None:
    for i in range(count):
        shards = _shards(4, 4000 + i)
        files = {"config.json": _config(num_hidden_layers=2), **shards, "model.safetensors.index.json": _index(shards),
                 "tokenizer.json": 100, "README.md": b"card"}
        hub.add_repo(f"Org/model-{i:03d}", files)


def time_lock(catalog_dir: Path, workers: int, cache: Path) -> tuple[float, int]:
    """One lock from scratch: no lock file, an empty HF cache (the indexes are fetched again)."""
    from fleet.catalog import load_catalog
    from fleet.hub import Hub
    from fleet.lock import lock_catalog, lock_path

    lock_path(catalog_dir).unlink(missing_ok=True)
    catalog = load_catalog(catalog_dir)
    started = time.perf_counter()
    report = lock_catalog(catalog, list(catalog.models), Hub(cache_dir=cache), workers=workers, prune=True)
    elapsed = time.perf_counter() - started
    assert not report.failed, report.failed[0].error
    return elapsed, sum(o.action == "locked" for o in report.outcomes)


def bench_lock_speed(work: Path) -> None:
    with FakeHub() as hub:
        many_repos(hub, MODELS)
        os.environ["HF_ENDPOINT"] = hub.url
        models = {
            f"m{i:03d}": model(f"m{i:03d}", model={"id": f"Org/model-{i:03d}", "revision": "main"})
            for i in range(MODELS)
        }
        catalog_dir = write_catalog(work / "catalog100", models)
        print(f"lock of {MODELS} models (model info + safetensors index each):")
        for latency in (0.0, 0.05):
            hub.latency_s = latency
            hub.requests.clear()
            parallel, locked = time_lock(catalog_dir, 16, work / f"cache-{latency}-16")
            requests = len(hub.requests)
            serial, _ = time_lock(catalog_dir, 1, work / f"cache-{latency}-1")
            print(
                f"  hub latency {latency * 1000:3.0f} ms: 16 at once {parallel:5.2f} s, one at a time {serial:5.2f} s "
                f"({serial / parallel:.1f}x); {locked} locked, {requests} hub requests"
            )
        hub.latency_s = 0.0
        from fleet.catalog import load_catalog
        from fleet.hub import Hub
        from fleet.lock import lock_catalog

        catalog = load_catalog(catalog_dir)
        hub.requests.clear()
        started = time.perf_counter()
        lock_catalog(catalog, list(catalog.models), Hub(cache_dir=work / "cache-again"), prune=True)
        elapsed = time.perf_counter() - started
        print(f"  second lock, nothing changed: {elapsed:.3f} s, {len(hub.requests)} hub requests")


def bench_bytes(work: Path) -> None:
    import huggingface_hub.constants as hf_constants
    from huggingface_hub import snapshot_download

    from fleet.hub import Hub
    from fleet.lock import entry_from_repo
    from fleet.weights import fetch_locked

    os.environ["HF_TOKEN"] = TOKEN_WITH_ACCESS
    hf_constants.HF_HUB_CACHE = str(work / "lock-cache")
    # The load format each shipped entry asks for (mistral-small-24b passes --load-format mistral).
    formats = {"mistralai/Mistral-Small-3.2-24B-Instruct-2506": "mistral"}
    shapes = real_shapes()
    print(f"\nbytes download_weights fetches, weight files 1/{SCALE} size, measured at the hub (then x{SCALE}):")
    print(f"  {'repository':48} {'without lock':>13} {'with lock':>11} {'saved':>7}")
    totals = [0, 0]
    with FakeHub() as hub:
        add_real_shapes(hub, scale=SCALE)
        os.environ["HF_ENDPOINT"] = hub.url
        for repo_id in shapes:
            repo = Hub().files_at(repo_id, "main")
            entry = entry_from_repo(Hub(), repo_id, repo, formats.get(repo_id, "auto"))
            hub.bytes_served.clear()
            snapshot_download(repo_id, revision=entry.commit, endpoint=hub.url, cache_dir=str(work / "a" / repo_id))
            without = hub.bytes_served[repo_id]
            hub.bytes_served.clear()
            fetch_locked(repo_id, entry.commit, entry.files, endpoint=hub.url, cache_dir=str(work / "b" / repo_id))
            with_lock = hub.bytes_served[repo_id]
            if repo_id != "mistralai/Mistral-7B-Instruct-v0.2":
                totals[0] += without
                totals[1] += with_lock
            saved = 1 - with_lock / without
            print(f"  {repo_id:48} {without * SCALE / 1e9:10.1f} GB {with_lock * SCALE / 1e9:8.1f} GB {saved:6.0%}")
        print(f"  {'shipped catalog (5 models)':48} {totals[0] * SCALE / 1e9:10.1f} GB "
              f"{totals[1] * SCALE / 1e9:8.1f} GB "
              f"{1 - totals[1] / totals[0]:6.0%}")
        # Full size, from the declared sizes: what the real repositories would cost.
        full = [0, 0]
        for repo_id, (files, _) in shapes.items():
            if repo_id == "mistralai/Mistral-7B-Instruct-v0.2":
                continue
            sizes = {p: c if isinstance(c, int) else len(c) for p, c in files.items()}
            from fleet.lock import select_files, weight_files

            _, _, index = weight_files(sizes, formats.get(repo_id, "auto"))
            weight_map = None
            if index:
                import json

                weight_map = json.loads(files[index])["weight_map"]
            chosen = select_files(sizes, formats.get(repo_id, "auto"), weight_map)
            full[0] += sum(sizes.values())
            full[1] += sum(sizes[p] for p in chosen)
        print(f"  full size from the declared file sizes: {full[0] / 1e9:.1f} GB without the lock, "
              f"{full[1] / 1e9:.1f} GB with it ({1 - full[1] / full[0]:.0%} less)")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        bench_lock_speed(work)
        bench_bytes(work)


if __name__ == "__main__":
    main()
