"""Deploy speed against the fake control plane with a delay per deploy (a stand-in for Modal's build and
publish time): 12 models with --parallel 4 vs --parallel 1, and a second `deploy --all` with nothing changed.

    python benchmarks/bench_deploy.py [--delay 2.0]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from catalog_builder import model, write_catalog  # noqa: E402
from fake_modal import FakeModal  # noqa: E402


def timed_deploy(fleet: str, catalog: Path, env: dict[str, str], *args: str) -> tuple[float, str]:
    started = time.perf_counter()
    result = subprocess.run(
        [fleet, "deploy", "--all", "--catalog", str(catalog), "--out", str(catalog.parent / "apps"), *args],
        env=env, capture_output=True, text=True,
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"deploy failed:\n{result.stdout}\n{result.stderr}")
    return elapsed, result.stdout.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--delay", type=float, default=2.0)
    parser.add_argument("--models", type=int, default=12)
    args = parser.parse_args()
    fleet = str(Path(sys.executable).with_name("fleet"))
    with tempfile.TemporaryDirectory() as tmp:
        catalog = write_catalog(Path(tmp) / "catalog", {f"m{i:02d}": model(f"m{i:02d}") for i in range(args.models)})
        timings = {}
        for parallel in (1, 4):
            with FakeModal(existing_secrets={"vllm-api-key", "huggingface-secret"}) as fake:
                fake.deploy_delay = args.delay
                env = {**os.environ, **fake.client_env(), "MODAL_CONFIG_PATH": str(Path(tmp) / "none.toml")}
                timings[parallel], summary = timed_deploy(fleet, catalog, env, "--parallel", str(parallel))
                print(f"--parallel {parallel}: {timings[parallel]:6.1f} s  ({summary})")
                if parallel == 4:
                    again, summary = timed_deploy(fleet, catalog, env, "--parallel", "4")
                    print(f"second deploy --all:  {again:6.2f} s  ({summary}; goal < 3 s, nothing deployed)")
        print(f"speed-up --parallel 4 vs 1: {timings[1] / timings[4]:.2f}x (goal >= 3.5x)")


if __name__ == "__main__":
    main()
