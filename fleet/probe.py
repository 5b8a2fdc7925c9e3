"""Observe endpoints over HTTP: smoke checks, benchmarks, and the timing side of snapshot priming.

httpx only: nothing here imports modal. What must happen on Modal's side (stopping a model's containers,
so that the next request is a cold start) comes in as a callable, so every function here runs against any
OpenAI-compatible server, a local vLLM or a stand-in in the tests.

    smoke(endpoint)                      /models lists the served name, a chat completion has content,
                                         a request without the key gets 401; each check timed
    bench(endpoint, make_cold=...)       first request (a cold start when `make_cold` stopped the
                                         containers): time to first token; then N warm requests at
                                         concurrency C: latency p50/p95, tokens/s
    prime(endpoint, make_cold=...)       cold start after cold start until the time has dropped and held
                                         (the snapshot is in use), or restores keep failing, or the
                                         attempts run out

The API key travels in the Authorization header only: it is kept out of every repr, report and message,
even when an endpoint echoes it back (every excerpt of a reply is redacted before it is cut short).

Timeouts: a connection must open within CONNECT_TIMEOUT; a reply must start within FIRST_BYTE_TIMEOUT
(Modal answers any web request within its 150 s limit, with a 303 to wait on when the work takes longer,
so a silent server is broken, not cold); once an endpoint has answered, a request that stalls for
WARM_TIMEOUT fails (smoke's later checks; a benchmark's requests may meet a new, cold container).
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from .errors import FleetError

DEFAULT_TIMEOUT = 900.0  # a cold start without a snapshot can take 7 minutes or more (facts.md)
CONNECT_TIMEOUT = 10.0
MODAL_WEB_REQUEST_LIMIT = 150.0  # then Modal answers 303 to a URL that holds the request
FIRST_BYTE_TIMEOUT = MODAL_WEB_REQUEST_LIMIT + 15.0
WARM_TIMEOUT = 30.0  # per read, once the endpoint is known to answer
REDACTED = "[REDACTED]"
PROMPT = "Say hello to the platform team in one short sentence."
SMOKE_MAX_TOKENS = 16

Progress = Callable[[str], None]
MakeCold = Callable[[], int]  # stops every running container of the model; returns how many it stopped
Restored = Callable[[float], "bool | None"]  # did the cold start begun then restore? (from the logs; None: unknown)
SNAPSHOT_ALPHA_HINT = (
    "GPU memory snapshots are an alpha feature that Modal enables per workspace: if cold starts stay slow, ask "
    "Modal (support or your shared Slack channel) to enable GPU memory snapshots for this workspace"
)


class ProbeError(FleetError):
    """An endpoint could not be probed at all (as opposed to a check that ran and failed)."""


@dataclass(frozen=True)
class Endpoint:
    """One model behind an OpenAI-compatible base URL (ending in /v1)."""

    name: str  # what the user calls it (the catalog name)
    base_url: str
    model: str  # the served model name sent in requests
    api_key: str = field(repr=False)

    def url(self, path: str) -> str:
        return self.base_url.rstrip("/") + path

    def redact(self, text: str) -> str:
        """`text` without the key: an endpoint may echo it (in an error body, a completion)."""
        return text.replace(self.api_key, REDACTED) if self.api_key else text

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


@contextmanager
def http_client(timeout: float = DEFAULT_TIMEOUT, connections: int = 8) -> Iterator[httpx.Client]:
    """One client per command. Redirects followed: Modal answers a request held longer than its web timeout
    with a redirect to wait on."""
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    # `timeout` bounds writes and the pool; a read waits at most until Modal's own limit has passed.
    bounds = httpx.Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT), read=min(timeout, FIRST_BYTE_TIMEOUT))
    with httpx.Client(timeout=bounds, limits=limits, follow_redirects=True) as client:
        yield client


def warm_timeout(client: httpx.Client) -> httpx.Timeout:
    """The client's timeouts with reads cut to WARM_TIMEOUT: for requests after the endpoint has answered."""
    t = client.timeout
    return httpx.Timeout(connect=t.connect, read=min(t.read or WARM_TIMEOUT, WARM_TIMEOUT), write=t.write, pool=t.pool)


def _excerpt(text: str, endpoint: Endpoint, limit: int) -> str:
    """Redacted first, then cut: a key echoed near the limit must not show even in part."""
    return " ".join(endpoint.redact(text).split())[:limit]


