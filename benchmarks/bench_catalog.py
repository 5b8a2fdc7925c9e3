"""Catalog speed, one run, as ratios: `fleet --help` vs `import click`; validate of the shipped catalog and
of 500 generated models; render of both. Timed figures are noisy on a shared machine: compare within a run.

    python benchmarks/bench_catalog.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from catalog_builder import model, write_catalog  # noqa: E402

GPUS = ["L4", "A10", "L40S", "A100-80GB", "H100"]


def best_of(command: list[str], runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, check=False, capture_output=True)
        times.append(time.perf_counter() - started)
    return min(times)


def generated_catalog(directory: Path, count: int) -> Path:
    models = {
        f"model-{i:03d}": model(f"model-{i:03d}", gpu={"type": GPUS[i % len(GPUS)], "count": 1}) for i in range(count)
    }
    return write_catalog(directory, models)


def in_process(function, runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    python = sys.executable
    fleet = str(Path(python).with_name("fleet"))
    click_import = best_of([python, "-c", "import click"])
    help_time = best_of([fleet, "--help"])
    print(f"python -c 'import click'     {click_import * 1000:7.0f} ms")
    print(f"fleet --help                 {help_time * 1000:7.0f} ms  ({help_time / click_import:.2f}x, goal <= 3x)")
    modal_loaded = subprocess.run(
        [python, "-c", "import sys; from fleet.cli import main; import fleet.catalog, fleet.render;"
         " print('modal' in sys.modules or 'vllm' in sys.modules)"],
        capture_output=True, text=True,
    ).stdout.strip()
    print(f"validate/render import modal or vllm: {modal_loaded}")

    shipped = best_of([fleet, "validate", "--catalog", str(REPO / "catalog")])
    print(f"fleet validate (shipped, 5)  {shipped * 1000:7.0f} ms")
    with tempfile.TemporaryDirectory() as tmp:
        big = generated_catalog(Path(tmp) / "catalog", 500)
        whole = best_of([fleet, "validate", "--catalog", str(big)], runs=3)
        print(f"fleet validate (500 models)  {whole * 1000:7.0f} ms  (goal < 1000 ms, whole process)")

        from fleet.catalog import check_catalog, load_catalog
        from fleet.render import render_all

        check_catalog(big)  # warm caches: schema, validator, template
        print(f"  in process: check 500     {in_process(lambda: check_catalog(big)) * 1000:7.0f} ms")
        specs = list(load_catalog(big).models)
        shipped_specs = list(load_catalog(REPO / "catalog").models)
        render_all(shipped_specs)
        print(f"  in process: render 5      {in_process(lambda: render_all(shipped_specs)) * 1000:7.1f} ms")
        print(f"  in process: render 500    {in_process(lambda: render_all(specs)) * 1000:7.0f} ms")
        rendered = best_of([fleet, "render", "--all", "--catalog", str(big), "--out", str(Path(tmp) / "apps")], 3)
        print(f"fleet render --all (500)     {rendered * 1000:7.0f} ms  (whole process)")


if __name__ == "__main__":
    main()
