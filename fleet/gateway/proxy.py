"""One request to one model app: wait through a cold start, keep a streaming client alive meanwhile, pass
SSE through event by event, and read the token counts on the way.

The shapes of a request's life:
    model answers in time ........ its status and body (a stream: its events, as they come)
    model refuses the connection . retried for `connect_retry` s (an engine restarting), then 503
    model is slow to answer ...... waited for up to its startup budget; a stream gets `: keep-alive`
                                   comments after `keepalive_after` s, so clients and proxies hold on
    model fails (5xx, dies, times out) 503 with Retry-After; once a stream's 200 is sent, an SSE error
                                   event instead, then the end of the stream: never a hang
Modal answers a request still running after 150 s with a 303 to a result URL: httpx follows it
(`follow_redirects=True`), so callers never see the 303.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.responses import JSONResponse, Response, StreamingResponse

from .config import GatewayConfig, GatewayModel

STREAMING_USAGE_PATHS = ("chat/completions", "completions")  # the ones that take stream_options
RETRY_DELAY = 0.25
KEEPALIVE = b": keep-alive\n\n"
# Not copied from the model's answer: hop-by-hop, recomputed by the server, or the gateway's own to set.
SKIPPED_HEADERS = {
    "content-length", "transfer-encoding", "connection", "keep-alive", "content-encoding", "date", "server"
}


class UpstreamFailed(Exception):
    """The model app could not answer: why, for the client's 503."""


@dataclass
class Exchange:
    """One proxied request: what goes up, and what the usage meter needs to know afterwards."""

    model: GatewayModel
    path: str  # after /v1/, e.g. chat/completions
    body: dict[str, Any]
    raw: bytes
    changed: bool = False  # body differs from raw (so it is serialized again)
    stream: bool = False
    client_wants_usage: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: bool = False
    cold_wait: bool = False
    started: float = field(default_factory=time.monotonic)

    def prepare(self) -> None:
        """For a stream, ask the model for usage (stream_options.include_usage); remember if the client did."""
        self.stream = self.body.get("stream") is True
        if self.stream and self.path in STREAMING_USAGE_PATHS:
            options = self.body.get("stream_options")
            options = dict(options) if isinstance(options, dict) else {}
            self.client_wants_usage = options.get("include_usage") is True
            if not self.client_wants_usage:
                self.body["stream_options"] = {**options, "include_usage": True}
                self.changed = True

    def content(self) -> bytes:
        return json.dumps(self.body, separators=(",", ":")).encode() if self.changed else self.raw

    def take_usage(self, usage: Any) -> None:
        if isinstance(usage, dict):
            self.prompt_tokens = int(usage.get("prompt_tokens", usage.get("input_tokens", 0)) or 0)
            self.completion_tokens = int(usage.get("completion_tokens", usage.get("output_tokens", 0)) or 0)


