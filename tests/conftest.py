import pytest

try:
    from fake_modal import FakeModal, reset_modal_client
except ImportError:  # tests/ imported as a package
    from .fake_modal import FakeModal, reset_modal_client


@pytest.fixture
def fake_modal(monkeypatch, tmp_path):
    """A running FakeModal (tests/fake_modal.py) with the modal client, in-process and in subprocesses, pointed
    at it: fresh server and fresh modal client per test (starting the server takes a few ms)."""
    with FakeModal(existing_secrets={"vllm-api-key", "huggingface-secret"}) as fake:
        for key, value in fake.client_env().items():
            monkeypatch.setenv(key, value)
        monkeypatch.delenv("MODAL_ENVIRONMENT", raising=False)
        monkeypatch.delenv("MODAL_PROFILE", raising=False)
        monkeypatch.setenv("MODAL_CONFIG_PATH", str(tmp_path / "modal.toml"))  # read by subprocesses
        monkeypatch.setattr("modal.config._user_config", {})  # already read at import in this process
        reset_modal_client()
        yield fake
        reset_modal_client()
