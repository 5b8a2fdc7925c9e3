"""A local fake of Modal's gRPC control plane, for tests.

The real ``modal`` client (1.6.x) talks to this fake over gRPC, exactly as it talks to Modal's servers:
point it here with ``MODAL_SERVER_URL=http://127.0.0.1:<port>`` plus any token id/secret. Nothing in the
``modal`` package is mocked.

The fake answers the RPCs that ``modal deploy`` and the read side (lookup, tags, list, stop, ``Cls.from_name``,
autoscaler updates, container list/stop) use, keeps state the way the real server does (apps by environment and
name, functions, classes, images, mounts, volumes, secrets), and records every request in ``fake.requests``.

It also serves ``.remote()`` calls of deployed functions (FunctionMap, FunctionPutInputs, FunctionGetOutputs)
without running any user code: a call returns the canned ``fake.function_results[name]`` (default None) and is
recorded in ``fake.function_calls`` as (app_name, name); ``fake.fail_call_for(app_name, name, message)`` makes it
raise ``modal.exception.RemoteError(message)`` in the client.

RPCs it does not implement fail with gRPC ``UNIMPLEMENTED`` (not retried by the client) and are listed in
``fake.unimplemented``. A bug inside a handler is reported as ``UNIMPLEMENTED`` too (``INTERNAL``/``UNKNOWN``
would make the client retry for a long time) and kept in ``fake.errors``.

Usage::

    with FakeModal(existing_secrets={"vllm-api-key"}) as fake:
        ...  # env MODAL_SERVER_URL=fake.url, MODAL_TOKEN_ID=ak-test, MODAL_TOKEN_SECRET=as-test
        fake.calls("FunctionCreate")
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
import string
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

import grpclib.server
from google.protobuf import empty_pb2
from grpclib import GRPCError, Status
from modal_proto import api_pb2
from modal_proto.api_grpc import ModalClientBase

try:  # imported as a top-level module (tests/ on sys.path) or as part of the tests package
    from fake_modal_dict import DictMixin
    from fake_modal_tags import TagFailuresMixin
except ImportError:  # pragma: no cover
    from .fake_modal_dict import DictMixin
    from .fake_modal_tags import TagFailuresMixin
try:
    from fake_modal_ops import FakeModalOps
except ImportError:  # pragma: no cover
    from .fake_modal_ops import FakeModalOps

DEFAULT_ENVIRONMENT = "main"
DEFAULT_WORKSPACE = "fleet-test"
IMAGE_BUILDER_VERSION = "2025.06"
# The message the modal client shows when it has no credentials (checked locally, before any RPC).
TOKEN_MISSING_MESSAGE = "Token missing. Could not authenticate client."

_ALNUM = string.ascii_letters + string.digits


def _new_id(prefix: str) -> str:
    """Object ids shaped like the real ones (``ap-`` + 22 alphanumerics, etc.)."""
    return f"{prefix}-" + "".join(random.choices(_ALNUM, k=22))


def _is_repeated(f) -> bool:
    if hasattr(f, "is_repeated"):
        return bool(f.is_repeated)
    return f.label == 3  # LABEL_REPEATED, older protobuf


def _now() -> float:
    return time.time()


@dataclass
class FakeApp:
    app_id: str
    name: str  # deployment name ("" for an ephemeral app)
    environment: str
    state: int  # api_pb2.APP_STATE_*
    tags: dict[str, str] = field(default_factory=dict)
    created_at: float = field(default_factory=_now)
    deployed_at: float = 0.0
    stopped_at: float = 0.0
    version: int = 0  # incremented on each AppPublish
    function_ids: dict[str, str] = field(default_factory=dict)  # tag -> fu-...
    class_ids: dict[str, str] = field(default_factory=dict)  # tag -> cs-...
    deployment_tag: str = ""

    @property
    def state_name(self) -> str:
        return {
            api_pb2.APP_STATE_DEPLOYED: "deployed",
            api_pb2.APP_STATE_STOPPED: "stopped",
            api_pb2.APP_STATE_INITIALIZING: "initializing",
            api_pb2.APP_STATE_EPHEMERAL: "ephemeral",
            api_pb2.APP_STATE_DETACHED: "detached",
            api_pb2.APP_STATE_STOPPING: "stopping",
            api_pb2.APP_STATE_DISABLED: "disabled",
        }.get(self.state, str(self.state))


@dataclass
class FakeFunction:
    function_id: str
    app_id: str
    tag: str  # function name, e.g. "prefetch" or "Model.*" for a class service function
    handle_metadata: api_pb2.FunctionHandleMetadata
    definition: api_pb2.Function | None = None  # from FunctionCreate (first ranked function if fallbacks)
    function_data: api_pb2.FunctionData | None = None
    autoscaler_override: api_pb2.AutoscalerSettings = field(default_factory=api_pb2.AutoscalerSettings)

    @property
    def web_urls(self) -> dict[str, str]:
        """Method name (or "" for a plain web function) -> web URL."""
        urls = {m: md.web_url for m, md in self.handle_metadata.method_handle_metadata.items() if md.web_url}
        if self.handle_metadata.web_url:
            urls[""] = self.handle_metadata.web_url
        return urls


@dataclass
class _FakeFunctionCall:
    function_call_id: str
    function_id: str
    app_name: str
    function_name: str
    outputs: dict[int, api_pb2.FunctionGetOutputsItem] = field(default_factory=dict)  # idx -> output
    inputs: dict[int, api_pb2.FunctionInput] = field(default_factory=dict)  # idx -> input as sent


@dataclass
class _DeployFailure:
    message: str
    rpc: str
    status: Status


class FakeModal(DictMixin, TagFailuresMixin, FakeModalOps, ModalClientBase):
    """Fake Modal control plane served by grpclib in a background thread."""

    def __init__(
        self,
        *,
        existing_secrets: set[str] | None = None,
        workspace: str = DEFAULT_WORKSPACE,
        default_environment: str = DEFAULT_ENVIRONMENT,
        environments: set[str] | None = None,
    ):
        self.workspace = workspace
        self.default_environment = default_environment
        self._initial_secrets = set(existing_secrets or ())
        self._initial_environments = set(environments or ()) | {default_environment}
        self.host = "127.0.0.1"
        self.port: int | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: grpclib.server.Server | None = None
        self._lock = threading.RLock()
        self.reset()

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        assert self.port is not None, "FakeModal is not started"
        return f"http://{self.host}:{self.port}"

    def client_env(self) -> dict[str, str]:
        """Environment variables that point a `modal` client (or `modal` CLI subprocess) at this fake."""
        return {"MODAL_SERVER_URL": self.url, "MODAL_TOKEN_ID": "ak-test", "MODAL_TOKEN_SECRET": "as-test"}

    def start(self) -> "FakeModal":
        if self._thread is not None:
            return self
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                self._server = grpclib.server.Server([self])
                loop.run_until_complete(self._server.start(self.host, 0))
                self.port = self._server._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            except BaseException as exc:  # pragma: no cover - startup failure
                failure.append(exc)
                ready.set()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=run, name="fake-modal", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("FakeModal did not start within 10 s")
        if failure:
            self._thread = None
            raise RuntimeError("FakeModal failed to start") from failure[0]
        return self

    def stop(self) -> None:
        if self._thread is None or self._loop is None or self._server is None:
            return
        server, loop = self._server, self._loop

        async def shutdown() -> None:
            server.close()
            await server.wait_closed()

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(timeout=5)
        except Exception:
            pass
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(timeout=5)
        self._thread = self._loop = self._server = None
        self.port = None

    def __enter__(self) -> "FakeModal":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def reset(self) -> None:
        """Forget all state, recorded requests and knobs (server keeps running)."""
        with self._lock:
            self.requests: list[tuple[str, Any]] = []
            self.request_metadata: list[tuple[str, dict[str, str]]] = []
            self.unimplemented: list[str] = []
            self.errors: list[tuple[str, str]] = []  # (method, traceback) for bugs inside handlers
            self.apps: dict[str, FakeApp] = {}  # app_id -> app
            self.functions: dict[str, FakeFunction] = {}  # function_id -> function
            self.classes: dict[str, str] = {}  # class_id -> app_id
            self.images: dict[bytes, str] = {}  # serialized image definition -> image id
            self.image_definitions: dict[str, api_pb2.Image] = {}  # image id -> definition
            self.mounts: dict[str, dict[str, str]] = {}  # mount id -> {remote filename: sha256}
            self.blobs: dict[str, bytes] = {}  # sha256 -> file content (MountPutFile)
            self.volumes: dict[tuple[str, str], str] = {}  # (env, name) -> vo-...
            self.secrets: dict[tuple[str, str], str] = {}  # (env, name) -> st-... (created via the API)
            self.existing_secrets: set[str] = set(self._initial_secrets)  # names that exist in every env
            self._secret_ids: dict[str, str] = {}  # name -> st-... for existing_secrets
            self.environments: dict[str, str] = {n: _new_id("en") for n in self._initial_environments}
            self.tasks: dict[str, tuple[str, float]] = {}  # task_id -> (app_id, enqueued_at)
            self.stopped_tasks: dict[str, tuple[str, float, float]] = {}  # task_id -> (app_id, enqueued, finished)
            self.deploy_delay: float = 0.0
            self.deploy_delay_rpc: str = "AppPublish"
            self._failures: dict[str, _DeployFailure] = {}
            # The 1.6.4 client also sends the App's constructor tags in AppPublishRequest.tags on every deploy.
            # facts.md says tags are only applied when the app is first created (AppCreate); keep that by default.
            self.publish_applies_tags: bool = False
            # Warnings the server attaches to an app's AppPublish answer (app name -> messages), as Modal does
            # for options it ignores; the client hands them back in DeployResult.warnings.
            self.publish_warnings: dict[str, list[str]] = {}
            self.require_token: bool = True
            # Function calls (`.remote()`): no user code runs; each input gets a canned result.
            self.function_results: dict[str, Any] = {}  # function name -> value returned by `.remote()`
            self.function_calls: list[tuple[str, str]] = []  # (app_name, function_name) per input, in order
            self._reset_dicts()
            self._reset_tags()
            self._call_failures: dict[tuple[str, str], tuple[str, BaseException | None]] = {}
            self._function_call_state: dict[str, _FakeFunctionCall] = {}  # fc-... -> call
            self._reset_ops()

    # ------------------------------------------------------------------ knobs and helpers

    def fail_deploy_for(
        self, app_name: str, message: str, *, rpc: str = "AppPublish", status: Status = Status.INVALID_ARGUMENT
    ) -> None:
        """Make deploys of `app_name` fail in `rpc` ("AppPublish" or "FunctionCreate") with a gRPC error.

        With the default INVALID_ARGUMENT the client raises `modal.exception.InvalidError(message)`.
        """
        self._failures[app_name] = _DeployFailure(message, rpc, status)

    def fail_call_for(
        self, app_name: str, function_name: str, message: str, *, exception: BaseException | None = None
    ) -> None:
        """Make calls (`.remote()`) of `function_name` in app `app_name` fail as if the function raised.

        By default the output carries only the message, and the client raises
        `modal.exception.RemoteError(message)`. With `exception=SomeError(...)` the exception is pickled into the
        output, as a container does for a user exception, and the client re-raises that exception instead.
        """
        self._call_failures[(app_name, function_name)] = (message, exception)

    def clear_failures(self) -> None:
        self._failures.clear()
        self._call_failures.clear()

    def calls(self, method: str) -> list[Any]:
        """Recorded request messages of one RPC, in order."""
        if not hasattr(ModalClientBase, method):
            raise ValueError(f"{method!r} is not an RPC of ModalClient")
        with self._lock:
            return [msg for name, msg in self.requests if name == method]

    def method_names(self) -> list[str]:
        with self._lock:
            return [name for name, _ in self.requests]

    def distinct_images(self) -> int:
        """Number of distinct image definitions (layers) seen in ImageGetOrCreate."""
        return len(self.images)

    def app(self, name: str, environment: str | None = None) -> FakeApp | None:
        """The current app with this deployment name (deployed or most recently stopped)."""
        env = environment or self.default_environment
        with self._lock:
            candidates = [a for a in self.apps.values() if a.name == name and a.environment == env]
        live = [a for a in candidates if a.state != api_pb2.APP_STATE_STOPPED]
        pool = live or candidates
        return max(pool, key=lambda a: a.created_at) if pool else None

    def deployed_apps(self, environment: str | None = None) -> list[FakeApp]:
        env = environment or self.default_environment
        return [a for a in self.apps.values() if a.environment == env and a.state == api_pb2.APP_STATE_DEPLOYED]

    def app_functions(self, app_name: str, environment: str | None = None) -> dict[str, FakeFunction]:
        """tag -> FakeFunction for the published functions of an app ("Cls.*" for class service functions)."""
        app = self.app(app_name, environment)
        if app is None:
            return {}
        return {tag: self.functions[fid] for tag, fid in app.function_ids.items() if fid in self.functions}

    def web_url(self, app_name: str, cls_name: str, method: str, environment: str | None = None) -> str:
        return self.app_functions(app_name, environment)[f"{cls_name}.*"].handle_metadata.method_handle_metadata[
            method
        ].web_url

    def function_creates_for(self, app_name: str) -> list[api_pb2.FunctionCreateRequest]:
        """FunctionCreate requests that belonged to (any app id of) `app_name`."""
        app_ids = {a.app_id for a in self.apps.values() if a.name == app_name}
        return [r for r in self.calls("FunctionCreate") if r.app_id in app_ids]

    def volume_name(self, volume_id: str) -> str | None:
        for (_env, name), vid in self.volumes.items():
            if vid == volume_id:
                return name
        return None

    def secret_name(self, secret_id: str) -> str | None:
        for name, sid in self._secret_ids.items():
            if sid == secret_id:
                return name
        for (_env, name), sid in self.secrets.items():
            if sid == secret_id:
                return name
        return None

    def mount_files(self, mount_id: str) -> dict[str, bytes | None]:
        """Remote filename -> uploaded content for a mount."""
        return {fn: self.blobs.get(sha) for fn, sha in self.mounts.get(mount_id, {}).items()}

    def add_container(self, app_name: str, environment: str | None = None) -> str:
        """Pretend a container of this app is running (visible to TaskList, stoppable by ContainerStop)."""
        app = self.app(app_name, environment)
        assert app is not None, f"no app {app_name!r}"
        task_id = _new_id("ta")
        self.tasks[task_id] = (app.app_id, _now())
        return task_id

    # ------------------------------------------------------------------ internals

    def _env(self, name: str) -> str:
        env = name or self.default_environment
        if env not in self.environments:
            raise GRPCError(Status.NOT_FOUND, f"Environment '{env}' not found")
        return env

    def _app_by_id(self, app_id: str) -> FakeApp:
        app = self.apps.get(app_id)
        if app is None:
            raise GRPCError(Status.NOT_FOUND, f"App with id '{app_id}' not found")
        return app

    def _deployed(self, name: str, env: str) -> FakeApp | None:
        for a in self.apps.values():
            if a.name == name and a.environment == env and a.state == api_pb2.APP_STATE_DEPLOYED:
                return a
        return None

    def _check_failure(self, app_id: str, rpc: str) -> None:
        app = self.apps.get(app_id)
        if app is None:
            return
        failure = self._failures.get(app.name)
        if failure and failure.rpc == rpc:
            raise GRPCError(failure.status, failure.message)

    async def _maybe_delay(self, rpc: str) -> None:
        if self.deploy_delay and rpc == self.deploy_delay_rpc:
            await asyncio.sleep(self.deploy_delay)

    def _web_url(self, app: FakeApp | None, webhook_config: api_pb2.WebhookConfig, default_label: str) -> str:
        if webhook_config.type == api_pb2.WEBHOOK_TYPE_UNSPECIFIED:
            return ""
        label = (webhook_config.requested_suffix or default_label).lower().replace("_", "-")
        label = re.sub(r"[^a-z0-9-]", "-", label)
        env = app.environment if app else self.default_environment
        prefix = self.workspace if env == self.default_environment else f"{self.workspace}-{env}"
        if len(label) > 63:  # the real server shortens long labels; the exact rule is the server's
            digest = hashlib.sha256(label.encode()).hexdigest()[:6]
            label = f"{label[:56]}-{digest}"
        return f"https://{prefix}--{label}.modal.run"

    def _handle_metadata(
        self,
        app: FakeApp | None,
        function_name: str,
        function_type: int,
        webhook_config: api_pb2.WebhookConfig | None,
        method_definitions: dict[str, api_pb2.MethodDefinition],
        class_parameter_info: api_pb2.ClassParameterInfo | None = None,
        definition_id: str = "",
    ) -> api_pb2.FunctionHandleMetadata:
        app_name = app.name if app else "app"
        md = api_pb2.FunctionHandleMetadata(
            function_name=function_name,
            function_type=function_type,  # type: ignore[arg-type]
            app_id=app.app_id if app else "",
            definition_id=definition_id or _new_id("de"),
        )
        if class_parameter_info is not None:
            md.class_parameter_info.CopyFrom(class_parameter_info)
        if webhook_config is not None and webhook_config.type != api_pb2.WEBHOOK_TYPE_UNSPECIFIED:
            md.web_url = self._web_url(app, webhook_config, f"{app_name}-{function_name}")
        cls_name = function_name[:-2] if function_name.endswith(".*") else function_name
        for method_name, mdef in method_definitions.items():
            mmd = md.method_handle_metadata[method_name]
            mmd.function_name = f"{cls_name}.{method_name}"
            mmd.function_type = mdef.function_type
            mmd.is_method = True
            mmd.use_method_name = method_name
            mmd.app_id = md.app_id
            mmd.definition_id = md.definition_id
            mmd.function_schema.CopyFrom(mdef.function_schema)
            mmd.supported_input_formats.extend(mdef.supported_input_formats)
            mmd.supported_output_formats.extend(mdef.supported_output_formats)
            if class_parameter_info is not None:
                mmd.class_parameter_info.CopyFrom(class_parameter_info)
            mmd.web_url = self._web_url(app, mdef.webhook_config, f"{app_name}-{cls_name}-{method_name}")
        return md

    @staticmethod
    def _function_data_from(function: api_pb2.Function) -> api_pb2.FunctionData:
        """FunctionData as the server returns it: shared fields copied, the Function as rank 0."""
        data = api_pb2.FunctionData()
        src_fields = {f.name: f for f in api_pb2.Function.DESCRIPTOR.fields}
        for f in api_pb2.FunctionData.DESCRIPTOR.fields:
            sf = src_fields.get(f.name)
            if sf is None or sf.type != f.type or _is_repeated(sf) != _is_repeated(f):
                continue
            value = getattr(function, f.name)
            target = getattr(data, f.name)
            is_map = f.message_type is not None and f.message_type.GetOptions().map_entry
            try:
                if is_map:
                    for k, v in value.items():
                        if f.message_type.fields_by_name["value"].message_type is not None:
                            target[k].CopyFrom(v)
                        else:
                            target[k] = v
                elif _is_repeated(f):
                    target.extend(value)
                elif f.message_type is not None:
                    if function.HasField(f.name):
                        target.CopyFrom(value)
                else:
                    setattr(data, f.name, value)
            except (TypeError, ValueError):  # same name, different message type: not shared
                continue
        data.ranked_functions.add(rank=0, function=function)
        return data

    # ------------------------------------------------------------------ RPC handlers
    # Each `_rpc_<Name>(self, request)` returns the reply message (or a list of messages for streaming RPCs).
    # They run on the fake's event loop; `async` ones may await.

    def _rpc_ClientHello(self, req):
        return api_pb2.ClientHelloResponse(image_builder_version=IMAGE_BUILDER_VERSION)

    def _rpc_EnvironmentGetOrCreate(self, req: api_pb2.EnvironmentGetOrCreateRequest):
        name = req.deployment_name or self.default_environment
        if name not in self.environments:
            if req.object_creation_type == api_pb2.OBJECT_CREATION_TYPE_CREATE_IF_MISSING:
                self.environments[name] = _new_id("en")
            else:
                raise GRPCError(Status.NOT_FOUND, f"Environment '{name}' not found")
        return api_pb2.EnvironmentGetOrCreateResponse(
            environment_id=self.environments[name],
            metadata=api_pb2.EnvironmentMetadata(
                name=name,
                settings=api_pb2.EnvironmentSettings(
                    image_builder_version=IMAGE_BUILDER_VERSION,
                    webhook_suffix="" if name == self.default_environment else name,
                ),
            ),
        )

    # --- apps

    def _lifecycle(self, app: FakeApp) -> api_pb2.AppLifecycle:
        lc = api_pb2.AppLifecycle(app_state=app.state, created_at=app.created_at, created_by="fleet-test")  # type: ignore[arg-type]
        if app.deployed_at:
            lc.deployed_at = app.deployed_at
            lc.deployed_by = "fleet-test"
            lc.version = app.version
        if app.stopped_at:
            lc.stopped_at = app.stopped_at
            lc.stopped_by = "fleet-test"
        return lc

    def _app_handle_metadata(self, app: FakeApp) -> api_pb2.AppHandleMetadata:
        return api_pb2.AppHandleMetadata(
            description=app.name, app_id=app.app_id, environment_name=app.environment, lifecycle=self._lifecycle(app)
        )

    def _rpc_AppGetByDeploymentName(self, req: api_pb2.AppGetByDeploymentNameRequest):
        env = self._env(req.environment_name)
        resp = api_pb2.AppGetByDeploymentNameResponse(environment_name=env)
        app = self._deployed(req.name, env)
        if app is not None:
            resp.app_id = app.app_id
            resp.lifecycle.CopyFrom(self._lifecycle(app))
        else:
            stopped = self.app(req.name, env)
            if stopped is not None and stopped.state == api_pb2.APP_STATE_STOPPED:
                resp.previous_app_id = stopped.app_id
                resp.lifecycle.CopyFrom(self._lifecycle(stopped))
        return resp

    def _rpc_AppCreate(self, req: api_pb2.AppCreateRequest):
        env = self._env(req.environment_name)
        app = FakeApp(
            app_id=_new_id("ap"),
            name=req.description if req.app_state == api_pb2.APP_STATE_INITIALIZING else "",
            environment=env,
            state=req.app_state or api_pb2.APP_STATE_EPHEMERAL,
            tags=dict(req.tags),
        )
        self.apps[app.app_id] = app
        return api_pb2.AppCreateResponse(
            app_id=app.app_id,
            app_page_url=f"https://modal.com/apps/{self.workspace}/{env}/{app.app_id}",
            app_logs_url=f"https://modal.com/apps/{self.workspace}/{env}/{app.app_id}/logs",
        )

    def _rpc_AppGetOrCreate(self, req: api_pb2.AppGetOrCreateRequest):
        if re.match(r"^ap-[a-zA-Z0-9]{22}$", req.app_name):
            app = self._app_by_id(req.app_name)
        else:
            env = self._env(req.environment_name)
            app = self._deployed(req.app_name, env)
            if app is None:
                if req.object_creation_type == api_pb2.OBJECT_CREATION_TYPE_CREATE_IF_MISSING:
                    app = FakeApp(_new_id("ap"), req.app_name, env, api_pb2.APP_STATE_DEPLOYED)
                    app.deployed_at = _now()
                    self.apps[app.app_id] = app
                else:
                    raise GRPCError(Status.NOT_FOUND, f"App '{req.app_name}' not found in environment '{env}'")
        return api_pb2.AppGetOrCreateResponse(app_id=app.app_id, handle_metadata=self._app_handle_metadata(app))

    def _rpc_AppGetLayout(self, req: api_pb2.AppGetLayoutRequest):
        app = self._app_by_id(req.app_id)
        layout = api_pb2.AppLayout(function_ids=app.function_ids, class_ids=app.class_ids)
        for fid in app.function_ids.values():
            fn = self.functions.get(fid)
            if fn is not None:
                layout.objects.add(object_id=fid, function_handle_metadata=fn.handle_metadata)
        for cid in app.class_ids.values():
            layout.objects.add(object_id=cid, class_handle_metadata=api_pb2.ClassHandleMetadata())
        return api_pb2.AppGetLayoutResponse(app_layout=layout)

    def _rpc_AppHeartbeat(self, req):
        return empty_pb2.Empty()

    def _rpc_AppClientDisconnect(self, req: api_pb2.AppClientDisconnectRequest):
        app = self.apps.get(req.app_id)
        if app is not None and app.state in (api_pb2.APP_STATE_INITIALIZING, api_pb2.APP_STATE_EPHEMERAL):
            app.state = api_pb2.APP_STATE_STOPPED
            app.stopped_at = _now()
        return empty_pb2.Empty()

    async def _rpc_AppPublish(self, req: api_pb2.AppPublishRequest):
        app = self._app_by_id(req.app_id)
        if req.name:
            app.name = req.name
        self._check_failure(app.app_id, "AppPublish")
        await self._maybe_delay("AppPublish")
        env = app.environment
        other = self._deployed(app.name, env)
        if other is not None and other.app_id != app.app_id:
            raise GRPCError(Status.ALREADY_EXISTS, f"App '{app.name}' is already deployed in '{env}'")
        app.state = req.app_state or api_pb2.APP_STATE_DEPLOYED
        app.function_ids = dict(req.function_ids)
        app.class_ids = dict(req.class_ids)
        app.deployment_tag = req.deployment_tag
        app.version += 1
        app.deployed_at = _now()
        if self.publish_applies_tags:
            app.tags = dict(req.tags)
        for tag, fid in app.function_ids.items():
            fn = self.functions.get(fid)
            if fn is not None:
                fn.tag = tag
                fn.autoscaler_override = api_pb2.AutoscalerSettings()  # a deploy resets autoscaler overrides
        warnings = [api_pb2.Warning(message=m) for m in self.publish_warnings.get(app.name, [])]
        return api_pb2.AppPublishResponse(
            url=f"https://modal.com/apps/{self.workspace}/{env}/deployed/{app.name}",
            deployed_at=app.deployed_at,
            server_warnings=warnings,
        )

    def _rpc_AppGetTags(self, req: api_pb2.AppGetTagsRequest):
        return api_pb2.AppGetTagsResponse(tags=self._app_by_id(req.app_id).tags)

    def _rpc_AppSetTags(self, req: api_pb2.AppSetTagsRequest):
        self._check_set_tags_failure(self._app_by_id(req.app_id).name)
        self._app_by_id(req.app_id).tags = dict(req.tags)
        return empty_pb2.Empty()

    def _rpc_AppStop(self, req: api_pb2.AppStopRequest):
        app = self._app_by_id(req.app_id)
        app.state = api_pb2.APP_STATE_STOPPED
        app.stopped_at = _now()
        for tid, (aid, enqueued_at) in list(self.tasks.items()):
            if aid == app.app_id:
                del self.tasks[tid]
                self.stopped_tasks[tid] = (aid, enqueued_at, app.stopped_at)
        return empty_pb2.Empty()

    def _rpc_AppList(self, req: api_pb2.AppListRequest):
        env = self._env(req.environment_name)
        resp = api_pb2.AppListResponse()
        for app in self.apps.values():
            if app.environment != env:
                continue
            n_tasks = sum(1 for aid, _ in self.tasks.values() if aid == app.app_id)
            item = resp.apps.add(
                app_id=app.app_id,
                description=app.name,
                name=app.name,
                state=app.state,  # type: ignore[arg-type]
                created_at=app.created_at,
                stopped_at=app.stopped_at,
                n_running_tasks=n_tasks,
            )
            item.metadata.CopyFrom(self._app_handle_metadata(app))
        return resp

    def _rpc_AppGetInfo(self, req: api_pb2.AppGetInfoRequest):
        return api_pb2.AppGetInfoResponse(info=self._app_handle_metadata(self._app_by_id(req.app_id)))

    def _rpc_AppGetLifecycle(self, req: api_pb2.AppGetLifecycleRequest):
        return api_pb2.AppGetLifecycleResponse(lifecycle=self._lifecycle(self._app_by_id(req.app_id)))

    # --- objects used by functions

    def _rpc_ImageGetOrCreate(self, req: api_pb2.ImageGetOrCreateRequest):
        key = req.image.SerializeToString(deterministic=True) + b"|" + req.builder_version.encode()
        image_id = self.images.get(key)
        if image_id is None:
            image_id = self.images[key] = _new_id("im")
            self.image_definitions[image_id] = req.image
        return api_pb2.ImageGetOrCreateResponse(
            image_id=image_id,
            result=api_pb2.GenericResult(status=api_pb2.GenericResult.GENERIC_STATUS_SUCCESS),
            metadata=api_pb2.ImageMetadata(
                python_version_info="Python 3.12.3", image_builder_version=req.builder_version
            ),
        )

    def _rpc_MountGetOrCreate(self, req: api_pb2.MountGetOrCreateRequest):
        files = {f.filename: f.sha256_hex for f in req.files}
        digest = hashlib.sha256(repr(sorted(files.items())).encode()).hexdigest()
        mount_id = _new_id("mo")
        self.mounts[mount_id] = files
        return api_pb2.MountGetOrCreateResponse(
            mount_id=mount_id, handle_metadata=api_pb2.MountHandleMetadata(content_checksum_sha256_hex=digest)
        )

    def _rpc_MountBatchedCheckExistence(self, req: api_pb2.MountBatchedCheckExistenceRequest):
        missing = [h for h in req.sha256_hex_hashes if h not in self.blobs]
        resp = api_pb2.MountBatchedCheckExistenceResponse(missing_sha256_hex_hashes=missing)
        resp.checked_at.GetCurrentTime()
        return resp

    def _rpc_MountPutFile(self, req: api_pb2.MountPutFileRequest):
        if req.data:
            self.blobs[req.sha256_hex] = req.data
        elif req.data_blob_id:  # large files go through blob storage, which the fake does not serve
            self.blobs[req.sha256_hex] = b""
        resp = api_pb2.MountPutFileResponse(exists=req.sha256_hex in self.blobs)
        resp.checked_at.GetCurrentTime()
        return resp

    def _rpc_VolumeGetOrCreate(self, req: api_pb2.VolumeGetOrCreateRequest):
        env = self._env(req.environment_name)
        key = (env, req.deployment_name)
        if key not in self.volumes:
            if req.object_creation_type in (
                api_pb2.OBJECT_CREATION_TYPE_CREATE_IF_MISSING,
                api_pb2.OBJECT_CREATION_TYPE_CREATE_FAIL_IF_EXISTS,
            ):
                self.volumes[key] = _new_id("vo")
            else:
                raise GRPCError(Status.NOT_FOUND, f"Volume '{req.deployment_name}' not found in environment '{env}'")
        elif req.object_creation_type == api_pb2.OBJECT_CREATION_TYPE_CREATE_FAIL_IF_EXISTS:
            raise GRPCError(Status.ALREADY_EXISTS, f"Volume '{req.deployment_name}' already exists")
        version = req.version or api_pb2.VOLUME_FS_VERSION_V1
        return api_pb2.VolumeGetOrCreateResponse(
            volume_id=self.volumes[key],
            version=version,  # type: ignore[arg-type]
            metadata=api_pb2.VolumeMetadata(name=req.deployment_name, version=version),  # type: ignore[arg-type]
        )

    def _rpc_SecretGetOrCreate(self, req: api_pb2.SecretGetOrCreateRequest):
        env = self._env(req.environment_name)
        name = req.deployment_name
        ct = req.object_creation_type
        if ct in (api_pb2.OBJECT_CREATION_TYPE_ANONYMOUS_OWNED_BY_APP, api_pb2.OBJECT_CREATION_TYPE_EPHEMERAL):
            secret_id = _new_id("st")  # Secret.from_dict(...)
        elif ct == api_pb2.OBJECT_CREATION_TYPE_UNSPECIFIED:  # Secret.from_name(...)
            if name in self.existing_secrets:
                secret_id = self._secret_ids.setdefault(name, _new_id("st"))
            elif (env, name) in self.secrets:
                secret_id = self.secrets[(env, name)]
            else:
                raise GRPCError(Status.NOT_FOUND, f"Secret '{name}' not found in environment '{env}'")
        else:  # create via modal.Secret.objects.create / CLI
            exists = name in self.existing_secrets or (env, name) in self.secrets
            if exists and ct == api_pb2.OBJECT_CREATION_TYPE_CREATE_FAIL_IF_EXISTS:
                raise GRPCError(Status.ALREADY_EXISTS, f"Secret '{name}' already exists in environment '{env}'")
            secret_id = self.secrets.setdefault((env, name), _new_id("st"))
        return api_pb2.SecretGetOrCreateResponse(
            secret_id=secret_id,
            metadata=api_pb2.SecretMetadata(name=name, environment_name=env, keys=list(req.env_dict.keys())),
        )

    # --- functions and classes

    def _rpc_FunctionPrecreate(self, req: api_pb2.FunctionPrecreateRequest):
        app = self._app_by_id(req.app_id)
        function_id = req.existing_function_id or _new_id("fu")
        md = self._handle_metadata(
            app, req.function_name, req.function_type, req.webhook_config, dict(req.method_definitions)
        )
        md.function_schema.CopyFrom(req.function_schema)
        md.supported_input_formats.extend(req.supported_input_formats)
        md.supported_output_formats.extend(req.supported_output_formats)
        self.functions[function_id] = FakeFunction(function_id, app.app_id, req.function_name, md)
        return api_pb2.FunctionPrecreateResponse(function_id=function_id, handle_metadata=md)

    async def _rpc_FunctionCreate(self, req: api_pb2.FunctionCreateRequest):
        app = self._app_by_id(req.app_id)
        self._check_failure(app.app_id, "FunctionCreate")
        await self._maybe_delay("FunctionCreate")
        if req.HasField("function_data"):
            data = api_pb2.FunctionData()
            data.CopyFrom(req.function_data)
            definition = data.ranked_functions[0].function if data.ranked_functions else api_pb2.Function()
        else:
            definition = req.function
            data = self._function_data_from(definition)
        function_id = req.existing_function_id or _new_id("fu")
        previous = self.functions.get(function_id)
        md = self._handle_metadata(
            app,
            data.function_name,
            data.function_type,
            data.webhook_config,
            dict(data.method_definitions),
            data.class_parameter_info if data.HasField("class_parameter_info") else None,
            previous.handle_metadata.definition_id if previous else "",
        )
        md.function_schema.CopyFrom(data.function_schema)
        md.supported_input_formats.extend(data.supported_input_formats)
        md.supported_output_formats.extend(data.supported_output_formats)
        # Echo the URLs into the returned definitions, as the server does (`modal deploy` prints them from there).
        returned = api_pb2.Function()
        returned.CopyFrom(definition)
        for target in [data, returned, *(rf.function for rf in data.ranked_functions)]:
            if md.web_url:
                target.web_url = md.web_url
            for m, mmd in md.method_handle_metadata.items():
                if m in target.method_definitions:
                    target.method_definitions[m].web_url = mmd.web_url
        self.functions[function_id] = FakeFunction(
            function_id, app.app_id, data.function_name, md, definition=definition, function_data=data
        )
        return api_pb2.FunctionCreateResponse(
            function_id=function_id, handle_metadata=md, function=returned, function_data=data
        )

    def _rpc_ClassCreate(self, req: api_pb2.ClassCreateRequest):
        self._app_by_id(req.app_id)
        class_id = req.existing_class_id or _new_id("cs")
        self.classes[class_id] = req.app_id
        return api_pb2.ClassCreateResponse(class_id=class_id, handle_metadata=api_pb2.ClassHandleMetadata())

    def _lookup_deployed(self, app_name: str, environment_name: str) -> FakeApp:
        env = self._env(environment_name)
        app = self._deployed(app_name, env)
        if app is None:
            raise GRPCError(Status.NOT_FOUND, f"App '{app_name}' not found in environment '{env}'")
        return app

    def _rpc_ClassGet(self, req: api_pb2.ClassGetRequest):
        app = self._lookup_deployed(req.app_name, req.environment_name)
        class_id = app.class_ids.get(req.object_tag)
        if class_id is None:
            raise GRPCError(Status.NOT_FOUND, f"Class '{req.object_tag}' not found in app '{req.app_name}'")
        return api_pb2.ClassGetResponse(class_id=class_id, handle_metadata=api_pb2.ClassHandleMetadata())

    def _rpc_FunctionGet(self, req: api_pb2.FunctionGetRequest):
        app = self._lookup_deployed(req.app_name, req.environment_name)
        function_id = app.function_ids.get(req.object_tag)
        if function_id is None or function_id not in self.functions:
            raise GRPCError(Status.NOT_FOUND, f"Function '{req.object_tag}' not found in app '{req.app_name}'")
        fn = self.functions[function_id]
        resp = api_pb2.FunctionGetResponse(function_id=function_id, handle_metadata=fn.handle_metadata)
        if fn.function_data is not None:
            resp.function.CopyFrom(fn.function_data)
        return resp

    def _rpc_FunctionGetById(self, req: api_pb2.FunctionGetByIdRequest):
        fn = self.functions.get(req.function_id)
        if fn is None:
            raise GRPCError(Status.NOT_FOUND, f"Function '{req.function_id}' not found")
        resp = api_pb2.FunctionGetByIdResponse(function_id=fn.function_id, handle_metadata=fn.handle_metadata)
        if fn.function_data is not None and "function" in api_pb2.FunctionGetByIdResponse.DESCRIPTOR.fields_by_name:
            resp.function.CopyFrom(fn.function_data)
        return resp

    def _current_autoscaler(self, fn: FakeFunction) -> api_pb2.AutoscalerSettings:
        settings = api_pb2.AutoscalerSettings()
        if fn.definition is not None:
            settings.CopyFrom(fn.definition.autoscaler_settings)
        settings.MergeFrom(fn.autoscaler_override)
        return settings

    def _function(self, function_id: str) -> FakeFunction:
        fn = self.functions.get(function_id)
        if fn is None:
            raise GRPCError(Status.NOT_FOUND, f"Function '{function_id}' not found")
        return fn

    def _rpc_FunctionUpdateSchedulingParams(self, req: api_pb2.FunctionUpdateSchedulingParamsRequest):
        fn = self._function(req.function_id)
        fn.autoscaler_override.MergeFrom(req.settings)
        return api_pb2.FunctionUpdateSchedulingParamsResponse(current_settings=self._current_autoscaler(fn))

    def _rpc_FunctionGetSchedulingParams(self, req: api_pb2.FunctionGetSchedulingParamsRequest):
        fn = self._function(req.function_id)
        conf = api_pb2.AutoscalerConfiguration(settings=self._current_autoscaler(fn))
        if fn.definition is not None:
            conf.static_settings.CopyFrom(fn.definition.autoscaler_settings)
        conf.override_settings.CopyFrom(fn.autoscaler_override)
        return api_pb2.FunctionGetSchedulingParamsResponse(autoscaler_configuration=conf)

    # --- function calls (`.remote()`): FunctionMap (+ FunctionPutInputs) then FunctionGetOutputs.
    # No user code runs: every input is answered at once with `function_results[name]` (or a failure).

    def _call_name(self, fn: FakeFunction, method_name: str) -> str:
        if fn.tag.endswith(".*") and method_name:  # method of a class service function
            return f"{fn.tag[:-2]}.{method_name}"
        return fn.tag

    def _call_output(
        self, call: _FakeFunctionCall, item: api_pb2.FunctionPutInputsItem
    ) -> api_pb2.FunctionPutInputsResponseItem:
        from modal._serialization import serialize, serialize_data_format

        fn = self._function(call.function_id)
        name = self._call_name(fn, item.input.method_name)
        call.function_name = name
        with self._lock:
            self.function_calls.append((call.app_name, name))
        input_id = _new_id("in")
        data_format = item.input.data_format or api_pb2.DATA_FORMAT_PICKLE
        out = api_pb2.FunctionGetOutputsItem(idx=item.idx, input_id=input_id, data_format=data_format)
        out.input_started_at = out.output_created_at = _now()
        failure = self._call_failures.get((call.app_name, name))
        if failure is not None:
            message, exc = failure
            out.result.status = api_pb2.GenericResult.GENERIC_STATUS_FAILURE
            out.result.exception = message
            out.result.traceback = f"Traceback (most recent call last):\n  (fake_modal)\n{message}\n"
            if exc is not None:
                out.data_format = api_pb2.DATA_FORMAT_PICKLE
                out.result.data = serialize(exc)
        else:
            out.result.status = api_pb2.GenericResult.GENERIC_STATUS_SUCCESS
            out.result.data = serialize_data_format(self.function_results.get(name), data_format)
        call.inputs[item.idx] = item.input
        call.outputs[item.idx] = out
        return api_pb2.FunctionPutInputsResponseItem(idx=item.idx, input_id=input_id, input_jwt=f"jwt-{input_id}")

    def _rpc_FunctionMap(self, req: api_pb2.FunctionMapRequest):
        fn = self._function(req.function_id)
        app = self.apps.get(fn.app_id)
        call = _FakeFunctionCall(_new_id("fc"), fn.function_id, app.name if app else "", fn.tag)
        self._function_call_state[call.function_call_id] = call
        resp = api_pb2.FunctionMapResponse(
            function_call_id=call.function_call_id,
            function_call_jwt=f"jwt-{call.function_call_id}",
            max_inputs_outstanding=1000,
        )
        for item in req.pipelined_inputs:
            resp.pipelined_inputs.append(self._call_output(call, item))
        return resp

    def _rpc_FunctionPutInputs(self, req: api_pb2.FunctionPutInputsRequest):
        call = self._function_call_state.get(req.function_call_id)
        if call is None:
            raise GRPCError(Status.NOT_FOUND, f"Function call '{req.function_call_id}' not found")
        return api_pb2.FunctionPutInputsResponse(inputs=[self._call_output(call, item) for item in req.inputs])

    def _rpc_FunctionGetOutputs(self, req: api_pb2.FunctionGetOutputsRequest):
        call = self._function_call_state.get(req.function_call_id)
        if call is None:
            raise GRPCError(Status.NOT_FOUND, f"Function call '{req.function_call_id}' not found")
        end = max(req.end_idx, req.start_idx)
        outputs = [call.outputs[i] for i in sorted(call.outputs) if req.start_idx <= i <= end]
        if req.clear_on_success:
            for out in outputs:
                call.outputs.pop(out.idx, None)
        return api_pb2.FunctionGetOutputsResponse(
            outputs=outputs, idxs=[o.idx for o in outputs], last_entry_id="0-0", num_unfinished_inputs=0
        )

    # --- containers

    def _rpc_TaskList(self, req: api_pb2.TaskListRequest):
        resp = api_pb2.TaskListResponse()
        for tid, (aid, enqueued_at) in self.tasks.items():
            if req.app_id and aid != req.app_id:
                continue
            app = self.apps.get(aid)
            if req.environment_name and app and app.environment != req.environment_name:
                continue
            resp.tasks.add(
                task_id=tid,
                app_id=aid,
                app_description=app.name if app else "",
                enqueued_at=enqueued_at,
                started_at=enqueued_at,
            )
        return resp

    def _rpc_ContainerStop(self, req: api_pb2.ContainerStopRequest):
        if req.task_id not in self.tasks:
            raise GRPCError(Status.NOT_FOUND, f"Container '{req.task_id}' not found")
        app_id, enqueued_at = self.tasks.pop(req.task_id)
        self.stopped_tasks[req.task_id] = (app_id, enqueued_at, _now())
        return api_pb2.ContainerStopResponse()

    def _rpc_TaskGetInfo(self, req: api_pb2.TaskGetInfoRequest):
        if req.task_id in self.tasks:
            app_id, enqueued_at = self.tasks[req.task_id]
            finished_at = 0.0
        elif req.task_id in self.stopped_tasks:
            app_id, enqueued_at, finished_at = self.stopped_tasks[req.task_id]
        else:
            raise GRPCError(Status.NOT_FOUND, f"Container '{req.task_id}' not found")
        info = api_pb2.TaskInfo(id=req.task_id, enqueued_at=enqueued_at, started_at=enqueued_at)
        if finished_at:
            info.finished_at = finished_at
        return api_pb2.TaskGetInfoResponse(app_id=app_id, info=info)


# ---------------------------------------------------------------------- wiring of the gRPC methods


def _make_handler(name: str, impl: Callable | None, streaming: bool):
    async def handler(self: FakeModal, stream: grpclib.server.Stream) -> None:
        request = await stream.recv_message()
        metadata = dict(stream.metadata or {})
        with self._lock:
            self.requests.append((name, request))
            self.request_metadata.append((name, metadata))
        if self.require_token and not (metadata.get("x-modal-token-id") and metadata.get("x-modal-token-secret")):
            # The real client never gets here without a token (it fails locally with TOKEN_MISSING_MESSAGE);
            # a raw gRPC call without credentials is refused like the real server does.
            raise GRPCError(Status.UNAUTHENTICATED, TOKEN_MISSING_MESSAGE)
        if impl is None:
            with self._lock:
                self.unimplemented.append(name)
            raise GRPCError(Status.UNIMPLEMENTED, f"fake_modal: RPC {name} is not implemented by the fake")
        try:
            result = impl(self, request)
            if asyncio.iscoroutine(result):
                result = await result
        except GRPCError:
            raise
        except Exception:
            tb = traceback.format_exc()
            with self._lock:
                self.errors.append((name, tb))
            # UNIMPLEMENTED is not retried by the client, unlike INTERNAL/UNKNOWN.
            raise GRPCError(Status.UNIMPLEMENTED, f"fake_modal: bug in handler for {name}:\n{tb}")
        if streaming:
            for msg in result if isinstance(result, (list, tuple)) else [result]:
                await stream.send_message(msg)
        else:
            await stream.send_message(result)

    handler.__name__ = name
    return handler


def _wire() -> None:
    FakeModal.__abstractmethods__ = frozenset()
    mapping = ModalClientBase.__mapping__(object.__new__(FakeModal))
    for path, h in mapping.items():
        name = path.rsplit("/", 1)[-1]
        streaming = h.cardinality.name.endswith("STREAM") and h.cardinality.name != "STREAM_UNARY"
        impl = getattr(FakeModal, f"_rpc_{name}", None)
        setattr(FakeModal, name, _make_handler(name, impl, streaming))


_wire()

IMPLEMENTED_RPCS = sorted(n[len("_rpc_") :] for n in dir(FakeModal) if n.startswith("_rpc_"))


def reset_modal_client() -> None:
    """Drop the modal client's process-wide caches so the next call connects afresh (to the current
    MODAL_SERVER_URL): the `Client.from_env()` singleton and the environment cache used by deploys."""
    from modal._environments import ENVIRONMENT_CACHE
    from modal._utils.async_utils import synchronizer
    from modal.client import _Client

    client = _Client._client_from_env
    _Client._client_from_env = None
    ENVIRONMENT_CACHE.clear()
    if client is not None:
        try:
            synchronizer.create_blocking(client.close)()
        except Exception:
            pass
