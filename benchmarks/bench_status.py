"""`fleet status` for a large fleet against the fake control plane with a delay on every RPC (a stand-in for
the round trip to Modal): 50 models, 100 ms per call. Times each part (the app listing with tags, the plan
rows with URLs, the live columns) in process, the live columns also one lookup at a time for the ratio, and
the whole command as a user runs it (a fresh process: imports included).

    python benchmarks/bench_status.py [--models 50] [--latency 0.1]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from catalog_builder import model, write_catalog  # noqa: E402
from fake_modal import FakeModal, reset_modal_client  # noqa: E402
from modal_proto.api_grpc import ModalClientBase  # noqa: E402


class SlowFakeModal(FakeModal):
    """Every RPC waits `latency` seconds before it is answered, like a round trip to Modal."""

    latency = 0.0


def _slowed(handler):  # noqa: ANN001, ANN202 - a grpclib handler
    async def slow(self, stream):  # noqa: ANN001, ANN202
        if self.latency:
            await asyncio.sleep(self.latency)
        await handler(self, stream)

    return slow


for _path in ModalClientBase.__mapping__(object.__new__(SlowFakeModal)):
    _name = _path.rsplit("/", 1)[-1]
    setattr(SlowFakeModal, _name, _slowed(getattr(FakeModal, _name)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=int, default=50)
    parser.add_argument("--latency", type=float, default=0.1)
    args = parser.parse_args()
    fleet = str(Path(sys.executable).with_name("fleet"))
    with tempfile.TemporaryDirectory() as tmp, SlowFakeModal(existing_secrets={"vllm-api-key"}) as fake:
        names = [f"m{i:02d}" for i in range(args.models)]
        catalog_dir = write_catalog(Path(tmp) / "catalog", {n: model(n) for n in names})
        env = {**os.environ, **fake.client_env(), "MODAL_CONFIG_PATH": str(Path(tmp) / "none.toml")}
        os.environ.update({k: v for k, v in env.items() if k.startswith("MODAL_")})
        deploy = subprocess.run(
            [fleet, "deploy", "--all", "--skip-weights", "--parallel", "16", "--catalog", str(catalog_dir),
             "--out", str(Path(tmp) / "apps")],
            env=env, capture_output=True, text=True,
        )
        if deploy.returncode != 0:
            raise SystemExit(f"deploy failed:\n{deploy.stdout}\n{deploy.stderr}")
        now = time.time()
        for i, name in enumerate(names):  # a realistic log per model: a snapshotting start, then restores
            app = f"fleet-{name}"
            fake.set_app_stats(app, requests_ok=100 + i, requests_failed=i % 3, containers=1)
            fake.add_cold_start(app, "snapshot", container=f"ta-{i}-0", at=now - 3000)
            for j in range(1, 4):
                fake.add_cold_start(app, "restore", container=f"ta-{i}-{j}", at=now - 3000 + 600 * j)
            for k in range(200):
                fake.add_log(app, f'INFO: 10.0.0.1 - "POST /v1/chat/completions HTTP/1.1" 200 ({k})',
                             container=f"ta-{i}-3", at=now - 1000 + k)

        fake.latency = args.latency
        fake.requests.clear()
        timings = measure_in_process(catalog_dir)
        calls: dict[str, int] = {}
        for name in fake.method_names():
            calls[name] = calls.get(name, 0) + 1
        started = time.perf_counter()
        status = subprocess.run([fleet, "status", "--catalog", str(catalog_dir)], env=env, capture_output=True, text=True)
        whole = time.perf_counter() - started
        if status.returncode != 0:
            raise SystemExit(f"status failed:\n{status.stdout}\n{status.stderr}")
        in_use = sum("in use" in line for line in status.stdout.splitlines())

    print(f"{args.models} models, {args.latency * 1000:.0f} ms per RPC")
    for label, seconds in timings.items():
        print(f"  {label:<44} {seconds:6.2f} s")
    print(f"  {'whole `fleet status` (new process)':<44} {whole:6.2f} s  ({in_use} rows 'in use'; goal < 3 s)")
    print(f"  RPCs in process: {dict(sorted(calls.items(), key=lambda kv: -kv[1]))}")
    print(f"  live columns: parallel vs one at a time: {timings['live columns, one lookup at a time'] / timings['live columns (parallel)']:.1f}x")


def measure_in_process(catalog_dir: Path) -> dict[str, float]:
    from fleet import observe
    from fleet.catalog import load_catalog
    from fleet.deploy import make_plan, status_rows
    from fleet.modal_api import ModalClient
    from fleet.render import render_all

    reset_modal_client()
    catalog = load_catalog(catalog_dir)
    apps = render_all(list(catalog.models))
    client = ModalClient(None)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    deployed = client.deployed_apps("fleet")
    timings["app listing + tags (deployed_apps)"] = time.perf_counter() - started
    started = time.perf_counter()
    status_rows(make_plan(apps, deployed, orphans_of="fleet"), client)
    timings["plan rows + URLs (status_rows)"] = time.perf_counter() - started
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=16) as pool:  # what status_rows would take with its URLs in parallel
        list(pool.map(lambda a: client.web_url(a.spec.app_name, a.spec.class_name), apps))
    timings["(the same URLs looked up 16 at a time)"] = time.perf_counter() - started
    specs = [a.spec for a in apps]
    started = time.perf_counter()
    live = observe.live_status(ModalClient(None), specs)
    timings["live columns (parallel)"] = time.perf_counter() - started
    assert all(s.snapshot.state == observe.IN_USE for s in live.values()), live
    observe.PARALLEL_LOOKUPS = 1
    started = time.perf_counter()
    observe.live_status(ModalClient(None), specs[:10])
    timings["live columns, one lookup at a time"] = (time.perf_counter() - started) * len(specs) / 10
    observe.PARALLEL_LOOKUPS = 32
    return timings


if __name__ == "__main__":
    main()
