"""`fleet lock` and catalog/fleet.lock, with the real huggingface_hub client against a local hub (tests/fake_hub.py)."""

from __future__ import annotations

import ast
import shutil
import socket
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from catalog_builder import PINNED, model, write_catalog
from fake_hub import TOKEN_WITH_ACCESS, TOKEN_WITHOUT_ACCESS, FakeHub, add_real_shapes, real_shapes, scaled
from fleet.catalog import load_catalog
from fleet.cli import main
from fleet.hub import Hub
from fleet.lock import (
    Lock,
    LockEntry,
    parse_lock,
    read_lock,
    render_lock,
    select_files,
)
from fleet.render import render_app
from fleet.weights import WeightsError, fetch_locked

REPO = Path(__file__).resolve().parent.parent
SCALE = 10**6  # weight files a million times smaller than the real ones: kilobytes, really downloaded


def run(*args: str, catalog: Path):
    return CliRunner().invoke(main, [*args, "--catalog", str(catalog)], catch_exceptions=False)


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """The fake hub holding the shipped catalog's repositories (and one with both formats); the client
    pointed at it, with no token and an empty cache of its own."""
    import huggingface_hub.constants as hf_constants

    with FakeHub() as fake:
        fake.commits = add_real_shapes(fake, scale=SCALE)
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        monkeypatch.delenv("HF_TOKEN", raising=False)
        monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
        monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
        monkeypatch.setattr(hf_constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
        monkeypatch.setattr(hf_constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no-tokens"))
        yield fake


@pytest.fixture
def catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the shipped catalog, with paths shown relative to tmp_path."""
    monkeypatch.chdir(tmp_path)
    shutil.copytree(REPO / "catalog", tmp_path / "catalog")
    (tmp_path / "catalog" / "fleet.lock").unlink(missing_ok=True)
    return tmp_path / "catalog"


def lock_text(catalog: Path) -> str:
    return (catalog / "fleet.lock").read_text(encoding="utf-8")


def set_key(path: Path, section: str, key: str, value: object) -> None:
    data = yaml.safe_load(path.read_text())
    data[section][key] = value
    path.write_text("# yaml-language-server: $schema=../fleet/schema/model.schema.json\n" + yaml.safe_dump(data))


# --- which files ----------------------------------------------------------------------------------------


def sizes_of(repo_id: str) -> dict[str, int]:
    files, _ = real_shapes()[repo_id]
    return {p: c if isinstance(c, int) else len(c) for p, c in files.items()}


def weight_map_of(repo_id: str, index: str = "model.safetensors.index.json") -> dict[str, str]:
    files, _ = real_shapes()[repo_id]
    return yaml.safe_load(files[index])["weight_map"]


def test_safetensors_win_over_bin_and_the_other_index_is_left_out() -> None:
    repo = "mistralai/Mistral-7B-Instruct-v0.2"
    files = select_files(sizes_of(repo), "auto", weight_map_of(repo))
    assert [f for f in files if f.endswith((".safetensors", ".bin"))] == [
        f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)
    ]
    assert {"config.json", "tokenizer.json", "tokenizer.model", "generation_config.json"} <= set(files)
    # vLLM fetches every non-weight file at boot (its tokenizer snapshot), both indexes and the docs included.
    assert {"model.safetensors.index.json", "pytorch_model.bin.index.json", "README.md", "LICENSE"} <= set(files)


def test_bin_when_asked_for_pt_format_or_when_there_is_nothing_else() -> None:
    sizes = {"config.json": 10, "pytorch_model.bin": 100, "training_args.bin": 5, "logo.png": 3}
    assert select_files(sizes, "auto") == ["config.json", "pytorch_model.bin"]


def test_original_dir_and_consolidated_duplicates_are_left_out() -> None:
    repo = "meta-llama/Llama-3.1-8B-Instruct"
    files = select_files(sizes_of(repo), "auto", weight_map_of(repo))
    assert [f for f in files if f.startswith("original/")] == ["original/params.json", "original/tokenizer.model"]
    assert len([f for f in files if f.endswith(".safetensors")]) == 4
    # Only the shards the index names: a stray consolidated file beside them is not loaded by vLLM.
    sizes = {**sizes_of(repo), "model.safetensors": 16 * 10**9}
    assert "model.safetensors" not in select_files(sizes, "safetensors", weight_map_of(repo))


def test_mistral_format_takes_the_consolidated_file_and_its_params() -> None:
    repo = "mistralai/Mistral-Small-3.2-24B-Instruct-2506"
    for load_format in ("mistral", "auto"):  # auto: vLLM picks mistral when consolidated*.safetensors exist
        files = select_files(sizes_of(repo), load_format)
        assert [f for f in files if f.endswith(".safetensors")] == ["consolidated.safetensors"]
        assert {"params.json", "tekken.json"} <= set(files)
    hf = select_files(sizes_of(repo), "safetensors", weight_map_of(repo))
    assert "consolidated.safetensors" not in hf and len([f for f in hf if f.endswith(".safetensors")]) == 10


def test_index_naming_files_the_repository_lacks_is_an_error() -> None:
    from fleet.lock import LockError

    with pytest.raises(LockError, match="names files the repository lacks: model-9.safetensors"):
        sizes = {"model-1.safetensors": 1, "model-2.safetensors": 1, "model.safetensors.index.json": 1}
        select_files(sizes, "auto", {"w": "model-9.safetensors"})


# --- the lock file --------------------------------------------------------------------------------------


def test_lock_text_round_trips_and_is_stable() -> None:
    entry = LockEntry("b", "Org/B", "main", "a" * 40, "auto", (("config.json", 3), ("m.safetensors", 10)))
    other = LockEntry("a", "Org/A", PINNED, PINNED, "mistral", (("x: y.json", 1),))
    text = render_lock(Lock({"b": entry, "a": other}))
    assert text.startswith("# Generated by `fleet lock`")
    assert text.index("  a:") < text.index("  b:")  # sorted by name, whatever the insertion order
    parsed = parse_lock(text)
    assert {n: e.files for n, e in parsed.entries.items()} == {"a": other.files, "b": entry.files}
    assert render_lock(parsed) == text
    assert "total_bytes: 13" in text


@pytest.mark.parametrize(
    ("commit", "files", "message"),
    [
        ("main", "{config.json: 3}", r"fleet.lock:6: models.a.commit: expected a 40-character commit hash"),
        ("a" * 40, "{../../etc/passwd: 3}", r"fleet.lock:8: models.a.files: '../../etc/passwd' is not a path inside"),
        ("a" * 40, "{/etc/passwd: 3}", r"models.a.files: '/etc/passwd' is not a path inside the repository"),
    ],
)
def test_a_hand_edited_lock_cannot_point_outside(tmp_path: Path, commit: str, files: str, message: str) -> None:
    path = tmp_path / "fleet.lock"
    path.write_text(f"version: 1\nmodels:\n  a:\n    id: Org/A\n    revision: main\n    commit: {commit}\n"
                    f"    load_format: auto\n    files: {files}\n")
    with pytest.raises(Exception, match=message):
        read_lock(path)


def test_a_broken_lock_names_file_line_and_key(tmp_path: Path) -> None:
    path = tmp_path / "fleet.lock"
    path.write_text("version: 1\nmodels:\n  a:\n    id: Org/A\n    revision: main\n    commit: " + "a" * 40 + "\n"
                    "    load_format: auto\n    files: {config.json: -3}\n")
    with pytest.raises(Exception, match=r"fleet.lock:8: models.a.files: expected a mapping of file path to size"):
        read_lock(path)


# --- fleet lock against the hub ---------------------------------------------------------------------------


def test_lock_pins_every_shipped_model_with_its_commit_files_and_sizes(
    hub: FakeHub, catalog: Path, monkeypatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN_WITH_ACCESS)
    result = run("lock", catalog=catalog)
    assert result.exit_code == 0, result.output + result.stderr
    assert "catalog/fleet.lock written: 5 locked" in result.output
    lock = read_lock(catalog / "fleet.lock")
    entry = lock.entries["qwen3-4b"]
    assert entry.commit == hub.commits["Qwen/Qwen3-4B-Instruct-2507"] and entry.revision == "main"
    files = dict(entry.files)
    assert files["model-00001-of-00003.safetensors"] == 8_044_981_760 // 3 // SCALE
    assert "README.md" in files  # vLLM fetches it with the tokenizer files
    assert lock.entries["mistral-small-24b"].load_format == "mistral"
    assert not [f for f, _ in lock.entries["llama3.1-8b"].files if f.startswith("original/") and f.endswith(".pth")]
    # Only metadata was read: the model info of each, and the safetensors index where vLLM would read one.
    assert not [p for p in hub.paths() if "/cdn/" in p]


def test_second_lock_asks_nothing_and_rewrites_nothing(hub: FakeHub, catalog: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN_WITH_ACCESS)
    run("lock", catalog=catalog)
    before, stamp = lock_text(catalog), (catalog / "fleet.lock").stat().st_mtime_ns
    hub.requests.clear()
    result = run("lock", catalog=catalog)
    assert result.exit_code == 0 and "catalog/fleet.lock unchanged: 5 unchanged" in result.output
    assert hub.requests == [] and lock_text(catalog) == before
    assert (catalog / "fleet.lock").stat().st_mtime_ns == stamp


def test_round_trip_edit_one_model_only_its_section_changes(hub: FakeHub, catalog: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN_WITH_ACCESS)
    run("lock", catalog=catalog)
    before = lock_text(catalog).splitlines()
    files = scaled(real_shapes()["Qwen/Qwen3-4B-Instruct-2507"][0], SCALE)
    v2 = hub.push("Qwen/Qwen3-4B-Instruct-2507", {**files, "model-00003-of-00003.safetensors": 123}, branch="v2")
    set_key(catalog / "qwen3-4b.yaml", "model", "revision", "v2")
    hub.requests.clear()
    result = run("lock", catalog=catalog)
    assert result.exit_code == 0 and "1 updated, 4 unchanged" in result.output
    assert {p.split("?")[0] for p in hub.paths("GET") if p.startswith("/api/")} == {
        "/api/models/Qwen/Qwen3-4B-Instruct-2507/revision/v2"
    }
    after = lock_text(catalog).splitlines()
    changed = [(a, b) for a, b in zip(before, after) if a != b]
    assert len(before) == len(after)
    assert sorted(b.split(":")[0].strip() for _, b in changed) == sorted(
        ["revision", "commit", "total_bytes", "model-00003-of-00003.safetensors"]
    )
    section = after[after.index("  qwen3-4b:") :][:14]
    assert f"    commit: {v2}" in section and "    revision: v2" in section


def test_upgrade_moves_a_branch_to_its_new_commit(hub: FakeHub, catalog: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN_WITH_ACCESS)
    run("lock", catalog=catalog)
    old = hub.commits["Qwen/Qwen3-4B-Instruct-2507"]
    files = scaled(real_shapes()["Qwen/Qwen3-4B-Instruct-2507"][0], SCALE)
    new = hub.push("Qwen/Qwen3-4B-Instruct-2507", {**files, "config.json": b'{"changed": true}'})
    assert "1 unchanged" in run("lock", "qwen3-4b", catalog=catalog).output  # no --upgrade: stays put
    result = run("lock", "qwen3-4b", "--upgrade", catalog=catalog)
    assert result.exit_code == 0, result.output + result.stderr
    assert f"qwen3-4b  updated  {old[:12]} -> {new[:12]}" in result.output
    assert read_lock(catalog / "fleet.lock").entries["qwen3-4b"].commit == new
    assert len(read_lock(catalog / "fleet.lock").entries) == 5  # the others kept


def test_gated_without_token_fails_that_model_only(hub: FakeHub, catalog: Path) -> None:
    result = run("lock", catalog=catalog)
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "error: llama3.1-8b: meta-llama/Llama-3.1-8B-Instruct is gated on the hub: set HF_TOKEN to a token that "
        "was granted access"
    ]
    assert "4 locked, 1 failed" in result.output
    assert set(read_lock(catalog / "fleet.lock").entries) == {
        "mistral-small-24b", "qwen3-235b-a22b", "qwen3-4b", "qwen3.6-27b"
    }


def test_gated_with_a_token_without_access(hub: FakeHub, catalog: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN_WITHOUT_ACCESS)
    result = run("lock", "llama3.1-8b", catalog=catalog)
    assert result.exit_code == 1
    assert "gated and your token has no access: request it at " in result.stderr
    assert TOKEN_WITHOUT_ACCESS not in result.output + result.stderr


def test_missing_repository_and_revision_each_get_one_line(hub: FakeHub, catalog: Path) -> None:
    set_key(catalog / "qwen3-4b.yaml", "model", "id", "Qwen/No-Such-Model")
    set_key(catalog / "qwen3.6-27b.yaml", "model", "revision", "no-such-branch")
    result = run("lock", "qwen3-4b", "qwen3.6-27b", "mistral-small-24b", catalog=catalog)
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"error: qwen3-4b: repository 'Qwen/No-Such-Model' not found on {hub.url} (check model.id; a private "
        "repository needs HF_TOKEN)",
        "error: qwen3.6-27b: Qwen/Qwen3.6-27B-FP8 has no revision 'no-such-branch' (check model.revision)",
    ]
    assert set(read_lock(catalog / "fleet.lock").entries) == {"mistral-small-24b"}


def test_unreachable_hub_is_one_line_per_model(catalog: Path, monkeypatch) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    result = run("lock", "qwen3-4b", "qwen3.6-27b", catalog=catalog)
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 2 and all(f"cannot reach the hub at http://127.0.0.1:{port}" in line for line in lines)


def test_hub_answering_5xx_is_unreachable(hub: FakeHub, catalog: Path) -> None:
    hub.down = True
    result = run("lock", "qwen3-4b", catalog=catalog)
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"error: qwen3-4b: the hub at {hub.url} answered 503 for Qwen/Qwen3-4B-Instruct-2507: try again later"
    )


def test_removed_model_leaves_the_lock_on_a_whole_catalog_lock(hub: FakeHub, catalog: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN_WITH_ACCESS)
    run("lock", catalog=catalog)
    (catalog / "qwen3-4b.yaml").unlink()
    result = run("lock", catalog=catalog)
    assert "qwen3-4b           removed" in result.output
    assert "qwen3-4b" not in read_lock(catalog / "fleet.lock").entries


# --- validate and render read the lock ---------------------------------------------------------------------


def locked_catalog(hub: FakeHub, catalog: Path, monkeypatch) -> Path:
    monkeypatch.setenv("HF_TOKEN", TOKEN_WITH_ACCESS)
    assert run("lock", catalog=catalog).exit_code == 0
    return catalog


def test_locked_models_no_longer_warn_about_main(hub: FakeHub, catalog: Path, monkeypatch) -> None:
    before = run("validate", catalog=catalog)
    assert before.stderr.count("is not a commit") == 5
    locked_catalog(hub, catalog, monkeypatch)
    result = run("validate", "--strict", catalog=catalog)
    assert result.exit_code == 0, result.stderr
    assert "5 model file(s) checked: valid, 0 error(s), 0 warning(s)" in result.output


def test_model_missing_from_the_lock_warns_and_fails_strict(hub: FakeHub, catalog: Path, monkeypatch) -> None:
    locked_catalog(hub, catalog, monkeypatch)
    write_catalog(catalog, {"extra": model("extra")}, settings=(catalog / "_fleet.yaml").read_text())
    result = run("validate", catalog=catalog)
    assert result.exit_code == 0
    assert "catalog/extra.yaml:1: name: warning: not in catalog/fleet.lock: run `fleet lock extra` to pin its " \
           "commit and files" in result.stderr
    assert run("validate", "--strict", catalog=catalog).exit_code == 1


def test_model_locked_for_another_revision_warns_at_its_line_and_serves_the_catalogs(
    hub: FakeHub, catalog: Path, monkeypatch
) -> None:
    locked_catalog(hub, catalog, monkeypatch)
    set_key(catalog / "qwen3-4b.yaml", "model", "revision", PINNED)
    result = run("validate", catalog=catalog)
    line = (catalog / "qwen3-4b.yaml").read_text().splitlines().index(f"  revision: {PINNED}") + 1
    old = hub.commits["Qwen/Qwen3-4B-Instruct-2507"]
    assert (
        f"catalog/qwen3-4b.yaml:{line}: model.revision: warning: catalog/fleet.lock: locked for revision 'main' "
        f"(commit {old[:12]}), the catalog names '{PINNED}': run `fleet lock qwen3-4b`; until then it serves "
        f"'{PINNED}'"
    ) in result.stderr
    spec = {m.name: m for m in load_catalog(catalog).models}["qwen3-4b"]
    assert spec.locked is None and spec.served_revision == PINNED


def test_changing_the_load_format_makes_the_entry_stale(hub: FakeHub, catalog: Path, monkeypatch) -> None:
    locked_catalog(hub, catalog, monkeypatch)
    set_key(catalog / "mistral-small-24b.yaml", "vllm", "args", ["--load-format", "safetensors"])
    result = run("validate", catalog=catalog)
    assert "vllm.args: warning: catalog/fleet.lock: locked for load format 'mistral', vllm.args now ask for " \
           "'safetensors'" in result.stderr
    assert "1 updated, 4 unchanged" in run("lock", catalog=catalog).output


def test_unreadable_lock_warns_with_its_line_and_lock_rebuilds_it(hub: FakeHub, catalog: Path, monkeypatch) -> None:
    locked_catalog(hub, catalog, monkeypatch)
    (catalog / "fleet.lock").write_text("version: 1\nmodels:\n<<<<<<< HEAD\n")
    result = run("validate", catalog=catalog)
    assert "catalog/fleet.lock:" in result.stderr
    assert "the lock is ignored until `fleet lock` regenerates it" in result.stderr
    relocked = run("lock", catalog=catalog)
    assert relocked.exit_code == 0 and "rebuilt from the catalog" in relocked.stderr
    assert len(read_lock(catalog / "fleet.lock").entries) == 5


def test_entry_for_a_model_no_longer_in_the_catalog_warns(hub: FakeHub, catalog: Path, monkeypatch) -> None:
    locked_catalog(hub, catalog, monkeypatch)
    (catalog / "qwen3-4b.yaml").unlink()
    result = run("validate", catalog=catalog)
    assert "catalog/fleet.lock:" in result.stderr
    warning = "models.qwen3-4b: warning: 'qwen3-4b' is locked but not in the catalog: `fleet lock` drops it"
    assert warning in result.stderr


def test_fit_check_uses_the_locked_bytes(hub: FakeHub, catalog: Path, monkeypatch) -> None:
    locked_catalog(hub, catalog, monkeypatch)
    lock = read_lock(catalog / "fleet.lock")
    entry = lock.entries["qwen3-4b"]
    big = LockEntry(entry.name, entry.model_id, entry.revision, entry.commit, entry.load_format,
                    entry.files + (("model-extra.safetensors", 30 * 10**9),))
    (catalog / "fleet.lock").write_text(render_lock(Lock({**lock.entries, "qwen3-4b": big})))
    result = run("validate", catalog=catalog)
    assert "gpu: warning: the weights (~30 GB) do not fit in 1 x L4" in result.stderr  # params_b x dtype says 8 GB


def test_rendered_app_serves_the_locked_commit_and_lists_the_files(hub: FakeHub, catalog: Path, monkeypatch) -> None:
    locked_catalog(hub, catalog, monkeypatch)
    spec = {m.name: m for m in load_catalog(catalog).models}["qwen3-4b"]
    app = render_app(spec)
    constants = {
        node.targets[0].id: ast.literal_eval(node.value)
        for node in ast.parse(app.source).body
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") in ("LOCKED_COMMIT", "LOCKED_FILES")
    }
    assert constants == {"LOCKED_COMMIT": spec.locked.commit, "LOCKED_FILES": spec.locked.files}
    assert f"    revision={spec.locked.commit!r}," in app.source
    assert "weights.fetch_locked(ENGINE.model, LOCKED_COMMIT, LOCKED_FILES)" in app.source
    assert "snapshot_download" not in app.source
    unlocked = render_app(load_catalog(REPO / "catalog").models[0])
    assert "LOCKED_COMMIT" not in unlocked.source and "snapshot_download" in unlocked.source


def test_hostile_file_names_in_the_lock_stay_data(hub: FakeHub, catalog: Path, monkeypatch) -> None:
    locked_catalog(hub, catalog, monkeypatch)
    lock = read_lock(catalog / "fleet.lock")
    entry = lock.entries["qwen3-4b"]
    hostile = '"); import os; os.system("echo pwned") #\n"""\'.json'  # quotes and a line break
    evil = LockEntry(entry.name, entry.model_id, entry.revision, entry.commit, entry.load_format,
                     tuple(sorted(entry.files + ((hostile, 1),))))
    (catalog / "fleet.lock").write_text(render_lock(Lock({**lock.entries, "qwen3-4b": evil})))
    spec = {m.name: m for m in load_catalog(catalog).models}["qwen3-4b"]
    source = render_app(spec).source
    tree = ast.parse(source)
    files = next(
        n.value for n in tree.body if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "LOCKED_FILES"
    )
    assert (hostile, 1) in ast.literal_eval(files)
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.Import) and n.names[0].name == "os"]


