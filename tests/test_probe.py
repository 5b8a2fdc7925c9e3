"""`fleet smoke`, `fleet bench`, `fleet prime` and fleet/probe.py against a local OpenAI-compatible stand-in;
prime's Modal side (containers listed and stopped) against the fake control plane.

The stand-in plays a scale-to-zero endpoint: a request that finds no running container is a cold start
(slow for the first N, then fast, like a snapshot coming into use); stopping the containers makes the next
request cold again.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from catalog_builder import model, write_catalog
from fleet import probe
from fleet.cli import main
from fleet.probe import Endpoint

KEY = "sk-fleet-test-0d5e7c"
WORDS = ["Hello", " platform", " team", "!"]


class StandIn:
    """A threaded OpenAI-compatible server: GET /v1/models, POST /v1/chat/completions (plain or streamed).

    `cold_delays[i]` is how long the i-th cold start takes (then `fast_cold`); `failing_cold_from` makes
    every cold start from that index on answer 500, like a restore that crashes.
    """

    def __init__(
        self,
        *,
        model: str = "tiny",
        key: str | None = KEY,
        cold_delays: tuple[float, ...] = (),
        fast_cold: float = 0.0,
        warm_delay: float = 0.0,
        token_delay: float = 0.0,
        status: int = 200,
        failing_cold_from: int | None = None,
        is_running: Callable[[], bool] | None = None,
        on_cold_start: Callable[[], None] | None = None,
    ) -> None:
        self.model, self.key = model, key
        self.cold_delays, self.fast_cold, self.warm_delay = cold_delays, fast_cold, warm_delay
        self.token_delay, self.status, self.failing_cold_from = token_delay, status, failing_cold_from
        self._running = False
        self._is_running = is_running or (lambda: self._running)
        self._on_cold_start = on_cold_start or (lambda: None)
        self.cold_starts = 0
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def stop_containers(self) -> int:
        """What Modal's container stop does to the endpoint: the next request is a cold start."""
        with self.lock:
            was, self._running = self._running, False
        return int(was)

    def before_reply(self) -> int:
        """Play a cold start (or not); returns the HTTP status to answer with."""
        with self.lock:
            cold = not self._is_running()
            if cold:
                index = self.cold_starts
                self.cold_starts += 1
                self._running = True
                self._on_cold_start()
        if cold:
            time.sleep(self.cold_delays[index] if index < len(self.cold_delays) else self.fast_cold)
            if self.failing_cold_from is not None and index >= self.failing_cold_from:
                with self.lock:
                    self._running = False  # the container crashed
                return 500
        else:
            time.sleep(self.warm_delay)
        return self.status

    def __enter__(self) -> "StandIn":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


