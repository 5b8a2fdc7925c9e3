"""The catalog read as a hostile user would write it (issue 13, catalog side; issue 10 item 4).

Every case here failed before the hardening: it validated, hung, crashed with a traceback, echoed what it
should not, or skipped a file silently.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from catalog_builder import PINNED, model, write_catalog
from fleet.catalog import RESERVED_ENV, check_catalog, load_catalog
from fleet.cli import main
from fleet.vllm_flags import check_args

REPO = Path(__file__).resolve().parent.parent


def run(*args: str, catalog: Path):
    return CliRunner().invoke(main, [*args, "--catalog", str(catalog)], catch_exceptions=False)


@pytest.fixture
def catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path / "catalog"


def errors_of(directory: Path) -> list[str]:
    return [str(p) for p in check_catalog(directory).errors]


def warnings_of(directory: Path) -> list[str]:
    return [str(p) for p in check_catalog(directory).warnings]


def with_args(*args: str, **overrides) -> dict:
    return model("m", vllm={"args": list(args)}, **overrides)


# --- 1. fleet-owned vLLM flags cannot come back ---------------------------------------------------------

# Each of these set a fleet-owned option in vLLM 0.32's real parser (tests/engine/test_vllm_flags_real.py
# checks that against vLLM itself).
ABBREVIATED = [
    ["--api-ke=sk-live-123"],
    ["--por", "9000"],
    ["--hos", "127.0.0.2"],
    ["--serve", "other"],
    ["--tensor-parallel", "2"],
    ["--tensor_parallel", "2"],
    ["--enable-sleep"],
    ["--no-enable-sleep-mode"],
    ["--gpu-memory", "0.5"],
    ["--device-memory-utilization", "0.5"],
    ["--max-model", "5"],
    ["--max_model_len=5"],
    ["--rev", "other"],
    ["--enforce"],
    ["-t", "2"],
    ["-tp=2"],
    ["-tp2"],
    ["--api-key.x=1"],
    ["--served.x=a"],
    ["--hf-t"],
]
MOVES_THE_SERVER = [
    ["--uds", "/tmp/s"],
    ["--ud", "/tmp/s"],
    ["--root-path", "/x"],
    ["--root", "/x"],
    ["--middleware", "x.Y"],
    ["--middle", "x.Y"],
    ["--headless"],
    ["--grpc"],
    ["--grpc-port", "9001"],
    ["--ssl-keyfile", "k"],
    ["--ssl-certfile", "c"],
    ["--ssl-key", "k"],
    ["-h"],
]


@pytest.mark.parametrize("args", ABBREVIATED + MOVES_THE_SERVER, ids=lambda a: " ".join(a))
def test_owned_flag_in_any_spelling_is_refused(args: list[str]) -> None:
    [finding] = check_args(args)
    assert finding.index == 0 and not finding.warning
    assert "is set by fleet" in finding.message or "is refused" in finding.message


def test_abbreviation_names_the_flag_it_reaches_and_never_echoes_the_value(catalog: Path) -> None:
    write_catalog(catalog, {"m": with_args("--api-ke=sk-live-123", "--por", "9000")})
    errors = errors_of(catalog)
    assert errors == [
        "catalog/m.yaml:12: vllm.args.0: '--api-ke' (vLLM reads abbreviations: this one reaches --api-key) is set "
        "by fleet: keys come from the API key secret in _fleet.yaml, never from the catalog",
        "catalog/m.yaml:13: vllm.args.1: '--por' (vLLM reads abbreviations: this one reaches --port) is set by "
        "fleet: the engine must serve plain HTTP on fleet's host and port, where Modal's proxy and the runtime look",
    ]
    assert not any("sk-live" in e for e in errors)


def test_validate_refuses_a_server_moving_flag(catalog: Path) -> None:
    write_catalog(catalog, {"m": with_args("--root-path", "/admin")})
    result = run("validate", catalog=catalog)
    assert result.exit_code == 1
    assert "vllm.args.0: '--root-path' is refused: it re-mounts the API under a path prefix" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--additional-config.note"], "'--additional-config' takes the next argument as its value whatever it is, but it is the last argument"),
        (["--additional-config.note", "--enable-auto-tool-choice"], "but '--enable-auto-tool-choice' is a flag: write --additional-config.KEY=VALUE"),
        (["--tool-call-parser"], "'--tool-call-parser' needs a value, but it is the last argument"),
        (["--reasoning-parser", "--enable-auto-tool-choice"], "'--reasoning-parser' needs a value, but '--enable-auto-tool-choice' is a flag"),
        (["--allowed-media-domains"], "'--allowed-media-domains' needs a value, but it is the last argument"),
        (["--"], "'--' ends vLLM's options"),
        (["qwen3"], "'qwen3' is a value with no flag before it: vLLM would read it as the model to serve"),
        (["--enable-auto-tool-choice", "yes"], "'yes' is a value with no flag before it"),
        (["--enable-auto-tool-choice=1"], "'--enable-auto-tool-choice' is a switch and takes no value"),
        (["--port 9000"], "'--port 9000' is not a flag name"),
        (["-O"], "'-O' takes a level"),
        (["--mo", "x"], "is set by fleet"),  # --model / --model-impl / ...: a prefix of an owned flag
    ],
)
def test_arguments_that_would_shift_or_swallow_fleets_own(args: list[str], message: str) -> None:
    assert any(message in f.message and not f.warning for f in check_args(args)), check_args(args)


@pytest.mark.parametrize(
    "args",
    [
        ["--reasoning-parser", "qwen3", "--enable-auto-tool-choice", "--tool-call-parser", "qwen3_coder"],
        ["--speculative-config", '{"method":"mtp","num_speculative_tokens":2}'],
        ["--max-cudagraph-capture-size", "32", "--safetensors-load-strategy=prefetch"],
        ["--limit-mm-per-prompt", '{"image":2,"video":0}'],
        ["--additional-config.note=x", "--compilation-config.level", "3"],
        ["--cudagraph-capture-sizes", "1", "2", "4"],
        ["--max-cudagraph-capture-size", "-1"],
        ["-O3", "-qfp8", "--config-format", "mistral", "--model-impl", "vllm"],
        ["--no-enable-prefix-caching", "--tokenizer-mode", "mistral", "--uvicorn-log-level", "trace"],
        ["--allowed-origins", '["https://app.example"]'],  # CORS: the key and the guard still apply
    ],
)
def test_ordinary_flags_still_pass(args: list[str]) -> None:
    assert check_args(args) == []


def test_a_flag_vllm_does_not_know_is_a_warning(catalog: Path) -> None:
    write_catalog(catalog, {"m": with_args("--flag-from-the-future", "1")})
    assert errors_of(catalog) == []
    [warning] = warnings_of(catalog)
    assert "'--flag-from-the-future' is not a flag of vLLM 0.32.0's server" in warning


def test_shipped_catalog_args_pass_without_warnings() -> None:
    for spec in load_catalog(REPO / "catalog").models:
        assert check_args(spec.vllm_args) == [], spec.name


# --- 2. the YAML reader is bounded ----------------------------------------------------------------------


def billion_laughs() -> str:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 9):
        prev, cur = chr(96 + i), chr(97 + i)
        lines.append(f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def test_billion_laughs_is_one_error_and_fast(catalog: Path) -> None:
    write_catalog(catalog, {"m": billion_laughs()})
    check_catalog(catalog)  # the schema validators are built once per process: not what is measured
    start = time.perf_counter()
    errors = errors_of(catalog)
    elapsed = time.perf_counter() - start
    assert errors == ["catalog/m.yaml:5: the document expands to more than 10000 values (YAML aliases?)"]
    assert elapsed < 0.1, elapsed


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: &a [*a]\n", "catalog/m.yaml:1: a recursive alias (a value that contains itself)"),
        ("a: &a {b: *a}\n", "catalog/m.yaml:1: a recursive alias (a value that contains itself)"),
        ("name: " + "[" * 900 + "]" * 900 + "\n", "catalog/m.yaml:1: nested more than 32 levels deep"),
        ("name:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 200)), "nested more than 32 levels deep"),
        ("a: " + "[" * 20000 + "\n", "exceeded maximum nesting depth"),
        ("a: !!python/object/apply:os.system ['true']\n", "the tag '!!python/object/apply:os.system' is not allowed"),
        ("a: !!python/name:os.system x\n", "is not allowed: catalog values are plain strings"),
        ("a: !!binary aGVsbG8=\n", "the tag '!!binary' is not allowed"),
        ("a: !!set {x}\n", "the tag '!!set' is not allowed"),
        ("a: !custom x\n", "the tag '!custom' is not allowed"),
        ("base: &b {type: L4}\ngpu:\n  <<: *b\n", "catalog/m.yaml:3: merge keys (<<) are not supported"),
        ("a: " + "9" * 5000 + "\n", "not a usable number"),
    ],
)
def test_hostile_yaml_is_one_clear_error(catalog: Path, text: str, expected: str) -> None:
    write_catalog(catalog, {"m": text})
    [error] = errors_of(catalog)
    assert expected in error


def test_file_over_the_size_bound_is_not_read(catalog: Path) -> None:
    write_catalog(catalog, {"m": "description: " + "x" * 300_000 + "\n"})
    assert errors_of(catalog) == ["catalog/m.yaml: the file is 300014 bytes; a catalog file is at most 262144 bytes"]


# --- 3. catalog files are what they seem ----------------------------------------------------------------


def test_link_outside_the_catalog_is_refused_unread(catalog: Path, tmp_path: Path) -> None:
    secret = tmp_path / "credentials"
    secret.write_text("hf_SECRETTOKEN\n")
    write_catalog(catalog, {"ok": model("ok")})
    (catalog / "leak.yaml").symlink_to(secret)
    result = run("validate", catalog=catalog)
    assert result.exit_code == 1
    assert "catalog/leak.yaml: a link that leads outside the catalog directory: refused" in result.stderr
    assert "SECRET" not in result.output + result.stderr


def test_settings_file_linked_outside_is_refused(catalog: Path, tmp_path: Path) -> None:
    (tmp_path / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    write_catalog(catalog, {"m": model("m")})
    (catalog / "_fleet.yaml").unlink()
    (catalog / "_fleet.yaml").symlink_to(tmp_path / "passwd")
    errors = errors_of(catalog)
    assert errors == ["catalog/_fleet.yaml: a link that leads outside the catalog directory: refused (fleet reads "
                      "only the catalog's own files)"]


def test_link_inside_the_catalog_is_read(catalog: Path) -> None:
    write_catalog(catalog, {})
    (catalog / "models").mkdir()
    (catalog / "models" / "m.yaml").write_text(yaml.safe_dump(model("m")))
    (catalog / "m.yaml").symlink_to("models/m.yaml")
    assert check_catalog(catalog).problems == []


def test_every_entry_that_looks_like_a_model_file_is_reported(catalog: Path) -> None:
    write_catalog(catalog, {"ok": model("ok")})
    (catalog / "upper.YAML").write_text(yaml.safe_dump(model("upper")))
    (catalog / "mixed.Yaml").write_text(yaml.safe_dump(model("mixed")))
    (catalog / "short.yml").write_text(yaml.safe_dump(model("short")))
    (catalog / "gone.yaml").symlink_to("nowhere.yaml")
    (catalog / "dir.yaml").mkdir()
    os.mkfifo(catalog / "pipe.yaml")
    (catalog / "README.md").write_text("not a model\n")  # not YAML: left alone
    start = time.perf_counter()
    errors = errors_of(catalog)
    assert time.perf_counter() - start < 1  # the fifo was never opened for a blocking read
    assert errors == [
        "catalog/dir.yaml: a directory, not a catalog file: remove it or rename it",
        "catalog/gone.yaml: a link to nothing (dangling): fix or remove it",
        "catalog/mixed.Yaml: model files end in lower-case .yaml: rename it to mixed.yaml",
        "catalog/pipe.yaml: a fifo, not a catalog file: remove it or rename it",
        "catalog/short.yml: model files end in .yaml: rename it to short.yaml",
        "catalog/upper.YAML: model files end in lower-case .yaml: rename it to upper.yaml",
    ]


def test_a_file_that_is_one_value_is_described_not_quoted(catalog: Path) -> None:
    write_catalog(catalog, {"m": "hf_abcdefghijklmnopqrstuvwxyz0123456\n"})  # a token pasted into a file
    [error] = errors_of(catalog)
    assert error.endswith("found a single string value of 36 characters")
    assert "hf_" not in error


def test_repeated_flag_warns(catalog: Path) -> None:
    [finding] = check_args(["--max-num-seqs", "1", "--max_num_seqs", "2"])
    assert finding.warning and finding.message == "'--max-num-seqs' is given twice: vLLM keeps only the last"


def test_lookalike_letters_are_shown_escaped(catalog: Path) -> None:
    write_catalog(catalog, {"q\u0435n": model("qen")})
    [error] = errors_of(catalog)
    assert "'qen' must equal the file stem 'q\\u0435n'" in error


def test_nul_in_the_file_names_its_line(catalog: Path) -> None:
    write_catalog(catalog, {"m": "name: m\ndescription: a\x00b\n"})
    assert errors_of(catalog) == ["catalog/m.yaml:2: character #x0000 is not allowed in YAML (control characters are not allowed)"]


def test_wrong_type_quotes_an_excerpt(catalog: Path) -> None:
    write_catalog(catalog, {"m": model("m", snapshot="x" * 500)})
    [error] = errors_of(catalog)
    assert error == "catalog/m.yaml:10: snapshot: expected boolean, found string 'xxxxxxxxxxxxxxxxxxxxxxxxxxxx... (500 characters)"


# --- 4. numbers, anchors, control characters, environment, naming ---------------------------------------


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"gpu": {"type": "L4", "memory_utilization": float("nan")}}, "gpu.memory_utilization: nan is not a number a deploy can use"),
        ({"model": {"id": "a/b", "revision": PINNED, "params_b": float("inf"), "dtype": "bf16"}}, "model.params_b: inf is not a number"),
        ({"scaling": {"max_containers": 2.0}}, "scaling.max_containers: expected integer, found 2.0: write 2"),
        ({"timeouts": {"startup": 600.0}}, "timeouts.startup: expected integer, found 600.0: write 600"),
        ({"model": {"id": "a/b", "revision": PINNED, "max_model_len": 4096.0}}, "expected integer, found 4096.0"),
        ({"gpu": {"type": "L4", "count": 1.0}}, "gpu.count: expected integer, found 1.0: write 1"),
        ({"gpu": {"type": "L4", "count": True}}, "gpu.count: expected integer, found boolean True"),
        ({"scaling": {"max_containers": 10**30}}, "is greater than the maximum of 100"),
    ],
)
def test_numbers_must_be_what_the_deploy_accepts(catalog: Path, overrides: dict, expected: str) -> None:
    write_catalog(catalog, {"m": model("m", **overrides)})
    errors = errors_of(catalog)
    assert any(expected in e for e in errors), errors


@pytest.mark.parametrize(
    ("stem", "entry", "settings", "expected"),
    [
        ("m", model("m\n"), None, "name: 'm\\n' holds a control character"),
        ("m", model("m", model={"id": "Qwen/Qwen3-4B\n", "revision": PINNED}), None, "model.id: 'Qwen/Qwen3-4B\\n' holds a control character"),
        ("m", model("m"), {"prefix": "fleet\n"}, "prefix: 'fleet\\n' holds a control character"),
        ("m", model("m"), {"vllm_version": "0.33.0\n"}, "vllm_version: '0.33.0\\n' holds a control character"),
    ],
)
def test_trailing_newline_never_passes(catalog: Path, stem, entry, settings, expected) -> None:
    write_catalog(catalog, {stem: entry}, settings=settings)
    errors = errors_of(catalog)
    assert any(expected in e for e in errors), errors


def test_patterns_are_anchored_at_the_true_end() -> None:
    from fleet.catalog import _validator

    for name in ("qwen\n", "qwen3-4b\n"):
        assert list(_validator("model").iter_errors({**model("x"), "name": name}))
    assert not list(_validator("model").iter_errors(model("qwen3-4b")))


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("\x1b[2J\x1b[31mowned", "'\\x1b[2J\\x1b[31mowned' holds a control character"),
        ("a\x00b", "'a\\x00b' holds a control character"),
        ("safe\u202etxt.exe", "'safe\\u202etxt.exe' holds a control character"),
        ("line one\nline two", "'line one\\nline two' holds a control character"),
        ("tab\there", "'tab\\there' holds a control character"),
        ("\x9b31m", "'\\x9b31m' holds a control character"),
    ],
)
def test_control_characters_are_refused_and_never_printed_raw(catalog: Path, value: str, shown: str) -> None:
    write_catalog(catalog, {"m": model("m", description=value)})
    result = run("validate", catalog=catalog)
    assert result.exit_code == 1
    assert f"catalog/m.yaml:10: description: {shown}" in result.stderr
    assert not any(c in result.stderr for c in "\x1b\x00\u202e\x9b")


def test_control_characters_in_a_key_are_escaped(catalog: Path) -> None:
    write_catalog(catalog, {"m": {**model("m"), "\x1b[31mkey": 1}})
    result = run("validate", catalog=catalog)
    assert "\x1b" not in result.stderr
    assert "the key '\\x1b[31mkey' holds a control character" in result.stderr


@pytest.mark.parametrize("name", ["vllm_api_key", "Hf_Token", "FLEET_ANYTHING", "fleet_control_token", "PYTHONPATH",
                                  "VLLM_USE_RUST_FRONTEND", "hf_home", "TORCHINDUCTOR_COMPILE_THREADS"])
def test_runtime_environment_is_reserved_whatever_the_case(catalog: Path, name: str) -> None:
    write_catalog(catalog, {"m": model("m", vllm={"env": {name: "x"}})})
    [error] = errors_of(catalog)
    assert f"vllm.env.{name}: '{name}' is set by" in error


def test_runtime_environment_names_are_all_reserved() -> None:
    from fleet.render import IMAGE_ENV
    from fleet.runtime import BASE_ENV, CONTROL_TOKEN_ENV, DEV_MODE_ENV

    runtime_sets = {k for k, _ in BASE_ENV} | {DEV_MODE_ENV[0], CONTROL_TOKEN_ENV, "PYTHONPATH", "VLLM_API_KEY"}
    assert runtime_sets | {"HF_HOME", "VLLM_CACHE_ROOT"} <= set(RESERVED_ENV) | {
        n for n in runtime_sets if n.startswith("FLEET_")
    }
    assert {"HF_HOME", "VLLM_CACHE_ROOT"} <= set(IMAGE_ENV)


def test_error_from_defaults_names_every_model_it_broke(catalog: Path) -> None:
    settings = {"defaults": {"scaling": {"min_containers": 3}}}
    write_catalog(catalog, {"a": model("a", scaling={"max_containers": 5}), "b": model("b"), "c": model("c")},
                  settings=settings)
    assert errors_of(catalog) == [
        "catalog/_fleet.yaml:3: scaling.min_containers: min_containers (3) is above max_containers (1) "
        "(in the defaults merged into catalog/b.yaml, catalog/c.yaml)"
    ]


# --- 5. platform rules (issue 10, item 4) ---------------------------------------------------------------


def test_snapshot_on_several_gpus_is_an_error_with_reason_and_source(catalog: Path) -> None:
    write_catalog(catalog, {"m": model("m", gpu={"type": "H100", "count": 2})})
    [error] = errors_of(catalog)
    assert error.startswith("catalog/m.yaml:9: gpu.count: snapshot: true with 2 GPUs: GPU memory snapshots do not work")
    assert "Modal's GPU snapshot guide" in error and "users report the deploy refused" in error


def test_snapshot_from_defaults_is_reported_at_the_models_gpu_count(catalog: Path) -> None:
    write_catalog(catalog, {"m": model("m", gpu={"type": "H100", "count": 4})}, settings={"defaults": {"snapshot": True}})
    [error] = errors_of(catalog)
    assert error.startswith("catalog/m.yaml:9: gpu.count: snapshot: true with 4 GPUs")


def test_multi_gpu_without_snapshot_is_fine(catalog: Path) -> None:
    write_catalog(catalog, {"m": model("m", gpu={"type": "H100", "count": 4}, snapshot=False)})
    assert check_catalog(catalog).problems == []


def test_long_startup_with_snapshot_warns(catalog: Path) -> None:
    write_catalog(catalog, {"m": model("m", timeouts={"startup": 3600}),
                            "n": model("n", timeouts={"startup": 3600}, snapshot=False)})
    [warning] = warnings_of(catalog)
    assert warning.startswith("catalog/m.yaml:11: timeouts.startup: warning: 3600 s: the start that takes a snapshot "
                              "is capped at 1800 s")
    assert "users' reports of Modal GPU snapshots, 2026-09" in warning


@pytest.mark.parametrize(
    ("version", "entry", "issue"),
    [
        ("0.14.0", model("m", gpu={"type": "L4", "count": 2}, snapshot=True), None),  # an error already
        ("0.15.0", model("m", model={"id": "Qwen/Qwen3.6-27B-FP8", "revision": PINNED},
                         vllm={"args": ["--kv-cache-dtype", "fp8_e4m3"]}), "vllm issues #41563, #49237"),
        ("0.25.1", model("m", model={"id": "Qwen/Qwen3.6-27B-FP8", "revision": PINNED},
                         vllm={"args": ["--kv-cache-dtype=fp8"]}), "vllm issues #41563, #49237"),
        ("0.33.0", model("m", model={"id": "Qwen/Qwen3.6-27B-FP8", "revision": PINNED},
                         vllm={"args": ["--kv-cache-dtype=fp8"]}), None),
        ("0.25.1", model("m", model={"id": "Qwen/Qwen3.6-27B-FP8", "revision": PINNED}), None),  # no fp8 KV cache
    ],
)
def test_known_sleep_wake_breakage_warns_with_its_issue(catalog: Path, version, entry, issue) -> None:
    write_catalog(catalog, {"m": entry}, settings={"vllm_version": version})
    warnings = warnings_of(catalog)
    if issue is None:
        assert not any("vllm issue" in w for w in warnings), warnings
    else:
        [warning] = warnings
        assert f"vLLM {version}: /wake_up fails" in warning and issue in warning


def test_tensor_parallel_sleep_leak_row() -> None:
    from fleet.known_issues import KNOWN_ISSUES
    from fleet.spec import Scaling, Settings, ModelSpec

    settings = Settings("fleet", None, "0.14.0", "h", "v", "k", "t")
    spec = ModelSpec(name="m", file="m.yaml", source="c/m.yaml", description="", model_id="Qwen/Qwen3-30B-A3B",
                     revision=PINNED, max_model_len=None, multi_modal=False, gated=False, gpu_type="H100",
                     gpu_count=4, memory_utilization=0.85, vllm_args=(), fast_boot=False, env=(), snapshot=True,
                     scaling=Scaling(600, 0, 1, 4), startup_timeout=1800, request_timeout=600, settings=settings)
    row = KNOWN_ISSUES[0]
    assert row.source == "vllm issue #32714"
    assert row.matches("0.14.0", spec) and row.matches("0.15.0", spec) and not row.matches("0.13.0", spec)
    assert not row.matches("0.16.0", spec)


def test_shipped_catalog_still_validates_under_the_platform_rules() -> None:
    result = check_catalog(REPO / "catalog")
    assert result.errors == []
    assert not load_catalog(REPO / "catalog").models[0].settings.vllm_version.startswith("0.14")


def test_other_commands_print_one_summary_line_for_warnings(catalog: Path, monkeypatch) -> None:
    monkeypatch.delenv("MODAL_TOKEN_ID", raising=False)
    monkeypatch.delenv("MODAL_TOKEN_SECRET", raising=False)
    monkeypatch.setattr("modal.config._user_config", {})
    unpinned = model("m", model={"id": "a/b", "revision": "main"})
    write_catalog(catalog, {"m": unpinned, "n": model("n", model={"id": "a/b", "revision": "dev"})})
    result = run("deploy", "--all", "--dry-run", catalog=catalog)
    assert result.exit_code == 0, result.stderr
    assert result.stderr.splitlines() == ["2 catalog warnings: run `fleet validate` to see them"]
    full = run("validate", catalog=catalog)
    assert len([line for line in full.stderr.splitlines() if ": warning: " in line]) == 2


def test_no_flag_of_vllm_is_refused_unless_fleet_owns_it() -> None:
    """The prefix rule must not catch a real option that merely starts like an owned one."""
    from fleet.vllm_flags import OWNED, flag_table

    for name, option in flag_table().options.items():
        value = ["1"] if option.takes in ("one", "some") else []
        refused = any("is set by fleet" in f.message or "is refused" in f.message for f in check_args([name, *value]))
        assert refused == (option.dest in OWNED), name


def test_validate_imports_neither_modal_nor_vllm() -> None:
    """The flag table is data: reading `vllm.args` the way vLLM does never imports vLLM."""
    import subprocess
    import sys

    code = (
        "import sys\nfrom fleet.cli import main\n"
        f"try:\n    main(['validate', '--catalog', {str(REPO / 'catalog')!r}])\nexcept SystemExit:\n    pass\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'modal', 'vllm', 'torch'}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout + done.stderr


def test_code_loading_environment_is_refused(catalog: Path) -> None:
    write_catalog(catalog, {"m": model("m", vllm={"env": {"ld_preload": "/x.so"}})})
    assert errors_of(catalog) == [
        "catalog/m.yaml:12: vllm.env.ld_preload: 'ld_preload' is not allowed in vllm.env: it loads code into the "
        "engine before Python and fleet's guard"
    ]


# --- 6. more hostile inputs, beyond the issue's list ----------------------------------------------------


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"m": model("m\u200b")}, "name: 'm\\u200b' holds a control character"),  # zero-width: a lookalike
        ({"m": model("m", model={"id": "Qwen/Qwen3-4B", "revision": PINNED, "max_model_len": 10**20})},
         "model.max_model_len: 100000000000000000000 is greater than the maximum of 16777216"),
        ({"m": model("m", model={"id": "Qwen/Qwen3-4B", "revision": PINNED, "params_b": 1e300, "dtype": "bf16"})},
         "model.params_b: 1e+300 is greater than the maximum of 100000"),
        ({"m": with_args("")}, "vllm.args.0: '' is a value with no flag before it"),
        ({"m": with_args("\u2014port", "1")}, "vllm.args.0: '\\u2014port' is a value with no flag before it"),
        ({"m": with_args(*(["--max-num-seqs", "1"] * 101))}, "vllm.args: 202 entries; at most 200"),
        ({"m": "name: m\n---\nname: n\n"}, "but found another document"),
        ({"m": model("m", description="x" * 301)}, "is longer than the maximum length of 300"),
        ({"m": model("m", model={"id": "Qwen/Qwen3-4B", "revision": "main branch"})}, "is not a branch, tag or commit"),
        ({"m": yaml.safe_dump(model("m")).replace(f"revision: {PINNED}", "revision: 0123")},
         "model.revision: expected string, found integer 83: YAML read it as a value of that type; put it in quotes"),
        ({"m": model("m", vllm={"env": {"1BAD": "x"}})}, "'1BAD' is not an environment variable name"),
        ({"m": yaml.safe_dump(model("m")) + "? [a, b]\n: x\n"}, "a key must be a plain string"),
    ],
)
def test_more_hostile_inputs(catalog: Path, files: dict, expected: str) -> None:
    write_catalog(catalog, files)
    errors = errors_of(catalog)
    assert any(expected in e for e in errors), errors


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"secrets": {"api_key": "a/b c"}}, "secrets.api_key: 'a/b c' is not a Modal object name"),
        ({"volumes": {"hf_cache": "x" * 65}}, "is longer than the maximum length of 64"),
        ({"environment": "en-prod"}, "environment: 'en-prod' is not a Modal environment name"),
        ({"prefix": "Fleet"}, "prefix: 'Fleet' is not DNS-safe"),
    ],
)
def test_settings_modal_would_refuse(catalog: Path, settings: dict, expected: str) -> None:
    write_catalog(catalog, {"m": model("m")}, settings=settings)
    errors = errors_of(catalog)
    assert any(expected in e for e in errors), errors


def test_symlink_loop_is_reported_not_followed(catalog: Path) -> None:
    write_catalog(catalog, {"ok": model("ok")})
    (catalog / "a.yaml").symlink_to("b.yaml")
    (catalog / "b.yaml").symlink_to("a.yaml")
    assert errors_of(catalog) == [
        "catalog/a.yaml: cannot read it: Too many levels of symbolic links",
        "catalog/b.yaml: cannot read it: Too many levels of symbolic links",
    ]


def test_byte_order_mark_is_read_as_yaml(catalog: Path) -> None:
    write_catalog(catalog, {"m": "\ufeff" + yaml.safe_dump(model("m"))})
    assert check_catalog(catalog).problems == []


def test_yaml_1_1_spellings_keep_their_meaning(catalog: Path) -> None:
    """Documented, not refused: `yes` is true and 30:00 is 1800 in YAML 1.1, which PyYAML reads."""
    write_catalog(catalog, {"m": yaml.safe_dump(model("m")) + "snapshot: yes\ntimeouts: {startup: 30:00}\n"})
    [spec] = load_catalog(catalog).models
    assert spec.snapshot is True and spec.startup_timeout == 1800