def openai_error(
    status: int, message: str, kind: str, code: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    """OpenAI's error shape, which every SDK knows how to raise."""
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


class Proxy:
    def __init__(self, config: GatewayConfig, client: httpx.AsyncClient, internal_key: str | None) -> None:
        self.config = config
        self.client = client
        self.internal_key = internal_key

    def unavailable(self, exchange: Exchange, reason: str) -> JSONResponse:
        exchange.error = True
        message = f"model '{exchange.model.name}' is unavailable: {reason}; retry in {self.config.retry_after}s"
        return openai_error(
            503, message, "service_unavailable", "model_unavailable", {"Retry-After": str(self.config.retry_after)}
        )

    async def forward(self, exchange: Exchange, base_url: str, done: Callable[[Exchange], None]) -> Response:
        """Send `exchange` to the model at `base_url`; `done` is called once with the finished exchange."""
        exchange.prepare()
        url = f"{base_url}/v1/{exchange.path}"
        if exchange.stream:
            sending = asyncio.create_task(self._send(exchange, url, exchange.model.startup_budget))
            finished, _ = await asyncio.wait({sending}, timeout=self.config.keepalive_after)
            if not finished:
                exchange.cold_wait = self.config.keepalive_after >= self.config.cold_wait_after
                return self._stream(exchange, sending, done)
        else:  # no task: nothing to do while waiting, and a task costs on the hot path
            sending = self._send(exchange, url, exchange.model.startup_budget + exchange.model.request_timeout)
        try:
            upstream = await sending
        except UpstreamFailed as exc:
            refused = self.unavailable(exchange, str(exc))
            done(exchange)
            return refused
        if exchange.stream and upstream.status_code == 200:
            assert isinstance(sending, asyncio.Task)
            return self._stream(exchange, sending, done)
        try:
            return await self._whole(exchange, upstream)
        finally:
            done(exchange)

    async def _send(self, exchange: Exchange, url: str, budget: float) -> httpx.Response:
        """The model's response headers (body not read yet), or UpstreamFailed. Waits at most `budget` s."""
        accept = "text/event-stream" if exchange.stream else "application/json"
        headers = {"content-type": "application/json", "accept": accept}
        if self.internal_key:
            headers["authorization"] = f"Bearer {self.internal_key}"  # the team's key never goes up
        connect = max(self.config.connect_retry, 1.0)
        timeout = httpx.Timeout(budget, connect=connect, read=exchange.model.request_timeout)
        content = exchange.content()
        deadline = time.monotonic() + budget
        refused_until = time.monotonic() + self.config.connect_retry
        try:
            async with asyncio.timeout(budget):
                while True:
                    request = self.client.build_request("POST", url, content=content, headers=headers, timeout=timeout)
                    try:
                        response = await self.client.send(request, stream=True, follow_redirects=True)
                        break
                    except httpx.ConnectError as exc:
                        if time.monotonic() + RETRY_DELAY > min(refused_until, deadline):
                            raise UpstreamFailed(f"cannot connect ({str(exc) or type(exc).__name__})") from None
                        await asyncio.sleep(RETRY_DELAY)
        except TimeoutError:
            raise UpstreamFailed(f"no answer within its startup budget ({budget:g}s)") from None
        except httpx.HTTPError as exc:
            raise UpstreamFailed(f"{type(exc).__name__} {exc}".strip()) from None
        waited = time.monotonic() - exchange.started
        exchange.cold_wait = exchange.cold_wait or waited >= self.config.cold_wait_after
        if response.status_code >= 500 or response.status_code in (401, 403):
            await response.aclose()
            if response.status_code in (401, 403):
                raise UpstreamFailed("the model app refused the gateway's internal key (check the key secret)")
            raise UpstreamFailed(f"it answered {response.status_code}")
        return response

    async def _whole(self, exchange: Exchange, upstream: httpx.Response) -> Response:
        """A non-streaming answer (or a model's own 4xx): read it, note usage, hand it on unchanged."""
        try:
            body = await upstream.aread()
        except httpx.HTTPError as exc:
            return self.unavailable(exchange, f"it failed while answering ({type(exc).__name__})")
        finally:
            await upstream.aclose()
        exchange.error = upstream.status_code >= 400
        if upstream.status_code == 200 and b'"usage"' in body:
            try:
                exchange.take_usage(json.loads(body).get("usage"))
            except (ValueError, AttributeError):
                pass
        headers = {k: v for k, v in upstream.headers.items() if k.lower() not in SKIPPED_HEADERS}
        return Response(body, status_code=upstream.status_code, headers=headers)

    def _stream(
        self, exchange: Exchange, sending: asyncio.Task[httpx.Response], done: Callable[[Exchange], None]
    ) -> StreamingResponse:
        headers = {"cache-control": "no-cache", "x-accel-buffering": "no"}
        return StreamingResponse(self._events(exchange, sending, done), media_type="text/event-stream", headers=headers)

    async def _events(
        self, exchange: Exchange, sending: asyncio.Task[httpx.Response], done: Callable[[Exchange], None]
    ) -> AsyncIterator[bytes]:
        upstream: httpx.Response | None = None
        try:
            while not sending.done():
                finished, _ = await asyncio.wait({sending}, timeout=self.config.keepalive_interval)
                if not finished:
                    yield KEEPALIVE
            try:
                upstream = sending.result()
            except UpstreamFailed as exc:
                exchange.error = True
                yield _error_event(f"model '{exchange.model.name}' is unavailable: {exc}")
                return
            if upstream.status_code != 200:  # the model's own 4xx, after keep-alives: as an error event
                exchange.error = True
                body = await upstream.aread()
                yield _error_event(body.decode(errors="replace")[:2000])
                return
            pending = b""
            chunks = upstream.aiter_bytes().__aiter__()
            try:
                # A model may send its headers at once and then hold the first token (vLLM asleep, queued):
                # keep-alives go on until the first bytes; after that, chunks pass straight through.
                first = asyncio.ensure_future(chunks.__anext__())
                try:
                    while not (await asyncio.wait({first}, timeout=self.config.keepalive_interval))[0]:
                        yield KEEPALIVE
                finally:
                    first.cancel()
                waited = time.monotonic() - exchange.started
                exchange.cold_wait = exchange.cold_wait or waited >= self.config.cold_wait_after
                try:
                    chunk: bytes | None = first.result()
                except StopAsyncIteration:
                    chunk = None
                while chunk is not None:
                    pending += chunk
                    out, pending = self._complete_events(exchange, pending)
                    if out:
                        yield out
                    chunk = await anext(chunks, None)
            except httpx.HTTPError as exc:
                exchange.error = True
                yield _error_event(f"model '{exchange.model.name}' failed mid-stream ({type(exc).__name__})")
                return
            if pending:
                yield pending
        finally:
            if not sending.done():
                sending.cancel()  # the client went away while the model was starting
            elif upstream is None and not sending.cancelled() and sending.exception() is None:
                upstream = sending.result()
            if upstream is not None:
                await upstream.aclose()  # closes the connection: vLLM aborts the generation
            done(exchange)

    def _complete_events(self, exchange: Exchange, pending: bytes) -> tuple[bytes, bytes]:
        """The complete SSE events in `pending` (to send now) and the incomplete rest (to keep)."""
        if b'"usage"' not in pending:  # the common chunk: no parsing at all
            cut = pending.rfind(b"\n\n")
            return (pending[: cut + 2], pending[cut + 2 :]) if cut >= 0 else (b"", pending)
        out = []
        *events, rest = pending.split(b"\n\n")
        for event in events:
            if b'"usage"' in event and self._is_usage_only(exchange, event):
                continue
            out.append(event + b"\n\n")
        return b"".join(out), rest

    def _is_usage_only(self, exchange: Exchange, event: bytes) -> bool:
        """Note the usage an event carries; True when it is the usage chunk fleet asked for and the client did
        not (so it is dropped)."""
        for line in event.split(b"\n"):
            if not line.startswith(b"data:"):
                continue
            try:
                data = json.loads(line[5:])
            except ValueError:
                return False
            if not isinstance(data, dict):
                return False
            if data.get("type") == "response.completed":  # the Responses API's last event
                exchange.take_usage((data.get("response") or {}).get("usage"))
                return False
            if data.get("usage"):
                exchange.take_usage(data["usage"])
                return not exchange.client_wants_usage and data.get("choices") == []
        return False


def _error_event(message: str) -> bytes:
    """An SSE event the OpenAI SDK raises as an APIError (a `data:` object with an `error` key)."""
    body = {"error": {"message": message, "type": "service_unavailable", "param": None, "code": "model_unavailable"}}
    return b"data: " + json.dumps(body).encode() + b"\n\n"
