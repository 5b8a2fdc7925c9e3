"""Tests of the fake Modal control plane (tests/fake_modal.py), driven by the real `modal` client."""

import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
import uuid
import warnings

import pytest
from grpclib import Status
from modal_proto import api_pb2

import modal
import modal.experimental
import modal.runner
from modal.exception import AuthError, InvalidError, NotFoundError, UnimplementedError

SAMPLE_APP = '''
import subprocess

import modal

app = modal.App({app_name!r}, tags={{"fleet.spec": "hash-1", "fleet.model": "tiny"}})

image = (
    modal.Image.from_registry("vllm/vllm-openai:v0.33.0")
    .entrypoint([])
    .env({{"VLLM_SERVER_DEV_MODE": "1", "TORCHINDUCTOR_COMPILE_THREADS": "1"}})
    .add_local_file(__file__, "/root/fleet_sample_config.py")
)
hf_cache = modal.Volume.from_name("huggingface-cache", create_if_missing=True)
vllm_cache = modal.Volume.from_name("vllm-cache", create_if_missing=True)


@app.function(image=image, volumes={{"/root/.cache/huggingface": hf_cache}}, timeout=3600)
def prefetch(model_id: str = "tiny") -> None:
    pass


@app.cls(
    image=image,
    gpu="H100:2",
    enable_memory_snapshot=True,
    experimental_options={{"enable_gpu_snapshot": True}},
    volumes={{"/root/.cache/huggingface": hf_cache, "/root/.cache/vllm": vllm_cache}},
    secrets=[modal.Secret.from_name({secret!r})],
    scaledown_window=300,
    min_containers=0,
    max_containers=3,
    timeout=1800,
    startup_timeout=900,
)
@modal.concurrent(max_inputs=4)
class Model:
    @modal.enter(snap=True)
    def start(self):
        self.proc = None

    @modal.enter(snap=False)
    def wake(self):
        pass

    @modal.exit()
    def stop(self):
        pass

    @modal.web_server(8000, startup_timeout=600, label={label!r})
    def serve(self):
        subprocess.Popen(["true"])
'''


def write_app(tmp_path, app_name="fleet-sample", secret="vllm-api-key", label="fleet-sample-serve"):
    path = tmp_path / f"{app_name.replace('-', '_')}_{uuid.uuid4().hex[:6]}.py"
    path.write_text(SAMPLE_APP.format(app_name=app_name, secret=secret, label=label))
    return path