def _handler(stand_in: StandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _authorized(self) -> bool:
            if stand_in.key is None or self.headers.get("Authorization") == f"Bearer {stand_in.key}":
                return True
            self._json(401, {"error": "Unauthorized"})
            return False

        def _json(self, status: int, payload: Any) -> None:
            send_json(self, status, payload)

        def do_GET(self) -> None:
            stand_in.requests.append(("GET", self.path, dict(self.headers)))
            if self.path != "/v1/models":
                return self._json(404, {"error": "not found"})
            if self._authorized():
                self._json(200, {"object": "list", "data": [{"id": stand_in.model, "object": "model"}]})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            stand_in.requests.append(("POST", self.path, dict(self.headers)))
            if not self._authorized():
                return
            status = stand_in.before_reply()
            if status != 200:
                return self._json(status, {"error": {"message": "engine failed", "code": status}})
            words = (WORDS * 64)[: body.get("max_tokens", 16)]
            if not body.get("stream"):
                message = {"role": "assistant", "content": "".join(words)}
                usage = {"prompt_tokens": 9, "completion_tokens": len(words), "total_tokens": 9 + len(words)}
                return self._json(200, {"choices": [{"index": 0, "message": message}], "usage": usage})
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()  # HTTP/1.0: the body ends when the connection closes
            self._event({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
            for word in words:
                self._event({"choices": [{"index": 0, "delta": {"content": word}}]})
                time.sleep(stand_in.token_delay)
            self._event({"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]})
            if (body.get("stream_options") or {}).get("include_usage"):
                self._event({"choices": [], "usage": {"completion_tokens": len(words)}})
            self.wfile.write(b"data: [DONE]\n\n")

        def _event(self, payload: Any) -> None:
            self.wfile.write(f"data: {json.dumps(payload)}\n\n".encode())
            self.wfile.flush()

    return Handler


def send_json(handler: Any, status: int, payload: Any) -> None:
    """An http.server handler's JSON answer, as an OpenAI-compatible server sends it."""
    data = json.dumps(payload).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


@pytest.fixture
def stand_in(request: pytest.FixtureRequest) -> Iterator[StandIn]:
    options = getattr(request, "param", {})
    with StandIn(**options) as server:
        yield server


def fleet(*args: str, key: str | None = KEY) -> Result:
    env = {"FLEET_API_KEY": key} if key else {"FLEET_API_KEY": ""}
    return CliRunner().invoke(main, list(args), env=env)


def endpoint(server: StandIn, name: str = "tiny") -> Endpoint:
    return Endpoint(name, server.base_url, server.model, KEY)


# --- smoke -------------------------------------------------------------------------------------------------


def test_smoke_passes_each_check_and_shows_its_time(stand_in: StandIn) -> None:
    result = fleet("smoke", "--url", stand_in.base_url, "--model", "tiny")
    assert result.exit_code == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "CHECK", "RESULT", "TIME", "DETAIL"]
    rows = [line.split(None, 4) for line in lines[1:4]]
    assert [r[:3] for r in rows] == [["tiny", "models", "ok"], ["tiny", "chat", "ok"], ["tiny", "auth", "ok"]]
    assert all(r[3].endswith("s") and float(r[3][:-1]) >= 0 for r in rows)
    assert rows[0][4] == "serves tiny"
    assert rows[1][4] == '16 token(s): "Hello platform team!Hello platform team!"'
    assert rows[2][4] == "refused without a key (401)"
    assert lines[-1] == "1 of 1 endpoint(s) passed"
    assert "[tiny] chat: ok in" in result.stderr  # progress on stderr


def test_smoke_json_has_every_check(stand_in: StandIn) -> None:
    result = fleet("smoke", "tiny", "--url", stand_in.base_url, "--json")
    assert result.exit_code == 0
    [report] = json.loads(result.stdout)
    assert report["name"] == "tiny" and report["model"] == "tiny" and report["ok"] is True
    assert [(c["check"], c["ok"]) for c in report["checks"]] == [("models", True), ("chat", True), ("auth", True)]
    assert all(isinstance(c["seconds"], float) for c in report["checks"])


@pytest.mark.parametrize("stand_in", [{"key": None}], indirect=True)
def test_smoke_fails_an_endpoint_open_without_a_key(stand_in: StandIn) -> None:
    result = fleet("smoke", "--url", stand_in.base_url, "--model", "tiny", "--json")
    assert result.exit_code == 1
    checks = {c["check"]: c for c in json.loads(result.stdout)[0]["checks"]}
    assert checks["auth"] == {
        "check": "auth", "ok": False, "seconds": checks["auth"]["seconds"],
        "detail": "answered 200 without a key: the endpoint is open to anyone",
    }
    assert checks["models"]["ok"] and checks["chat"]["ok"]
    assert "error: tiny: smoke test failed" in result.stderr


def test_smoke_fails_when_the_served_name_differs(stand_in: StandIn) -> None:
    result = fleet("smoke", "--url", stand_in.base_url, "--model", "qwen3-4b")
    assert result.exit_code == 1
    assert "qwen3-4b  models  FAILED" in result.stdout and "serves tiny, not qwen3-4b" in result.stdout
    assert "0 of 1 endpoint(s) passed" in result.stdout


@pytest.mark.parametrize("stand_in", [{"status": 503}], indirect=True)
def test_smoke_fails_a_chat_that_errors(stand_in: StandIn) -> None:
    result = fleet("smoke", "--url", stand_in.base_url, "--model", "tiny", "--json")
    assert result.exit_code == 1
    checks = {c["check"]: c for c in json.loads(result.stdout)[0]["checks"]}
    assert checks["chat"]["detail"] == 'HTTP 503: {"error": {"message": "engine failed", "code": 503}}'


def test_smoke_of_an_unreachable_endpoint_skips_the_other_checks() -> None:
    with StandIn() as server:
        url = server.base_url
    started = time.monotonic()
    result = fleet("smoke", "--url", url, "--model", "tiny", "--json")
    assert result.exit_code == 1 and time.monotonic() - started < 10
    checks = json.loads(result.stdout)[0]["checks"]
    assert checks[0]["detail"].startswith("ConnectError")
    assert [c["detail"] for c in checks[1:]] == ["skipped: the endpoint did not answer"] * 2


def test_wrong_key_is_reported_and_never_printed(stand_in: StandIn) -> None:
    wrong = "sk-wrong-9f8e7d6c"
    result = fleet("smoke", "--url", stand_in.base_url, "--model", "tiny", "--api-key", wrong)
    assert result.exit_code == 1
    assert "HTTP 401" in result.stdout
    assert wrong not in result.stdout + result.stderr and KEY not in result.stdout + result.stderr
    assert repr(endpoint(stand_in)).count(KEY) == 0


def test_no_key_is_an_error_before_any_request(stand_in: StandIn) -> None:
    url = stand_in.base_url
    for command in (["smoke", "--url", url, "--model", "tiny"], ["bench", "tiny", "--url", url]):
        result = fleet(*command, key=None)
        assert result.exit_code == 1
        assert result.stderr == (
            "error: no API key: pass --api-key or set FLEET_API_KEY (the VLLM_API_KEY in the Modal secret)\n"
        )
    assert stand_in.requests == []


def test_smoke_url_takes_one_endpoint(stand_in: StandIn) -> None:
    assert fleet("smoke", "a", "b", "--url", stand_in.base_url).exit_code == 2
    assert fleet("smoke", "--all", "--url", stand_in.base_url).exit_code == 2
    assert "--url needs the served model name" in fleet("smoke", "--url", stand_in.base_url).stderr


# --- bench -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stand_in", [{"token_delay": 0.01}], indirect=True)
def test_bench_reports_first_token_latency_and_throughput(stand_in: StandIn) -> None:
    result = fleet(
        "bench", "tiny", "--url", stand_in.base_url, "--requests", "8", "--concurrency", "2", "--max-tokens", "8",
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    first, warm = report["first_request"], report["warm"]
    assert report["ok"] and first["cold"] is False and first["tokens"] == 8 and first["error"] is None
    assert 0 < first["ttft_s"] < first["total_s"]
    assert (warm["requested"], warm["completed"], warm["failed"], warm["concurrency"]) == (8, 8, 0, 2)
    assert warm["tokens"] == 64 and warm["tokens_per_second"] > 0
    assert 0 < warm["latency_p50_s"] <= warm["latency_p95_s"]
    assert 0 < warm["ttft_p50_s"] <= warm["ttft_p95_s"] <= warm["latency_p95_s"]
    assert "[tiny] 8/8 warm requests, 0 failed" in result.stderr
    posts = [r for r in stand_in.requests if r[0] == "POST"]
    assert len(posts) == 9


def test_bench_text_report(stand_in: StandIn) -> None:
    result = fleet("bench", "tiny", "--url", stand_in.base_url, "--requests", "4", "--max-tokens", "4")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0] == f"tiny at {stand_in.base_url}"
    assert lines[1].startswith("first request: first token in ") and "4 token(s) in" in lines[1]
    assert lines[2].startswith("warm: 4/4 ok, 0 failed, concurrency 4, in ")
    assert lines[3].startswith("latency p50 ") and ", p95 " in lines[3]
    assert lines[4].startswith("throughput: 16 token(s), ") and lines[4].endswith(" tokens/s")


@pytest.mark.parametrize("stand_in", [{"warm_delay": 0.4}], indirect=True)
def test_bench_stops_starting_requests_at_the_time_limit(stand_in: StandIn) -> None:
    started = time.monotonic()
    result = fleet("bench", "tiny", "--url", stand_in.base_url, "--requests", "1000", "--concurrency", "2",
                   "--time-limit", "1", "--json")
    assert time.monotonic() - started < 5
    assert result.exit_code == 1
    warm = json.loads(result.stdout)["warm"]
    assert 2 <= warm["completed"] <= 8 and warm["failed"] == 0
    assert f"time limit reached after {warm['completed']} of 1000 requests" in result.stderr


@pytest.mark.parametrize("stand_in", [{"status": 500}], indirect=True)
def test_bench_stops_when_the_first_request_fails(stand_in: StandIn) -> None:
    result = fleet("bench", "tiny", "--url", stand_in.base_url, "--requests", "50")
    assert result.exit_code == 1
    assert 'first request: FAILED: HTTP 500: {"error"' in result.stdout
    assert len(stand_in.requests) == 1


def test_bench_first_request_is_a_cold_start_after_make_cold() -> None:
    with StandIn(cold_delays=(0.0, 0.3)) as server:
        server.before_reply()  # a container is running
        with probe.http_client(30) as client:
            report = probe.bench(endpoint(server), client, concurrency=2, requests=4, make_cold=server.stop_containers)
    assert report.cold and report.ok and report.first.ttft >= 0.3
    assert report.latency(0.95) < 0.3  # warm requests do not pay the cold start
    assert server.cold_starts == 2


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 21)]
    assert probe.percentile(values, 0.5) == 10.0
    assert probe.percentile(values, 0.95) == 19.0
    assert probe.percentile([3.0], 0.95) == 3.0
    assert probe.percentile([], 0.5) is None


# --- prime: the timing logic -------------------------------------------------------------------------------


def run_prime(server: StandIn, **options: Any) -> probe.PrimeReport:
    lines: list[str] = []
    with probe.http_client(30) as client:
        report = probe.prime(endpoint(server), client, server.stop_containers, progress=lines.append, **options)
    assert len(lines) == len(report.attempts)
    return report


def test_prime_stops_once_cold_starts_dropped_and_held() -> None:
    with StandIn(cold_delays=(0.6, 0.7, 0.6), fast_cold=0.05) as server:
        report = run_prime(server, max_attempts=8)
    assert report.verdict == "primed" and report.ok
    assert [a.fast for a in report.attempts] == [False, False, False, True, True]
    assert server.cold_starts == 5
    assert report.message.startswith("snapshot in use: cold start ")
    assert "down from 0.7s, after 5 cold start(s)" in report.message


def test_prime_needs_the_drop_to_hold() -> None:
    # one fast start between slow ones (a snapshot not yet taken everywhere) is not enough
    with StandIn(cold_delays=(0.6, 0.05, 0.6, 0.05), fast_cold=0.05) as server:
        report = run_prime(server, max_attempts=8)
    assert [a.fast for a in report.attempts] == [False, True, False, True, True]
    assert report.verdict == "primed"


def test_prime_reports_restores_that_keep_failing_instead_of_looping() -> None:
    with StandIn(cold_delays=(0.3,), failing_cold_from=1) as server:
        report = run_prime(server, max_attempts=8)
    assert report.verdict == "failing" and not report.ok
    assert len(report.attempts) == 3 and [a.timing.ok for a in report.attempts] == [True, False, False]
    assert report.message.startswith("2 cold starts in a row failed (last: HTTP 500")
    assert "exit code 139" in report.message


def test_prime_gives_up_after_max_attempts_without_a_drop() -> None:
    with StandIn(fast_cold=0.2) as server:
        report = run_prime(server, max_attempts=3)
    assert report.verdict == "unproven" and len(report.attempts) == 3 and server.cold_starts == 3
    assert "pass --target SECONDS" in report.message and "Restoring Function from memory snapshot" in report.message


def test_prime_target_accepts_a_snapshot_already_in_use() -> None:
    with StandIn(fast_cold=0.2) as server:
        report = run_prime(server, max_attempts=5, target=1.0)
    assert report.verdict == "primed" and len(report.attempts) == 2


def test_prime_ends_one_model_cleanly_when_its_containers_cannot_be_stopped() -> None:
    calls = []

    def broken_stop() -> int:
        calls.append(1)
        if len(calls) > 1:
            raise probe.ProbeError("1 container(s) still running 120s after being stopped")
        return 0

    with StandIn(cold_delays=(0.2,), fast_cold=0.05) as server, probe.http_client(30) as client:
        report = probe.prime(endpoint(server), client, broken_stop, max_attempts=5)
    assert report.verdict == "error" and not report.ok and len(report.attempts) == 1
    assert report.message == (
        "could not stop its containers before cold start 2: 1 container(s) still running 120s after being stopped"
    )


def test_stop_all_stops_each_container_once_and_waits_until_none_is_listed() -> None:
    listings = [["ta-1", "ta-2"], ["ta-2"], ["ta-2", "ta-3"], []]
    stopped: list[str] = []
    count = probe.stop_all(lambda: listings.pop(0), stopped.append, sleep=lambda s: None)
    assert count == 3 and stopped == ["ta-1", "ta-2", "ta-3"]


def test_stop_all_gives_up_when_containers_keep_running() -> None:
    stopped: list[str] = []
    with pytest.raises(probe.ProbeError, match="1 container.s. still running 0.1s after being stopped"):
        probe.stop_all(lambda: ["ta-1"], stopped.append, timeout=0.1, poll=0.01)
    assert stopped == ["ta-1"]


# --- prime, smoke, bench: the Modal side, against the fake control plane -----------------------------------


@pytest.fixture
def catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return write_catalog(
        tmp_path / "catalog",
        {
            "alpha": model("alpha", snapshot=True),
            "beta": model("beta", snapshot=False),
            "gamma": model("gamma", snapshot=True, scaling={"min_containers": 1}),
        },
    )


def test_modal_client_lists_and_stops_only_that_models_containers(fake_modal, catalog: Path) -> None:
    from fleet.modal_api import ModalClient

    assert fleet("deploy", "alpha", "beta", "--skip-weights").exit_code == 0
    alpha = fake_modal.add_container("fleet-alpha")
    fake_modal.add_container("fleet-beta")
    client = ModalClient(None)
    assert client.containers("fleet-alpha") == [alpha]
    client.stop_container(alpha)
    assert [req.task_id for req in fake_modal.calls("ContainerStop")] == [alpha]
    assert client.containers("fleet-alpha") == []
    client.stop_container(alpha)  # already stopped: no error
    assert len(client.containers("fleet-beta")) == 1


def test_prime_stops_the_models_containers_on_modal_until_the_snapshot_is_used(fake_modal, catalog: Path) -> None:
    assert fleet("deploy", "alpha", "--skip-weights").exit_code == 0
    app_id = fake_modal.app("fleet-alpha").app_id
    running = fake_modal.add_container("fleet-alpha")  # a container from before: stopped first

    def is_running() -> bool:
        return any(aid == app_id for aid, _ in fake_modal.tasks.values())

    def start_container() -> None:  # Modal starts a container for a request that found none
        fake_modal.add_container("fleet-alpha")

    with StandIn(model="alpha", cold_delays=(0.8,), fast_cold=0.05, is_running=is_running,
                 on_cold_start=start_container) as server:
        result = fleet("prime", "alpha", "--url", server.base_url, "--max-cold-starts", "5")
    assert result.exit_code == 0, result.stdout + result.stderr
    stops = [req.task_id for req in fake_modal.calls("ContainerStop")]
    assert len(stops) == 3 and stops[0] == running and len(set(stops)) == 3
    assert len(fake_modal.tasks) == 1  # the container that served the last request keeps running
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "COLD", "START", "STOPPED", "FIRST", "TOKEN", "RESULT"]
    assert [line.split()[:3] + line.split()[4:] for line in lines[1:4]] == [
        ["alpha", "1", "1", "slow"], ["alpha", "2", "1", "fast"], ["alpha", "3", "1", "fast"]
    ]
    assert lines[5].startswith("alpha: primed: snapshot in use: cold start ")
    assert "[alpha] cold start 1/5: stopped 1 container(s), first token in " in result.stderr


def test_prime_skips_models_it_cannot_prime_and_reports_undeployed_ones(fake_modal, catalog: Path) -> None:
    result = fleet("prime", "--all", "--json")
    assert result.exit_code == 1
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["beta"]["verdict"] == "skipped" and "snapshot off" in rows["beta"]["message"]
    assert rows["gamma"]["verdict"] == "skipped" and "min_containers is 1" in rows["gamma"]["message"]
    assert rows["alpha"] == {"name": "alpha", "verdict": "missing", "ok": False,
                             "message": "not deployed (run `fleet deploy`)"}
    assert fake_modal.calls("ContainerStop") == []


def test_smoke_and_bench_of_a_model_not_deployed(fake_modal, catalog: Path) -> None:
    smoke = fleet("smoke", "alpha")
    assert smoke.exit_code == 1 and "error: alpha: not deployed (run `fleet deploy`)" in smoke.stderr
    bench = fleet("bench", "alpha")
    assert bench.exit_code == 1 and bench.stderr == "error: alpha: not deployed (run `fleet deploy`)\n"
    assert fleet("smoke").exit_code == 2  # names or --all


# --- hostile and silent endpoints --------------------------------------------------------------------------


class _Echo(BaseHTTPRequestHandler):
    """Echoes the caller's Authorization header everywhere a reply can carry text."""

    mode = "error"

    def log_message(self, *args: Any) -> None:
        pass

    def _json(self, status: int, payload: Any) -> None:
        send_json(self, status, payload)

    def do_GET(self) -> None:
        echo = self.headers.get("Authorization", "")
        if self.mode == "error":
            return self._json(403, {"error": f"{'x' * 100} bad token {echo}"})  # the key straddles the cut
        self._json(200, {"data": [{"id": f"tiny {echo}"}]})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        echo = self.headers.get("Authorization", "")
        if self.mode == "error":
            return self._json(500, {"error": f"upstream said: {echo}"})
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        self.wfile.write(f"data: {json.dumps({'error': {'message': echo}})}\n\n".encode())


@pytest.mark.parametrize("mode", ["error", "content"])
def test_smoke_and_bench_never_print_a_key_the_endpoint_echoes(mode: str) -> None:
    handler = type("Echo", (_Echo,), {"mode": mode})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        outputs = []
        for command in (["smoke", "--url", url, "--model", "tiny"], ["smoke", "--url", url, "--model", "tiny", "--json"],
                        ["bench", "tiny", "--url", url, "--requests", "2"],
                        ["bench", "tiny", "--url", url, "--requests", "2", "--json"]):
            result = fleet(*command)
            assert result.exit_code == 1
            outputs.append(result.stdout + result.stderr)
        text = "\n".join(outputs)
        assert "[REDACTED]" in text
        assert KEY not in text and KEY[:8] not in text.replace("Bearer [REDACTED]", "")
    finally:
        server.shutdown()
        server.server_close()


def test_a_server_that_accepts_and_never_answers_fails_in_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Modal answers every web request within its 150 s limit: a silent server is broken, not cold."""
    import socket

    assert probe.FIRST_BYTE_TIMEOUT <= 180 and probe.CONNECT_TIMEOUT <= 10
    monkeypatch.setattr(probe, "FIRST_BYTE_TIMEOUT", 1.0)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)  # the kernel accepts; nobody ever reads or answers
    try:
        started = time.monotonic()
        result = fleet("smoke", "--url", f"http://127.0.0.1:{listener.getsockname()[1]}/v1", "--model", "tiny",
                       "--json", "--timeout", "900")
        assert result.exit_code == 1 and time.monotonic() - started < 6
        checks = json.loads(result.stdout)[0]["checks"]
        assert checks[0]["detail"].startswith("ReadTimeout")
    finally:
        listener.close()


def test_smoke_checks_after_the_first_answer_fail_after_the_warm_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(probe, "WARM_TIMEOUT", 1.0)
    with StandIn(warm_delay=30.0) as server:  # /models answers at once; the chat then stalls
        server._running = True
        started = time.monotonic()
        result = fleet("smoke", "--url", server.base_url, "--model", "tiny", "--json")
        assert time.monotonic() - started < 10
    checks = json.loads(result.stdout)[0]["checks"]
    assert checks[0]["ok"] and checks[1]["detail"].startswith("ReadTimeout")
