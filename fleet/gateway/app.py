"""The gateway's ASGI app (Starlette): authenticate, route by model, forward, count.

Routes:
    GET  /health                       the gateway's own; touches no model, needs no key
    GET  /v1/models, /v1/models/NAME   from the baked-in catalog; touches no model
    POST /v1/{chat/completions, completions, embeddings, responses}   routed by the body's `model`
    *    /models/NAME/v1/...           the same, one base URL per model (the path names the model)

Starlette and httpx rather than hand-rolled HTTP: both are small, well kept and async, and Starlette's
StreamingResponse plus httpx's streaming client pass SSE through without buffering.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .config import GatewayConfig, GatewayModel, Upstreams
from .keys import USED, KeyCache, TeamKey
from .proxy import Exchange, Proxy, openai_error
from .store import Store
from .usage import UsageMeter

ENDPOINTS = ("chat/completions", "completions", "embeddings", "responses")
log = logging.getLogger("fleet.gateway")


class Gateway:
    """The state one gateway process holds: key cache, usage meter, upstream client."""

    def __init__(
        self,
        config: GatewayConfig,
        upstreams: Upstreams,
        keys_store: Store,
        usage_store: Store,
        internal_key: str | None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = config
        self.upstreams = upstreams
        self.keys_store = keys_store
        self.keys = KeyCache(keys_store, ttl=config.key_cache_ttl)
        self.usage = UsageMeter(usage_store)
        self.last_used: dict[str, float] = {}
        self.internal_key = internal_key
        self.transport = transport
        self.client: httpx.AsyncClient | None = None
        self.proxy: Proxy | None = None

    # --- lifecycle ---

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=512)
        self.client = httpx.AsyncClient(limits=limits, transport=self.transport, timeout=None)
        self.proxy = Proxy(self.config, self.client, self.internal_key)
        flusher = asyncio.create_task(self._flush_every(self.config.usage_flush_interval))
        try:
            yield
        finally:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
            try:
                await asyncio.to_thread(self.flush)  # on shutdown: nothing counted is lost
            except Exception as exc:  # noqa: BLE001 - logged; the container's exit hook tries once more
                log.warning("usage flush at shutdown failed: %s", type(exc).__name__)
            await self.client.aclose()

    async def _flush_every(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(self.flush)
            except Exception as exc:  # noqa: BLE001 - a store hiccup must not stop the gateway; retried next turn
                log.warning("usage flush failed, retrying in %ss: %s", interval, type(exc).__name__)

    def flush(self) -> None:
        """Usage totals and last-used times into their stores."""
        self.usage.flush()
        used, self.last_used = self.last_used, {}
        if used:
            try:
                self.keys_store.put_many({USED + key_id: at for key_id, at in used.items()})
            except BaseException:
                for key_id, at in used.items():
                    self.last_used.setdefault(key_id, at)
                raise

    # --- auth ---

    async def team_key(self, request: Request) -> TeamKey | Response:
        """The caller's key record, or the 401 to answer."""
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            message = "missing API key: send `Authorization: Bearer <team key>`"
            return openai_error(401, message, "invalid_request_error", "invalid_api_key")
        now = time.time()
        fresh, record = self.keys.cached(key, now)
        if not fresh:
            try:
                record = await asyncio.to_thread(self.keys.fetch, key, now)
            except Exception as exc:  # noqa: BLE001 - the key store being down is ours, not the caller's fault
                log.warning("key store lookup failed: %s", type(exc).__name__)
                message = "the key store is unavailable; retry shortly"
                return openai_error(503, message, "service_unavailable", None, {"Retry-After": "5"})
        if record is None or record.expired(now):
            return openai_error(401, "incorrect or expired API key", "invalid_request_error", "invalid_api_key")
        self.last_used[record.key_id] = now
        return record

    # --- routes ---

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "models": len(self.config.models)})

    async def list_models(self, request: Request) -> Response:
        record = await self.team_key(request)
        if isinstance(record, Response):
            return record
        only = request.path_params.get("name")
        models = [m for m in self.config.models if record.allows(m.name) and (only is None or m.name == only)]
        if only is not None and only not in self.config.by_name:
            return self._unknown_model(only)
        data = [m.listing(self.config.created) for m in models]
        return JSONResponse({"object": "list", "data": data})

    async def one_model(self, request: Request) -> Response:
        record = await self.team_key(request)
        if isinstance(record, Response):
            return record
        name = request.path_params["model"]
        model = self.config.by_name.get(name)
        if model is None:
            return self._unknown_model(name)
        if not record.allows(name):
            return self._not_allowed(record, name)
        return JSONResponse(model.listing(self.config.created))

    async def complete(self, request: Request) -> Response:
        """POST /v1/<endpoint> and /models/<name>/v1/<endpoint>."""
        path = request.path_params["endpoint"]
        if path not in ENDPOINTS:
            served = ", ".join(f"/v1/{e}" for e in ENDPOINTS)
            message = f"unknown endpoint /v1/{path}; the gateway serves {served}"
            return openai_error(404, message, "invalid_request_error", "unknown_url")
        record = await self.team_key(request)
        if isinstance(record, Response):
            return record
        raw = await request.body()
        try:
            body = json.loads(raw)
        except ValueError:
            return openai_error(400, "the request body is not JSON", "invalid_request_error")
        if not isinstance(body, dict):
            return openai_error(400, "the request body must be a JSON object", "invalid_request_error")
        in_path = request.path_params.get("model")
        name = in_path if in_path is not None else body.get("model")
        if not isinstance(name, str) or not name:
            return openai_error(400, "the request names no `model`", "invalid_request_error", "missing_model")
        model = self.config.by_name.get(name)
        if model is None:
            return self._unknown_model(name)
        if not record.allows(name):
            return self._not_allowed(record, name)
        exchange = Exchange(model, path, body, raw)
        if body.get("model") != name:  # a per-model URL: the path's model is the one the engine serves
            body["model"] = name
            exchange.changed = True
        assert self.proxy is not None, "the app's lifespan did not run"
        base_url = await self.upstreams.url(model)
        if base_url is None:
            self._count(record, exchange)
            return self.proxy.unavailable(exchange, "it is not deployed (or not running locally)")

        def done(finished: Exchange) -> None:
            self._count(record, finished)

        return await self.proxy.forward(exchange, base_url, done)

    def _count(self, record: TeamKey, exchange: Exchange) -> None:
        self.usage.record(
            record.team,
            exchange.model.name,
            prompt_tokens=exchange.prompt_tokens,
            completion_tokens=exchange.completion_tokens,
            error=exchange.error,
            cold_wait=exchange.cold_wait,
        )

    def _unknown_model(self, name: str) -> Response:
        close = difflib.get_close_matches(name, list(self.config.by_name), n=1, cutoff=0.5)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        message = f"The model '{name}' does not exist.{hint}"
        return openai_error(404, message, "invalid_request_error", "model_not_found")

    def _not_allowed(self, record: TeamKey, name: str) -> Response:
        return openai_error(
            403, f"the key of team '{record.team}' may not use model '{name}'", "permission_error", "model_not_allowed"
        )

    async def not_found(self, request: Request) -> Response:
        message = f"no route {request.method} {request.url.path}"
        return openai_error(404, message, "invalid_request_error", "unknown_url")