def load_app(path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def service_create(fake, app_name):
    (req,) = [r for r in fake.function_creates_for(app_name) if r.function.function_name == "Model.*"][-1:]
    return req


def test_deploy_app_records_function_create(fake_modal, tmp_path):
    module = load_app(write_app(tmp_path))
    app = module.app
    result = modal.runner.deploy_app(app, name="fleet-sample", environment_name="main")
    assert result.app_id.startswith("ap-")
    assert fake_modal.unimplemented == [] and fake_modal.errors == []

    fn = service_create(fake_modal, "fleet-sample").function
    assert fn.resources.gpu_config.gpu_type == "H100"
    assert fn.resources.gpu_config.count == 2
    assert fn.checkpointing_enabled is True
    assert dict(fn.experimental_options) == {"enable_gpu_snapshot": "True"}
    mounts = {m.mount_path: fake_modal.volume_name(m.volume_id) for m in fn.volume_mounts}
    assert mounts == {"/root/.cache/huggingface": "huggingface-cache", "/root/.cache/vllm": "vllm-cache"}
    assert [fake_modal.secret_name(s) for s in fn.secret_ids] == ["vllm-api-key"]
    assert fn.autoscaler_settings.HasField("min_containers") and fn.autoscaler_settings.min_containers == 0
    assert fn.autoscaler_settings.max_containers == 3
    assert fn.autoscaler_settings.scaledown_window == 300
    assert fn.max_concurrent_inputs == 4
    assert fn.timeout_secs == 1800 and fn.startup_timeout_secs == 900
    webhook = fn.method_definitions["serve"].webhook_config
    assert webhook.type == api_pb2.WEBHOOK_TYPE_WEB_SERVER
    assert webhook.web_server_port == 8000
    assert webhook.web_server_startup_timeout == 600
    assert webhook.requested_suffix == "fleet-sample-serve"

    # The CPU prefetch function: no GPU, one volume, its own timeout.
    (prefetch,) = [r.function for r in fake_modal.calls("FunctionCreate") if r.function.function_name == "prefetch"]
    assert prefetch.resources.gpu_config.count == 0
    assert [m.mount_path for m in prefetch.volume_mounts] == ["/root/.cache/huggingface"]
    assert prefetch.timeout_secs == 3600

    # Lifecycle hooks travel only inside the uploaded source file.
    uploaded = b"".join(c for m in fn.mount_ids for c in fake_modal.mount_files(m).values() if c)
    assert b"@modal.enter(snap=True)" in uploaded and b"@modal.exit()" in uploaded

    # One image chain (registry, entrypoint, env) shared by both functions.
    assert fake_modal.distinct_images() == 3
    assert {r.function.image_id for r in fake_modal.calls("FunctionCreate")} == {fn.image_id}

    # The URL from FunctionCreate's reply, read back from elsewhere.
    url = "https://fleet-test--fleet-sample-serve.modal.run"
    assert fake_modal.web_url("fleet-sample", "Model", "serve") == url
    assert module.Model().serve.get_web_url() == url  # local handle, no extra call
    reset_n = len(fake_modal.requests)
    assert modal.Cls.from_name("fleet-sample", "Model")().serve.get_web_url() == url
    assert fake_modal.method_names()[reset_n:] == ["ClassGet", "FunctionGet"]

    fake_app = fake_modal.app("fleet-sample")
    assert fake_app.app_id == result.app_id and fake_app.state_name == "deployed"
    assert fake_app.tags == {"fleet.spec": "hash-1", "fleet.model": "tiny"}
    assert set(fake_app.function_ids) == {"prefetch", "Model.*"} and set(fake_app.class_ids) == {"Model"}


def test_redeploy_reuses_app_and_tags(fake_modal, tmp_path):
    path = write_app(tmp_path)
    app = load_app(path).app
    app.deploy(name="fleet-sample")
    first = fake_modal.app("fleet-sample")
    first_ids = dict(first.function_ids)

    app2 = load_app(path).app  # a fresh process would re-import the module
    app2.deploy(name="fleet-sample")
    assert len(fake_modal.calls("AppCreate")) == 1
    assert fake_modal.app("fleet-sample").app_id == first.app_id
    assert fake_modal.app("fleet-sample").version == 2
    creates = fake_modal.calls("FunctionCreate")[2:]
    assert {r.existing_function_id for r in creates} == set(first_ids.values())
    assert fake_modal.app("fleet-sample").function_ids == first_ids
    # Tags are only taken from modal.App(..., tags=) on the first create; set_tags/get_tags after.
    assert app2.get_tags() == {"fleet.spec": "hash-1", "fleet.model": "tiny"}
    app2.set_tags({"fleet.spec": "hash-2"})
    assert modal.App.lookup("fleet-sample").get_tags() == {"fleet.spec": "hash-2"}
    assert fake_modal.calls("AppSetTags")[-1].tags == {"fleet.spec": "hash-2"}
    # modal 1.6.4 does send the constructor tags in AppPublishRequest.tags on every deploy; the fake (like
    # facts.md says of the real server) only applies tags from AppCreate and AppSetTags.
    assert dict(fake_modal.calls("AppPublish")[-1].tags) == {"fleet.spec": "hash-1", "fleet.model": "tiny"}

    # After a stop, a deploy of the same name creates a new app (with the constructor tags).
    modal.App.lookup("fleet-sample").stop()
    load_app(path).app.deploy(name="fleet-sample")
    assert fake_modal.app("fleet-sample").app_id != first.app_id
    assert len(fake_modal.calls("AppCreate")) == 2


def test_read_side_lookup_list_autoscaler_stop(fake_modal, tmp_path):
    load_app(write_app(tmp_path)).app.deploy()
    looked_up = modal.App.lookup("fleet-sample", environment_name="main")
    assert looked_up.app_id == fake_modal.app("fleet-sample").app_id

    assert [a.name for a in modal.experimental.list_deployed_apps()] == ["fleet-sample"]
    assert [a.name for a in modal.Environment.from_name("main").apps.list()] == ["fleet-sample"]

    model = modal.Cls.from_name("fleet-sample", "Model")
    with warnings.catch_warnings():  # 1.6.4 warns from the Function method that Cls.update_autoscaler calls
        warnings.simplefilter("ignore")
        settings = model().update_autoscaler(min_containers=1)
    assert settings.min_containers == 1 and settings.max_containers == 3
    req = fake_modal.calls("FunctionUpdateSchedulingParams")[-1]
    assert req.function_id == fake_modal.app("fleet-sample").function_ids["Model.*"]
    assert req.settings.min_containers == 1

    looked_up.stop()
    assert fake_modal.app("fleet-sample").state_name == "stopped"
    assert modal.experimental.list_deployed_apps() == []
    with pytest.raises(NotFoundError):
        modal.App.lookup("fleet-sample")


def modal_cli(*args, timeout=60):
    proc = subprocess.run(
        [sys.executable, "-m", "modal", *args], capture_output=True, text=True, timeout=timeout, env=os.environ.copy()
    )
    assert proc.returncode == 0, f"modal {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_cli_deploy_list_containers_stop(fake_modal, tmp_path):
    path = write_app(tmp_path, app_name="fleet-cli")
    out = modal_cli("deploy", str(path))
    assert "https://fleet-test--fleet-sample-serve.modal.run" in out, out
    app = fake_modal.app("fleet-cli")
    assert app.state_name == "deployed" and fake_modal.unimplemented == []
    fn = service_create(fake_modal, "fleet-cli").function
    assert fn.resources.gpu_config.count == 2 and fn.checkpointing_enabled

    listed = json.loads(modal_cli("app", "list", "--json"))
    assert [(row["description"], row["state"]) for row in listed] == [("fleet-cli", "deployed")]

    task_id = fake_modal.add_container("fleet-cli")
    listed = json.loads(modal_cli("container", "list", "--json"))
    assert [row["container_id"] for row in listed] == [task_id], listed
    modal_cli("container", "stop", task_id, "-y")
    assert fake_modal.calls("ContainerStop")[-1].task_id == task_id and task_id not in fake_modal.tasks

    modal_cli("app", "stop", "fleet-cli", "-y")
    assert fake_modal.app("fleet-cli").state_name == "stopped"
    assert fake_modal.calls("AppStop")[-1].source == api_pb2.APP_STOP_SOURCE_CLI


def test_failing_deploy(fake_modal, tmp_path):
    fake_modal.fail_deploy_for("fleet-bad", "GPU type 'H100' is not available to this workspace")
    app = load_app(write_app(tmp_path, app_name="fleet-bad")).app
    with pytest.raises(InvalidError, match="not available to this workspace"):
        modal.runner.deploy_app(app)
    assert fake_modal.calls("AppClientDisconnect")
    assert fake_modal.app("fleet-bad").state_name == "stopped"
    assert modal.experimental.list_deployed_apps() == []

    fake_modal.fail_deploy_for("fleet-bad2", "boom", rpc="FunctionCreate", status=Status.FAILED_PRECONDITION)
    with pytest.raises(modal.exception.ConflictError, match="boom"):
        modal.runner.deploy_app(load_app(write_app(tmp_path, app_name="fleet-bad2")).app)


def test_missing_secret(fake_modal, tmp_path):
    assert modal.Secret.from_name("vllm-api-key").hydrate().object_id.startswith("st-")
    with pytest.raises(NotFoundError, match="no-such-secret"):
        modal.Secret.from_name("no-such-secret").hydrate()
    app = load_app(write_app(tmp_path, app_name="fleet-nosecret", secret="no-such-secret")).app
    with pytest.raises(NotFoundError, match="no-such-secret"):
        modal.runner.deploy_app(app)
    assert fake_modal.deployed_apps() == []


def test_deploy_delay_does_not_serialize_deploys(fake_modal, tmp_path):
    fake_modal.deploy_delay = 0.6
    apps = [load_app(write_app(tmp_path, app_name=f"fleet-par{i}", label=f"par{i}")).app for i in range(3)]
    errors = []

    def deploy(app):
        try:
            modal.runner.deploy_app(app)
        except Exception as exc:  # pragma: no cover
            errors.append(exc)

    t0 = time.monotonic()
    threads = [threading.Thread(target=deploy, args=(a,)) for a in apps]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    assert errors == []
    assert sorted(a.name for a in fake_modal.deployed_apps()) == ["fleet-par0", "fleet-par1", "fleet-par2"]
    assert 0.6 <= elapsed < 1.5


def test_unimplemented_rpc_fails_fast_and_is_recorded(fake_modal):
    t0 = time.monotonic()
    with pytest.raises(UnimplementedError):
        modal.Queue.from_name("some-queue", create_if_missing=True).hydrate()
    assert time.monotonic() - t0 < 5
    assert fake_modal.unimplemented == ["QueueGetOrCreate"]


def test_token_missing_fails_locally(fake_modal, monkeypatch):
    monkeypatch.delenv("MODAL_TOKEN_ID")
    monkeypatch.delenv("MODAL_TOKEN_SECRET")
    with pytest.raises(AuthError, match="Token missing"):
        modal.App.lookup("anything")
    assert fake_modal.requests == []


def test_raw_request_without_token_is_unauthenticated(fake_modal):
    import asyncio

    from grpclib import GRPCError
    from grpclib.client import Channel
    from modal_proto.api_grpc import ModalClientStub

    async def call():
        channel = Channel("127.0.0.1", fake_modal.port)
        try:
            await ModalClientStub(channel).AppList(api_pb2.AppListRequest())
        finally:
            channel.close()

    with pytest.raises(GRPCError) as info:
        asyncio.run(call())
    assert info.value.status == Status.UNAUTHENTICATED
    assert fake_modal.method_names() == ["AppList"]


FUNCTION_APP = '''
import modal

app = modal.App({app_name!r})
image = modal.Image.debian_slim()
hf_cache = modal.Volume.from_name("huggingface-cache", create_if_missing=True)


@app.function(image=image, volumes={{"/root/.cache/huggingface": hf_cache}}, timeout=3600)
def download_weights(model_id: str = "tiny") -> str:
    raise AssertionError("user code must not run")
'''


def load_function_app(tmp_path, app_name):
    path = tmp_path / f"fn_app_{uuid.uuid4().hex[:6]}.py"
    path.write_text(FUNCTION_APP.format(app_name=app_name))
    return load_app(path)


def test_remote_call_of_deployed_function_returns_canned_result(fake_modal, tmp_path):
    module = load_function_app(tmp_path, "fleet-weights")
    module.app.deploy()
    weights = "/root/.cache/huggingface/hub/models--x"
    fake_modal.function_results["download_weights"] = weights

    assert module.download_weights.remote() == weights
    assert module.download_weights.remote("other-model") == weights
    by_name = modal.Function.from_name("fleet-weights", "download_weights")
    assert by_name.remote(model_id="x") == weights
    assert fake_modal.function_calls == [("fleet-weights", "download_weights")] * 3
    assert len(fake_modal.calls("FunctionMap")) == 3
    assert fake_modal.unimplemented == [] and fake_modal.errors == []

    del fake_modal.function_results["download_weights"]
    assert module.download_weights.remote() is None  # default result


def test_failing_remote_call_raises(fake_modal, tmp_path):
    module = load_function_app(tmp_path, "fleet-weights")
    module.app.deploy()
    fake_modal.fail_call_for("fleet-weights", "download_weights", "disk quota exceeded")
    fake_modal.fail_call_for("other-app", "download_weights", "not this one")

    with pytest.raises(modal.exception.RemoteError, match="disk quota exceeded"):
        module.download_weights.remote()
    with pytest.raises(modal.exception.RemoteError, match="disk quota exceeded"):
        modal.Function.from_name("fleet-weights", "download_weights").remote()
    assert fake_modal.function_calls == [("fleet-weights", "download_weights")] * 2

    fake_modal.fail_call_for("fleet-weights", "download_weights", "boom", exception=ValueError("boom"))
    with pytest.raises(ValueError, match="boom"):
        module.download_weights.remote()

    fake_modal.clear_failures()
    assert module.download_weights.remote() is None
    assert fake_modal.unimplemented == [] and fake_modal.errors == []


def test_modal_dict_round_trip_and_put_if_absent(fake_modal):
    """The real modal.Dict against the fake: the atomic put-if-absent a lock needs, and every read path."""
    import modal

    with pytest.raises(modal.exception.NotFoundError):
        modal.Dict.from_name("absent").len()
    store = modal.Dict.from_name("fleet-keys", create_if_missing=True)
    assert store.put("lock", {"holder": "a"}, skip_if_exists=True) is True
    assert store.put("lock", {"holder": "b"}, skip_if_exists=True) is False
    assert store.get("lock") == {"holder": "a"}
    store.update({"k1": 1, "k2": 2})
    assert store.len() == 3 and store.contains("k1") and not store.contains("k3")
    assert dict(store.items()) == {"lock": {"holder": "a"}, "k1": 1, "k2": 2}
    assert store.pop("k1") == 1 and store.get("k1") is None
    assert sorted(store.keys()) == ["k2", "lock"]
    store.clear()
    assert store.len() == 0
