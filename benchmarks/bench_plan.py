"""The plan's speed and what it saves.

1. `fleet plan --all` for a 500-model catalog, all deployed to the fake control plane (real modal client over
   gRPC): wall time of the whole command in a fresh process (goal < 2 s), and with one model's scaling edited.
2. Ten realistic catalog edits in a row on a 12-model fleet (scaling, flags, GPU, new model, removal, ...):
   snapshots lost under the old rule (any change to the rendered app redeploys) vs the new plan (scaling is
   applied live), counted from the plans `fleet plan --json` prints and the deploys the fake records.

    python benchmarks/bench_plan.py [--models 500]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from catalog_builder import model, write_catalog  # noqa: E402
from fake_modal import FakeModal  # noqa: E402


def fleet(env: dict[str, str], catalog: Path, *args: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    done = subprocess.run(
        [str(Path(sys.executable).with_name("fleet")), *args, "--catalog", str(catalog)],
        env=env, capture_output=True, text=True, cwd=catalog.parent,
    )
    return time.perf_counter() - started, done


def edit(catalog: Path, name: str, **changes: Any) -> None:
    path = catalog / f"{name}.yaml"
    entry = yaml.safe_load(path.read_text())
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(entry.get(key), dict):
            entry[key] = {**entry[key], **value}
        else:
            entry[key] = value
    path.write_text(yaml.safe_dump(entry))


def environment(fake: FakeModal, tmp: Path) -> dict[str, str]:
    return {**os.environ, **fake.client_env(), "MODAL_CONFIG_PATH": str(tmp / "none.toml"), "PYTHONPATH": str(REPO)}


def bench_plan_speed(models: int) -> None:
    with tempfile.TemporaryDirectory() as tmp_name, FakeModal(existing_secrets={"vllm-api-key"}) as fake:
        tmp = Path(tmp_name)
        catalog = write_catalog(tmp / "catalog", {f"m{i:03d}": model(f"m{i:03d}") for i in range(models)})
        env = environment(fake, tmp)
        seconds, done = fleet(env, catalog, "deploy", "--all", "--parallel", "32", "--skip-weights")
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        print(f"setup: {models} models deployed to the fake in {seconds:.1f} s")
        runs = []
        for _ in range(3):
            seconds, done = fleet(env, catalog, "plan", "--all", "--detailed-exitcode")
            assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
            runs.append(seconds)
        print(f"fleet plan --all, {models} deployed, nothing to do: best {min(runs):.2f} s, runs "
              f"{', '.join(f'{r:.2f}' for r in runs)} (goal < 2 s)")
        edit(catalog, "m007", scaling={"max_containers": 3})
        seconds, done = fleet(env, catalog, "plan", "--all", "--detailed-exitcode")
        assert done.returncode == 2
        print(f"fleet plan --all with one scaling edit: {seconds:.2f} s -> {done.stdout.strip().splitlines()[-1]}")
        seconds, _ = fleet(env, catalog, "list")
        print(f"(for scale: `fleet list`, which validates the catalog and talks to no one: {seconds:.2f} s)")
        done = subprocess.run([sys.executable, "-c", STAGES, str(catalog)], env=env, capture_output=True, text=True)
        print(f"stages in one process: {done.stdout.strip() or done.stderr[-1500:]}")
        print(f"load average while measuring (2-core machine shared with other work): {os.getloadavg()[0]:.1f}")


# The plan's stages, timed inside one process: wall and this process's CPU (the fake answers in another).
STAGES = """
import sys, time
from pathlib import Path
t = [time.perf_counter()]; c = [time.process_time()]
def lap(): t.append(time.perf_counter()); c.append(time.process_time())
import modal
from fleet.catalog import check_catalog
from fleet.deploy import make_plan
from fleet.modal_api import ModalClient
from fleet.render import render_all
lap()
catalog = check_catalog(Path(sys.argv[1])).catalog; lap()
apps = render_all(list(catalog.models)); lap()
client = ModalClient(None); client.require_credentials(); deployed = client.deployed_apps("fleet"); lap()
plan = make_plan(apps, deployed, orphans_of="fleet"); lap()
names = ["imports", "validate", "render", "read tags", "make_plan"]
print(", ".join(f"{n} {t[i+1]-t[i]:.2f} s (cpu {c[i+1]-c[i]:.2f})" for i, n in enumerate(names)), "|", plan.summary())
"""


EDITS: list[tuple[str, str, dict[str, Any] | None]] = [
    # (description, model, changes); None = remove the model; a name not in the catalog = a new model
    ("scale m00 to 3 containers", "m00", {"scaling": {"max_containers": 3}}),
    ("keep one warm container of m01", "m01", {"scaling": {"min_containers": 1}}),
    ("longer scaledown for m02..", "m02", {"scaling": {"scaledown_window": 1200}}),
    ("add a reasoning parser flag to m03", "m03", {"vllm": {"args": ["--reasoning-parser", "qwen3"]}}),
    ("move m04 to an H100", "m04", {"gpu": {"type": "H100", "count": 1}}),
    ("new model m12", "m12", {}),
    ("remove m05", "m05", None),
    ("scale m03 down again (after its flag change)", "m03", {"scaling": {"max_containers": 2}}),
    ("fast_boot + scaling on m06 (mixed)", "m06", {"vllm": {"fast_boot": True}, "scaling": {"max_containers": 4}}),
    ("bump m07 max containers and scaledown", "m07", {"scaling": {"max_containers": 5, "scaledown_window": 900}}),
]


def bench_edits() -> None:
    with tempfile.TemporaryDirectory() as tmp_name, FakeModal(existing_secrets={"vllm-api-key"}) as fake:
        tmp = Path(tmp_name)
        catalog = write_catalog(tmp / "catalog", {f"m{i:02d}": model(f"m{i:02d}") for i in range(12)})
        env = environment(fake, tmp)
        assert fleet(env, catalog, "deploy", "--all", "--parallel", "12", "--skip-weights")[1].returncode == 0
        old_rule = new_rule = 0
        print(f"{'edit':48} {'old rule':>9} {'new plan':>9}  plan")
        for description, name, changes in EDITS:
            if changes is None:
                (catalog / f"{name}.yaml").unlink()
            elif not (catalog / f"{name}.yaml").exists():
                write_catalog(catalog, {name: model(name)})
            else:
                edit(catalog, name, **changes)
            plan = json.loads(fleet(env, catalog, "plan", "--all", "--json")[1].stdout)
            # The old rule: every app whose rendered source changed was redeployed (its snapshot lost).
            changed = [i for i in plan["items"] if i["action"] in ("redeploy", "update live")]
            old = sum(1 for i in changed if i["action"] == "update live" or i["snapshot_lost"])
            new = plan["summary"]["snapshots_lost"]
            publishes = len(fake.calls("AppPublish"))
            done = fleet(env, catalog, "deploy", "--all", "--skip-weights")[1]
            assert done.returncode == 0, done.stdout + done.stderr
            assert len(fake.calls("AppPublish")) - publishes == plan["summary"]["create"] + plan["summary"]["redeploy"]
            old_rule += old
            new_rule += new
            print(f"{description:48} {old:>9} {new:>9}  {plan['summary']['text']}")
        updates = len(fake.calls("FunctionUpdateSchedulingParams"))
        print(f"{'total snapshots lost':48} {old_rule:>9} {new_rule:>9}  ({updates} live autoscaler updates instead)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=int, default=500)
    args = parser.parse_args()
    bench_plan_speed(args.models)
    print()
    bench_edits()


if __name__ == "__main__":
    main()