def test_locked_app_deploys_with_the_weights_module_shipped(
    hub: FakeHub, catalog: Path, monkeypatch, fake_modal, tmp_path
) -> None:
    locked_catalog(hub, catalog, monkeypatch)
    result = run("deploy", "qwen3-4b", "--skip-weights", "--out", str(tmp_path / "apps"), catalog=catalog)
    assert result.exit_code == 0, result.output + result.stderr
    shipped: dict[str, bytes | None] = {}
    for mount_id in fake_modal.mounts:
        shipped.update(fake_modal.mount_files(mount_id))
    assert shipped["/root/fleet/weights.py"] == (REPO / "fleet" / "weights.py").read_bytes()


# --- download_weights: exactly the locked files -------------------------------------------------------------


def test_fetch_locked_downloads_only_the_locked_files_and_checks_sizes(
    hub: FakeHub, catalog: Path, monkeypatch, tmp_path
) -> None:
    locked_catalog(hub, catalog, monkeypatch)
    entry = read_lock(catalog / "fleet.lock").entries["llama3.1-8b"]
    hub.bytes_served.clear()
    folder = fetch_locked(entry.model_id, entry.commit, entry.files, endpoint=hub.url, cache_dir=str(tmp_path / "vol"))
    on_disk = sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*") if p.is_file())
    assert on_disk == sorted(f for f, _ in entry.files)
    assert hub.bytes_served["meta-llama/Llama-3.1-8B-Instruct"] == entry.total_bytes
    # Again: all in the cache, nothing fetched.
    hub.bytes_served.clear()
    fetch_locked(entry.model_id, entry.commit, entry.files, endpoint=hub.url, cache_dir=str(tmp_path / "vol"))
    assert hub.bytes_served["meta-llama/Llama-3.1-8B-Instruct"] == 0