def _chat_body(endpoint: Endpoint, max_tokens: int, *, stream: bool, prompt: str = PROMPT) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": endpoint.model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
    }
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def _status_error(response: httpx.Response, endpoint: Endpoint) -> str:
    """`HTTP 503: <start of the body>`, the key redacted (a server may echo it)."""
    try:
        text = response.text
    except httpx.ResponseNotRead:
        text = ""
    text = _excerpt(text, endpoint, 120)
    return f"HTTP {response.status_code}" + (f": {text}" if text else "")


def _transport_error(exc: httpx.HTTPError, endpoint: Endpoint) -> str:
    text = endpoint.redact(str(exc)).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text and text[0] else type(exc).__name__


def _generated_text(message: dict[str, Any]) -> str:
    """Answer text, or the reasoning of a reasoning model whose answer the token limit cut off."""
    for key in ("content", "reasoning_content", "reasoning"):
        value = message.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


# --- one timed streaming request -------------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    """One streamed chat completion: seconds to the first token and to the end, tokens generated."""

    total: float
    ttft: float | None = None
    tokens: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def as_dict(self) -> dict[str, Any]:
        return {
            "ttft_s": _round(self.ttft),
            "total_s": _round(self.total),
            "tokens": self.tokens,
            "error": self.error,
        }


def timed_chat(client: httpx.Client, endpoint: Endpoint, *, max_tokens: int, prompt: str = PROMPT,
               timeout: httpx.Timeout | None = None) -> Timing:
    """Stream one chat completion and time it. Errors come back in the Timing, never raised."""
    started = time.monotonic()
    first: float | None = None
    chunks = 0
    usage_tokens: int | None = None
    try:
        body = _chat_body(endpoint, max_tokens, stream=True, prompt=prompt)
        with client.stream("POST", endpoint.url("/chat/completions"), json=body, headers=endpoint.headers,
                           timeout=timeout or client.timeout) as response:
            if response.status_code != 200:
                response.read()
                return Timing(time.monotonic() - started, error=_status_error(response, endpoint))
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[len("data:") :].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if chunk.get("error"):
                    return Timing(time.monotonic() - started, first, chunks, error=f"stream error: {_excerpt(str(chunk['error']), endpoint, 200)}")
                for choice in chunk.get("choices") or []:
                    if _generated_text(choice.get("delta") or {}):
                        chunks += 1
                        if first is None:
                            first = time.monotonic() - started
                if chunk.get("usage"):
                    usage_tokens = chunk["usage"].get("completion_tokens")
    except httpx.HTTPError as exc:
        return Timing(time.monotonic() - started, first, chunks, error=_transport_error(exc, endpoint))
    except json.JSONDecodeError as exc:
        return Timing(time.monotonic() - started, first, chunks, error=f"not an OpenAI stream: {exc}")
    total = time.monotonic() - started
    tokens = usage_tokens if usage_tokens is not None else chunks
    if tokens == 0:
        return Timing(total, first, 0, error="the stream ended without a token")
    return Timing(total, first if first is not None else total, tokens)


# --- smoke -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    name: str  # models | chat | auth
    ok: bool
    seconds: float
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"check": self.name, "ok": self.ok, "seconds": _round(self.seconds), "detail": self.detail}


@dataclass(frozen=True)
class SmokeReport:
    endpoint: Endpoint
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.endpoint.name,
            "base_url": self.endpoint.base_url,
            "model": self.endpoint.model,
            "ok": self.ok,
            "checks": [c.as_dict() for c in self.checks],
        }


def smoke(endpoint: Endpoint, client: httpx.Client, progress: Progress | None = None) -> SmokeReport:
    """Three checks, in this order (the first one pays for a cold start). An endpoint that cannot be reached
    at all fails the first check and skips the others, instead of waiting out three timeouts."""
    checks: list[Check] = []
    timeout = client.timeout  # the first check may pay for a cold start; the others find it warm
    for name, run in (("models", _check_models), ("chat", _check_chat), ("auth", _check_auth)):
        started = time.monotonic()
        try:
            ok, detail = run(client, endpoint, timeout)
            timeout = warm_timeout(client)
        except httpx.HTTPError as exc:
            checks.append(Check(name, False, time.monotonic() - started, _transport_error(exc, endpoint)))
            for skipped in ("models", "chat", "auth")[len(checks) :]:
                checks.append(Check(skipped, False, 0.0, "skipped: the endpoint did not answer"))
            break
        checks.append(Check(name, ok, time.monotonic() - started, endpoint.redact(detail)))
        if progress:
            progress(f"{name}: {'ok' if ok else 'FAILED'} in {checks[-1].seconds:.2f}s")
    return SmokeReport(endpoint, tuple(checks))


