"""Helpers for the gateway tests: run an ASGI app on a real loopback port (in a thread), a scriptable stub
model upstream, and a gateway built around local stores."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from fleet.gateway.app import Gateway, create_app
from fleet.gateway.config import GatewayConfig, GatewayModel, StaticUpstreams
from fleet.gateway.keys import new_key, store_key
from fleet.gateway.store import JsonFileStore

INTERNAL_KEY = "internal-engine-key-7c2e"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerThread:
    """uvicorn serving `app` on 127.0.0.1:<free port> in a daemon thread; stopped (lifespan shutdown) on exit."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        self.port = port or free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


class StubModel:
    """A fake engine speaking vLLM's OpenAI shapes, with knobs: `delay` before the headers, `fail_with` a
    status, and a record of every request (headers and body) it got."""

    def __init__(self, name: str = "tiny") -> None:
        self.name = name
        self.delay = 0.0
        self.fail_with: int | None = None
        self.seen: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.redirect = False  # answer like Modal past 150 s: 303 to a result URL that then gives the answer
        self.app = Starlette(routes=[Route("/v1/{endpoint:path}", self.answer, methods=["POST"]),
                                     Route("/result/{body:path}", self.result, methods=["GET"])])

    async def result(self, request: Request) -> Response:
        self.seen.append((dict(request.headers), {"result": request.path_params["body"]}))
        return JSONResponse(json.loads(request.path_params["body"]))

    async def answer(self, request: Request) -> Response:
        body = await request.json()
        self.seen.append((dict(request.headers), body))
        if request.headers.get("authorization") != f"Bearer {INTERNAL_KEY}":
            return JSONResponse({"error": "Unauthorized"}, status_code=401)
        await asyncio.sleep(self.delay)
        if self.fail_with:
            return JSONResponse({"error": {"message": "boom"}}, status_code=self.fail_with)
        words = ["one", "two", "three"][: body.get("max_tokens", 3)]
        usage = {"prompt_tokens": 5, "completion_tokens": len(words), "total_tokens": 5 + len(words)}
        if body.get("stream"):
            return StreamingResponse(self._chunks(body, words, usage), media_type="text/event-stream")
        message = {"role": "assistant", "content": " ".join(words)}
        if self.redirect:
            answer = {"id": "c1", "object": "chat.completion", "created": 1, "model": body["model"],
                      "choices": [{"index": 0, "message": message, "finish_reason": "length"}], "usage": usage}
            return Response(status_code=303, headers={"location": f"/result/{json.dumps(answer, separators=(',', ':'))}"})
        return JSONResponse({"id": "c1", "object": "chat.completion", "created": 1, "model": body["model"],
                             "choices": [{"index": 0, "message": message, "finish_reason": "length"}], "usage": usage})

    async def _chunks(self, body: dict[str, Any], words: list[str], usage: dict[str, int]):
        for i, word in enumerate(words):
            chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": body["model"],
                     "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None if i < len(words) - 1 else "length"}]}
            yield f"data: {json.dumps(chunk)}\n\n"
        if (body.get("stream_options") or {}).get("include_usage"):
            final = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": body["model"], "choices": [], "usage": usage}
            yield f"data: {json.dumps(final)}\n\n"
        yield "data: [DONE]\n\n"


def make_gateway(
    state: Path,
    upstreams: dict[str, str],
    models: tuple[str, ...] = ("tiny", "other"),
    **knobs: Any,
) -> Gateway:
    config = GatewayConfig(
        models=tuple(GatewayModel(name, description=f"{name} model", context_length=512, startup_budget=knobs.pop("startup_budget", 5.0), request_timeout=30.0) for name in models),
        **{"keepalive_after": 0.2, "keepalive_interval": 0.2, "connect_retry": 0.5, "retry_after": 7, **knobs},
    )
    return Gateway(config, StaticUpstreams(upstreams), JsonFileStore(state / "keys.json"), JsonFileStore(state / "usage.json"), INTERNAL_KEY)


def add_key(gateway: Gateway, team: str, models: tuple[str, ...] = ()) -> str:
    key, record = new_key(team, models, None)
    store_key(gateway.keys_store, key, record)
    return key


def serve_gateway(gateway: Gateway) -> ServerThread:
    return ServerThread(create_app(gateway))