def test_fetch_locked_refuses_a_file_whose_size_changed(hub: FakeHub, tmp_path) -> None:
    repo = "Qwen/Qwen3-4B-Instruct-2507"
    commit = hub.commits[repo]
    message = r"sizes differ from catalog/fleet.lock: config.json \(\d+ bytes, locked 1\)"
    with pytest.raises(WeightsError, match=message):
        fetch_locked(repo, commit, (("config.json", 1),), endpoint=hub.url, cache_dir=str(tmp_path / "vol"))


def test_hub_files_at_reads_commit_and_sizes(hub: FakeHub) -> None:
    repo = Hub().files_at("Qwen/Qwen3-4B-Instruct-2507", "main")
    assert repo.commit == hub.commits["Qwen/Qwen3-4B-Instruct-2507"]
    assert repo.sizes["model-00003-of-00003.safetensors"] == (8_044_981_760 - 2 * (8_044_981_760 // 3)) // SCALE


# --- fleet new ---------------------------------------------------------------------------------------------


@pytest.fixture
def empty_catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return write_catalog(tmp_path / "catalog", {}, settings=(REPO / "catalog" / "_fleet.yaml").read_text())


def test_new_writes_an_entry_that_validates_and_is_locked(hub: FakeHub, empty_catalog: Path) -> None:
    result = run("new", "Qwen/Qwen3-4B-Instruct-2507", catalog=empty_catalog)
    assert result.exit_code == 0, result.output + result.stderr
    commit = hub.commits["Qwen/Qwen3-4B-Instruct-2507"]
    weights = sum(v for k, v in scaled(real_shapes()["Qwen/Qwen3-4B-Instruct-2507"][0], SCALE).items()
                  if k.endswith(".safetensors"))
    assert result.output.splitlines()[1:] == [
        "chose L4 x1 ($0.80/h): 24 GB x 1 x 0.85 = 20.4 GB usable >= 6.8 GB needed",
        "next cheaper: T4 x1 ($0.59/h): no bf16 support (compute capability 7.5 < 8.0)",
        f"wrote catalog/qwen3-4b-instruct-2507.yaml and locked it at {commit[:12]}",
    ]
    first = result.output.splitlines()[0]
    assert first.startswith(f"Qwen/Qwen3-4B-Instruct-2507 at {commit[:12]}: 0.0 GB of weights (bf16)")
    text = (empty_catalog / "qwen3-4b-instruct-2507.yaml").read_text()
    assert text.startswith("# yaml-language-server: $schema=../fleet/schema/model.schema.json\n")
    entry = yaml.safe_load(text)
    assert entry["model"] == {"id": "Qwen/Qwen3-4B-Instruct-2507", "revision": "main", "max_model_len": 32768,
                              "dtype": "bf16", "weights_gb": 0.01}
    assert entry["gpu"] == {"type": "L4", "count": 1} and "snapshot" not in entry
    lock = read_lock(empty_catalog / "fleet.lock")
    assert lock.entries["qwen3-4b-instruct-2507"].commit == commit
    assert lock.entries["qwen3-4b-instruct-2507"].weight_bytes == weights
    checked = run("validate", "--strict", catalog=empty_catalog)
    assert checked.exit_code == 0 and "0 error(s), 0 warning(s)" in checked.output, checked.stderr


@pytest.fixture
def full_size_hub(hub: FakeHub) -> FakeHub:
    """The same repositories at their real sizes (sizing needs real bytes; nothing is downloaded)."""
    for repo_id, (files, gated) in real_shapes().items():
        hub.commits[repo_id] = hub.add_repo(repo_id, files, gated=gated)
    return hub


def test_new_sizes_with_real_bytes_and_says_what_cheaper_lacked(
    full_size_hub: FakeHub, empty_catalog: Path, monkeypatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN_WITH_ACCESS)
    result = run("new", "meta-llama/Llama-3.1-8B-Instruct", "--name", "llama-8b", catalog=empty_catalog)
    assert result.exit_code == 0, result.output + result.stderr
    assert result.output.splitlines()[:5] == [
        f"meta-llama/Llama-3.1-8B-Instruct at {full_size_hub.commits['meta-llama/Llama-3.1-8B-Instruct'][:12]}: "
        "16.1 GB of weights (bf16) + 4.3 GB KV cache for 32768 tokens (32 layers x 8 KV heads x 128 x K,V x 2 bytes)"
        " + 2 GB per GPU of runtime overhead",
        "chose L4 x2 ($1.60/h): 24 GB x 2 x 0.85 = 40.8 GB usable >= 24.4 GB needed",
        "next cheaper: T4 x2 ($1.18/h): no bf16 support (compute capability 7.5 < 8.0)",
        "next cheaper that runs it: A10 x1 ($1.10/h): 20.4 GB usable, 2.0 GB short",
        "2 GPUs means no GPU snapshot (snapshot: false); the cheapest single GPU that fits is L40S x1 ($1.95/h)",
    ]
    entry = yaml.safe_load((empty_catalog / "llama-8b.yaml").read_text())
    assert entry["snapshot"] is False and entry["model"]["gated"] is True
    assert run("validate", "--strict", catalog=empty_catalog).exit_code == 0


def test_new_with_a_gpu_type_and_a_multi_modal_fp8_model(full_size_hub: FakeHub, empty_catalog: Path) -> None:
    result = run("new", "Qwen/Qwen3.6-27B-FP8", "--gpu", "H100", "--max-model-len", "65536", catalog=empty_catalog)
    assert result.exit_code == 0, result.output + result.stderr
    assert "chose H100 x1 ($3.95/h)" in result.output
    entry = yaml.safe_load((empty_catalog / "qwen3.6-27b-fp8.yaml").read_text())
    assert entry["model"]["multi_modal"] is True and entry["model"]["dtype"] == "fp8"
    assert entry["model"]["max_model_len"] == 65536


def test_new_too_big_for_any_gpu_says_so(full_size_hub: FakeHub, empty_catalog: Path) -> None:
    result = run("new", "Qwen/Qwen3-235B-A22B-Instruct-2507-FP8", "--gpu", "L4", catalog=empty_catalog)
    assert result.exit_code == 1
    assert result.stderr.startswith("error: no GPU type x count holds it: even L4 x8 ($6.40/h) has 163 GB usable")
    assert list(empty_catalog.glob("*.yaml")) == [empty_catalog / "_fleet.yaml"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["Org/x\nname: evil"], "is not a Hugging Face repo id"),
        (["Org/x: {a: 1}"], "is not a Hugging Face repo id"),
        (["Qwen/Qwen3-4B-Instruct-2507", "--name", "Evil: {x}\n#"], "is not a model name"),
        (["Qwen/Qwen3-4B-Instruct-2507", "--name", "a" * 40], "at most 34 characters with the prefix 'fleet'"),
        (["Qwen/Qwen3-4B-Instruct-2507", "--gpu", "H100; rm"], "is not a GPU type"),
    ],
)
def test_new_refuses_hostile_ids_and_names_before_asking_the_hub(
    hub: FakeHub, empty_catalog: Path, args: list[str], message: str
) -> None:
    result = run("new", *args, catalog=empty_catalog)
    assert result.exit_code == 1 and message in result.stderr and len(result.stderr.splitlines()) == 1
    assert hub.requests == [] and not (empty_catalog / "fleet.lock").exists()