def create_app(gateway: Gateway) -> Starlette:
    routes = [
        Route("/health", gateway.health, methods=["GET"]),
        Route("/v1/models", gateway.list_models, methods=["GET"]),
        Route("/v1/models/{model:str}", gateway.one_model, methods=["GET"]),
        Route("/v1/{endpoint:path}", gateway.complete, methods=["POST"]),
        Route("/models/{name:str}/v1/models", gateway.list_models, methods=["GET"]),
        Route("/models/{model:str}/v1/{endpoint:path}", gateway.complete, methods=["POST"]),
        Route("/{rest:path}", gateway.not_found, methods=["GET", "POST", "PUT", "DELETE", "PATCH"]),
    ]
    app = Starlette(routes=routes, lifespan=gateway.lifespan)
    app.state.gateway = gateway
    return app


def internal_key_from_env() -> str | None:
    """The fleet's internal key (the api-key secret's VLLM_API_KEY; the first, when it lists several)."""
    import os

    value = os.environ.get("VLLM_API_KEY", "")
    return value.split(",")[0].strip() or None


def modal_gateway(
    models: tuple[dict[str, Any], ...], knobs: dict[str, Any], keys_dict: str, usage_dict: str
) -> Gateway:
    """The gateway as the deployed app builds it (inside a Modal container)."""
    from .config import ModalUpstreams
    from .store import ModalDictStore

    config = GatewayConfig(models=tuple(GatewayModel(**m) for m in models), **knobs)
    stores = ModalDictStore(keys_dict), ModalDictStore(usage_dict)
    return Gateway(config, ModalUpstreams(), *stores, internal_key_from_env())