def _check_models(client: httpx.Client, endpoint: Endpoint, timeout: httpx.Timeout) -> tuple[bool, str]:
    response = client.get(endpoint.url("/models"), headers=endpoint.headers, timeout=timeout)
    if response.status_code != 200:
        return False, _status_error(response, endpoint)
    try:
        served = [entry["id"] for entry in response.json()["data"]]
    except (ValueError, KeyError, TypeError):
        return False, f"not an OpenAI model list: {_excerpt(response.text, endpoint, 80)}"
    if endpoint.model in served:
        return True, f"serves {endpoint.model}"
    return False, _excerpt(f"serves {', '.join(map(str, served)) or 'nothing'}, not {endpoint.model}", endpoint, 200)


def _check_chat(client: httpx.Client, endpoint: Endpoint, timeout: httpx.Timeout) -> tuple[bool, str]:
    response = client.post(
        endpoint.url("/chat/completions"), json=_chat_body(endpoint, SMOKE_MAX_TOKENS, stream=False),
        headers=endpoint.headers, timeout=timeout,
    )
    if response.status_code != 200:
        return False, _status_error(response, endpoint)
    try:
        reply = response.json()
        text = _generated_text(reply["choices"][0]["message"])
    except (ValueError, KeyError, IndexError, TypeError):
        return False, f"not an OpenAI chat completion: {_excerpt(response.text, endpoint, 80)}"
    tokens = (reply.get("usage") or {}).get("completion_tokens")
    if not text:
        return False, "the completion has no content"
    shown = json.dumps(endpoint.redact(text)[:40], ensure_ascii=False)  # escaped: a random test model answers in whitespace
    return True, f"{tokens} token(s): {shown}" if tokens is not None else shown


def _check_auth(client: httpx.Client, endpoint: Endpoint, timeout: httpx.Timeout) -> tuple[bool, str]:
    response = client.get(endpoint.url("/models"), timeout=timeout)
    if response.status_code == 401:
        return True, "refused without a key (401)"
    if response.status_code == 200:
        return False, "answered 200 without a key: the endpoint is open to anyone"
    return False, f"expected 401 without a key, got {_status_error(response, endpoint)}"


# --- bench -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchReport:
    endpoint: Endpoint
    cold: bool  # containers were stopped before the first request: it was a cold start
    first: Timing
    concurrency: int
    requested: int
    warm: tuple[Timing, ...]
    seconds: float  # wall time of the warm phase

    @property
    def completed(self) -> list[Timing]:
        return [t for t in self.warm if t.ok]

    @property
    def failed(self) -> list[Timing]:
        return [t for t in self.warm if not t.ok]

    @property
    def ok(self) -> bool:
        return self.first.ok and not self.failed and len(self.warm) == self.requested

    @property
    def tokens_per_second(self) -> float | None:
        """Generated tokens per second of wall time, all concurrent requests together."""
        tokens = sum(t.tokens for t in self.completed)
        return tokens / self.seconds if self.completed and self.seconds > 0 else None

    def latency(self, q: float) -> float | None:
        return percentile([t.total for t in self.completed], q)

    def ttft(self, q: float) -> float | None:
        return percentile([t.ttft for t in self.completed if t.ttft is not None], q)

    def as_dict(self) -> dict[str, Any]:
        errors = sorted({t.error for t in self.failed if t.error})
        return {
            "name": self.endpoint.name,
            "base_url": self.endpoint.base_url,
            "model": self.endpoint.model,
            "ok": self.ok,
            "first_request": {"cold": self.cold, **self.first.as_dict()},
            "warm": {
                "concurrency": self.concurrency,
                "requested": self.requested,
                "completed": len(self.completed),
                "failed": len(self.failed),
                "seconds": _round(self.seconds),
                "latency_p50_s": _round(self.latency(0.50)),
                "latency_p95_s": _round(self.latency(0.95)),
                "ttft_p50_s": _round(self.ttft(0.50)),
                "ttft_p95_s": _round(self.ttft(0.95)),
                "tokens": sum(t.tokens for t in self.completed),
                "tokens_per_second": _round(self.tokens_per_second, 1),
                "errors": errors[:5],
            },
        }