def test_new_refuses_to_overwrite_and_dry_run_writes_nothing(hub: FakeHub, empty_catalog: Path) -> None:
    dry = run("new", "Qwen/Qwen3-4B-Instruct-2507", "--dry-run", catalog=empty_catalog)
    assert dry.exit_code == 0 and "name: qwen3-4b-instruct-2507" in dry.output
    assert not (empty_catalog / "qwen3-4b-instruct-2507.yaml").exists()
    assert run("new", "Qwen/Qwen3-4B-Instruct-2507", catalog=empty_catalog).exit_code == 0
    again = run("new", "Qwen/Qwen3-4B-Instruct-2507", catalog=empty_catalog)
    assert again.exit_code == 1 and "catalog/qwen3-4b-instruct-2507.yaml already exists" in again.stderr


def test_new_for_a_gated_model_without_token(hub: FakeHub, empty_catalog: Path) -> None:
    result = run("new", "meta-llama/Llama-3.1-8B-Instruct", catalog=empty_catalog)
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "error: meta-llama/Llama-3.1-8B-Instruct is gated on the hub: set HF_TOKEN to a token that was granted access"
    )


def test_new_refuses_a_name_whose_url_label_clashes(hub: FakeHub, catalog: Path) -> None:
    # qwen3-4b exists; qwen3.4b would give the same URL label (dots become dashes) and sorts first.
    result = run("new", "Qwen/Qwen3-4B-Instruct-2507", "--name", "qwen3.4b", catalog=catalog)
    assert result.exit_code == 1
    assert "the new entry does not fit the catalog, nothing written:" in result.stderr
    assert "URL label 'fleet-qwen3-4b' is also used by" in result.stderr
    assert not (catalog / "qwen3.4b.yaml").exists() and not (catalog / "fleet.lock").exists()


