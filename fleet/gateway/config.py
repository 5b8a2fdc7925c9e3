"""What the gateway knows: the catalog's models (baked into the rendered app) and its own knobs.

Plain data only: the deployed gateway gets these as literals in its generated source, so listing models
never needs a model app, the catalog files, or the network.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class GatewayModel:
    name: str
    description: str = ""
    context_length: int | None = None
    modalities: tuple[str, ...] = ("text",)
    startup_budget: float = 600.0  # seconds a request may wait for a cold start (the model's startup_timeout)
    request_timeout: float = 600.0  # seconds a request may run once the model answers
    app_name: str = ""  # the model's Modal app and class, to look its URL up inside Modal
    class_name: str = ""

    def listing(self, created: int) -> dict[str, Any]:
        """The model as /v1/models shows it (OpenAI's fields, plus what a client needs to pick one)."""
        return {
            "id": self.name,
            "object": "model",
            "created": created,
            "owned_by": "fleet",
            "max_model_len": self.context_length,
            "context_length": self.context_length,
            "modalities": list(self.modalities),
            "description": self.description,
            "startup_budget_s": self.startup_budget,
        }


@dataclass(frozen=True)
class GatewayConfig:
    models: tuple[GatewayModel, ...]
    key_cache_ttl: float = 30.0  # a revoked key stops working within this (the bound: 30 s)
    usage_flush_interval: float = 60.0
    keepalive_after: float = 1.0  # a stream whose model has not answered by then gets 200 + keep-alives
    keepalive_interval: float = 5.0  # one SSE comment this often while the model starts
    connect_retry: float = 5.0  # a refused connection is retried this long, then 503 (never a hang)
    retry_after: int = 30  # the Retry-After a 503 carries
    cold_wait_after: float = 5.0  # a wait for the model's first byte longer than this counts as a cold wait
    created: int = 0  # the `created` time /v1/models shows (the render's, so it is stable)
    by_name: dict[str, GatewayModel] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {m.name: m for m in self.models})


class Upstreams(Protocol):
    async def url(self, model: GatewayModel) -> str | None:
        """The model's base URL (no /v1), or None when it is not deployed / not running."""
        ...


class StaticUpstreams:
    """Local mode: URLs given on the command line (`fleet gateway --local --upstream NAME=URL`)."""

    def __init__(self, urls: dict[str, str]) -> None:
        self.urls = {name: url.rstrip("/").removesuffix("/v1") for name, url in urls.items()}

    async def url(self, model: GatewayModel) -> str | None:
        return self.urls.get(model.name)


class ModalUpstreams:
    """Inside Modal: each model's web URL, looked up once (`modal.Cls.from_name`) on first use and kept.

    Looked up lazily rather than at container start, so a model that is not deployed yet does not stop the
    gateway from starting, and a gateway start costs no lookup for models nobody asks for.
    """

    def __init__(self) -> None:
        self._urls: dict[str, str] = {}
        self._lock = asyncio.Lock()

    async def url(self, model: GatewayModel) -> str | None:
        if model.name in self._urls:
            return self._urls[model.name]
        async with self._lock:
            if model.name not in self._urls:
                found = await asyncio.to_thread(self._lookup, model)
                if found is None:
                    return None
                self._urls[model.name] = found
        return self._urls[model.name]

    @staticmethod
    def _lookup(model: GatewayModel) -> str | None:
        import modal
        from modal.exception import NotFoundError

        try:
            return modal.Cls.from_name(model.app_name, model.class_name)().serve.get_web_url()
        except NotFoundError:
            return None