def bench(
    endpoint: Endpoint,
    client: httpx.Client,
    *,
    concurrency: int,
    requests: int,
    max_tokens: int = 64,
    time_limit: float = 300.0,
    make_cold: MakeCold | None = None,
    progress: Progress | None = None,
) -> BenchReport:
    """The first request (after `make_cold`, a cold start), then `requests` warm ones, `concurrency` at a time.

    Bounded twice: no more than `requests`, and no new request starts after `time_limit` seconds (the ones
    in flight finish); a report with fewer requests than asked is not ok.
    """
    say = progress or (lambda message: None)
    cold = False
    if make_cold is not None:
        stopped = make_cold()
        cold = True
        say(f"stopped {stopped} running container(s): the first request is a cold start")
    say("first request...")
    first = timed_chat(client, endpoint, max_tokens=max_tokens)
    if not first.ok:
        say(f"first request failed after {first.total:.2f}s: {first.error}")
        return BenchReport(endpoint, cold, first, concurrency, requests, (), 0.0)
    say(f"first request: first token in {first.ttft:.2f}s, {first.tokens} token(s) in {first.total:.2f}s")

    results: list[Timing] = []
    lock = threading.Lock()
    started = time.monotonic()
    deadline = started + time_limit
    issued = 0
    step = max(concurrency, requests // 10)

    def worker() -> None:
        nonlocal issued
        while True:
            with lock:
                if issued >= requests or time.monotonic() >= deadline:
                    return
                issued += 1
            # Not the warm timeout: under load Modal may route a request to a new container, a cold start.
            timing = timed_chat(client, endpoint, max_tokens=max_tokens)
            with lock:
                results.append(timing)
                done = len(results)
                if done % step == 0 or done == requests:
                    ok = [t.total for t in results if t.ok]
                    p50 = percentile(ok, 0.5)
                    say(
                        f"{done}/{requests} warm requests, {done - len(ok)} failed"
                        + (f", p50 {p50:.2f}s" if p50 is not None else "")
                    )

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(min(concurrency, requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.monotonic() - started
    if len(results) < requests:
        say(f"time limit of {time_limit:g}s reached: {len(results)} of {requests} requests sent")
    return BenchReport(endpoint, cold, first, concurrency, requests, tuple(results), seconds)


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile: a value that was measured, never an interpolation."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


# --- prime -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    number: int
    stopped: int  # containers stopped before it
    timing: Timing
    fast: bool  # counted as a restore from the snapshot

    def as_dict(self) -> dict[str, Any]:
        return {"attempt": self.number, "stopped": self.stopped, "fast": self.fast, **self.timing.as_dict()}


PRIMED = "primed"  # cold starts dropped and held: the snapshot is in use
FAILING = "failing"  # consecutive cold starts failed: restores are probably crashing
UNPROVEN = "unproven"  # attempts ran out without a drop that held
ERROR = "error"  # the Modal side (listing or stopping containers) failed: nothing more to measure


@dataclass(frozen=True)
class PrimeReport:
    endpoint: Endpoint
    attempts: tuple[Attempt, ...]
    verdict: str
    message: str

    @property
    def ok(self) -> bool:
        return self.verdict == PRIMED

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.endpoint.name,
            "verdict": self.verdict,
            "ok": self.ok,
            "message": self.message,
            "attempts": [a.as_dict() for a in self.attempts],
        }


def prime(
    endpoint: Endpoint,
    client: httpx.Client,
    make_cold: MakeCold,
    *,
    max_attempts: int = 8,
    hold: int = 2,
    ratio: float = 0.5,
    target: float | None = None,
    max_failures: int = 2,
    progress: Progress | None = None,
    restored: Restored | None = None,
) -> PrimeReport:
    """Drive cold starts until Modal restores the model from its snapshot.

    Each attempt: `make_cold()` (no container of the model runs), one 1-token request, its time to the first
    token. An attempt is fast when it took at most `ratio` times the slowest earlier cold start, or at most
    `target` seconds when given (a model whose snapshot is already in use never shows a drop). Primed: the
    last `hold` attempts were all fast. Failing: `max_failures` attempts in a row got an error or a 5xx,
    which is what a restore that crashes on start looks like; there is no point in looping on it.

    `restored(began)`, when given, reads the model's logs: True when the cold start that began at `began`
    (epoch seconds) restored from the snapshot, False when it booted, None when the logs do not tell. What
    the logs say wins over the timings, so a model primed before is reported in use without `target`.
    """
    say = progress or (lambda message: None)
    attempts: list[Attempt] = []
    streak = failures = 0
    slowest = 0.0
    from_logs: list[bool] = []  # what the logs said of each successful attempt, where they said anything
    for number in range(1, max_attempts + 1):
        try:
            stopped = make_cold()
        except Exception as exc:  # noqa: BLE001 - this model's run ends with the reason; the others go on
            message = f"could not stop its containers before cold start {number}: {exc}"
            say(message)
            return PrimeReport(endpoint, tuple(attempts), ERROR, message)
        began = time.time()
        timing = timed_chat(client, endpoint, max_tokens=1)
        if not timing.ok:
            failures += 1
            streak = 0
            attempts.append(Attempt(number, stopped, timing, False))
            say(f"cold start {number}/{max_attempts}: FAILED after {timing.total:.1f}s: {timing.error}")
            if failures >= max_failures:
                return PrimeReport(endpoint, tuple(attempts), FAILING, _failing_message(attempts[-max_failures:]))
            continue
        failures = 0
        seconds = timing.ttft if timing.ttft is not None else timing.total
        fast = (slowest > 0 and seconds <= ratio * slowest) or (target is not None and seconds <= target)
        seen = restored(began) if restored is not None else None
        if seen is not None:
            fast = seen
            from_logs.append(seen)
        streak = streak + 1 if fast else 0
        slowest = max(slowest, seconds)
        attempts.append(Attempt(number, stopped, timing, fast))
        say(
            f"cold start {number}/{max_attempts}: stopped {stopped} container(s), first token in {seconds:.1f}s"
            + (" (fast)" if fast else "")
            + ("" if seen is None else " (logs: restored)" if seen else " (logs: booted, no restore)")
        )
        if streak >= hold:
            held = [_seconds(a) for a in attempts[-hold:]]
            how = "restored from the snapshot (in the logs)" if from_logs[-hold:] == [True] * hold else "cold start"
            down = f", down from {slowest:.1f}s" if slowest > max(held) * 1.2 else ""
            message = f"snapshot in use: {how} {_span(held)}{down}, after {number} cold start(s)"
            return PrimeReport(endpoint, tuple(attempts), PRIMED, message)
    message = _unproven_message(attempts, hold)
    if from_logs and not any(from_logs):
        message = (
            f"the logs show {len(from_logs)} cold start(s) and not one restore from the snapshot. "
            + SNAPSHOT_ALPHA_HINT
        )
    return PrimeReport(endpoint, tuple(attempts), UNPROVEN, message)


def _seconds(attempt: Attempt) -> float:
    timing = attempt.timing
    return timing.ttft if timing.ttft is not None else timing.total


def _span(values: list[float]) -> str:
    low, high = min(values), max(values)
    return f"{low:.1f}s" if f"{low:.1f}" == f"{high:.1f}" else f"{low:.1f}-{high:.1f}s"


def _failing_message(failed: list[Attempt]) -> str:
    last = failed[-1].timing.error
    return (
        f"{len(failed)} cold starts in a row failed (last: {last}): restores from the snapshot may be crashing "
        "(a known Modal failure, exit code 139 in the container logs; see `modal app logs APP`). "
        "Redeploying with --force makes a new snapshot; `snapshot: false` in the catalog avoids them"
    )


def _unproven_message(attempts: list[Attempt], hold: int) -> str:
    timed = [_seconds(a) for a in attempts if a.timing.ok]
    if not timed:
        return "no cold start succeeded"
    return (
        f"no drop that held for {hold} cold starts in {len(attempts)} attempt(s) (cold start {_span(timed)}): "
        "if the snapshot was already in use, pass --target SECONDS to accept that time; otherwise check the "
        "app's logs for 'Restoring Function from memory snapshot' and run more cold starts (--max-cold-starts)"
    )


def stop_all(
    list_containers: Callable[[], list[str]],
    stop_container: Callable[[str], None],
    *,
    timeout: float = 120.0,
    poll: float = 2.0,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Stop every running container and wait until none is listed; returns how many were stopped.

    A stop is asynchronous on Modal's side: a stopped container can stay listed for a few seconds, so it is
    stopped once and then waited for.
    """
    stopped: set[str] = set()
    deadline = time.monotonic() + timeout
    while True:
        running = list_containers()
        if not running:
            return len(stopped)
        if time.monotonic() >= deadline:
            raise ProbeError(
                f"{len(running)} container(s) still running {timeout:g}s after being stopped "
                "(min_containers above 0 makes Modal start new ones at once)"
            )
        fresh = [container for container in running if container not in stopped]
        for container in fresh:
            stop_container(container)
            stopped.add(container)
        if not fresh:  # only containers already stopped and still shutting down
            sleep(poll)


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)