def test_lock_json_report(hub: FakeHub, catalog: Path, monkeypatch) -> None:
    import json

    monkeypatch.setenv("HF_TOKEN", TOKEN_WITH_ACCESS)
    result = run("lock", "qwen3-4b", "--json", catalog=catalog)
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.output)
    assert report["lock"] == "catalog/fleet.lock" and report["written"] is True
    [row] = report["models"]
    assert row["name"] == "qwen3-4b" and row["action"] == "locked" and row["error"] is None
    assert row["commit"] == hub.commits["Qwen/Qwen3-4B-Instruct-2507"] and row["files"] == 13


def test_a_gated_repository_locked_for_an_entry_without_gated_warns(hub: FakeHub, catalog: Path, monkeypatch) -> None:
    set_key(catalog / "llama3.1-8b.yaml", "model", "gated", False)
    locked_catalog(hub, catalog, monkeypatch)
    assert "    gated: true\n" in lock_text(catalog)
    result = run("validate", "llama3.1-8b", catalog=catalog)
    assert "model.gated: warning: the hub gates meta-llama/Llama-3.1-8B-Instruct (catalog/fleet.lock): set gated: " \
           "true, or download_weights runs without the HF token secret and fails" in result.stderr


def test_a_lock_with_aliases_goes_through_the_bounded_reader(tmp_path: Path) -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(6)
    ) + "version: 1\nmodels: {}\n"
    with pytest.raises(Exception, match="fleet.lock"):
        parse_lock(bomb, "fleet.lock")  # not a lock fleet writes: refused with the file named, whatever the reader


def test_new_json_report(hub: FakeHub, empty_catalog: Path) -> None:
    import json

    result = run("new", "Qwen/Qwen3-4B-Instruct-2507", "--dry-run", "--json", catalog=empty_catalog)
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.output)
    assert report["file"] is None and report["gpu"] == {"type": "L4", "count": 1, "usd_per_hour": 0.8}
    assert report["next_cheaper"] == "T4 x1 ($0.59/h)" and "bf16" in report["next_cheaper_lacks"]
    assert report["entry"]["model"]["id"] == "Qwen/Qwen3-4B-Instruct-2507"
    assert report["commit"] == hub.commits["Qwen/Qwen3-4B-Instruct-2507"]
