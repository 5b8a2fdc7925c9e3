"""`fleet validate` and `fleet list`: every bad input gets a clear message naming file, line and key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from catalog_builder import PINNED, model, write_catalog
from fleet.catalog import check_catalog, load_catalog
from fleet.cli import main

REPO = Path(__file__).resolve().parent.parent


def run(*args: str, catalog: Path | None = None, env: dict[str, str] | None = None):
    extra = ["--catalog", str(catalog)] if catalog is not None else []
    return CliRunner().invoke(main, [*args, *extra], env=env, catch_exceptions=False)


@pytest.fixture
def catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # problems show paths relative to the working directory
    return tmp_path / "catalog"


def errors_of(directory: Path) -> list[str]:
    return [str(p) for p in check_catalog(directory).errors]


def test_shipped_catalog_is_valid() -> None:
    result = run("validate", catalog=REPO / "catalog")
    assert result.exit_code == 0, result.output + result.stderr
    assert "5 model file(s) checked: valid, 0 error(s)" in result.output


def test_shipped_catalog_covers_the_required_shapes() -> None:
    models = {m.name: m for m in load_catalog(REPO / "catalog").models}
    reference = models["qwen3.6-27b"]
    assert (reference.model_id, reference.gpu_type, reference.gpu_count) == ("Qwen/Qwen3.6-27B-FP8", "A100-80GB", 1)
    assert "--reasoning-parser" in reference.vllm_args and reference.snapshot
    assert any(m.gpu_type in ("L4", "A10") for m in models.values())
    assert any(m.gated for m in models.values())
    assert any(m.gpu_type.startswith("H100") and m.gpu_count >= 2 for m in models.values())
    assert any(not m.snapshot and m.fast_boot for m in models.values())


def test_valid_catalog_has_no_problems(catalog: Path) -> None:
    write_catalog(catalog, {"small": model("small")})
    assert check_catalog(catalog).problems == []


def test_yaml_syntax_error_names_line_and_column(catalog: Path) -> None:
    write_catalog(catalog, {"bad": "name: bad\nmodel:\n  id: [Qwen/x\ngpu: {type: L4}\n"})
    [error] = errors_of(catalog)
    assert error == (
        "catalog/bad.yaml:4: YAML syntax error, column 4: did not find expected ',' or ']' "
        "(while parsing a flow sequence started on line 3)"
    )


def test_empty_file_is_reported(catalog: Path) -> None:
    write_catalog(catalog, {"empty": "# nothing yet\n"})
    assert errors_of(catalog) == ["catalog/empty.yaml:1: the file is empty"]


@pytest.mark.parametrize(
    ("text", "found"),
    [("- name: a\n- name: b\n", "found a list"), ("just a string\n", "found a single string value of 13 characters")],
)
def test_file_that_is_not_a_mapping(catalog: Path, text: str, found: str) -> None:
    write_catalog(catalog, {"odd": text})
    [error] = errors_of(catalog)
    assert error.startswith("catalog/odd.yaml:1: expected a mapping of keys") and found in error


def test_unknown_key_suggests_closest(catalog: Path) -> None:
    entry = model("typo")
    entry["gpu"] = {"type": "L4", "memory_utilisation": 0.8}
    write_catalog(catalog, {"typo": entry})
    [error] = errors_of(catalog)
    assert error.startswith("catalog/typo.yaml:9: gpu.memory_utilisation: unknown key 'memory_utilisation'")
    assert "(did you mean 'memory_utilization'?)" in error
    assert "valid keys: count, memory_utilization, type" in error


def test_unknown_top_level_key(catalog: Path) -> None:
    write_catalog(catalog, {"typo": {**model("typo"), "snapshots": True}})
    [error] = errors_of(catalog)
    assert "snapshots: unknown key 'snapshots' (did you mean 'snapshot'?)" in error


def test_wrong_type_says_what_was_expected(catalog: Path) -> None:
    write_catalog(catalog, {"m": model("m", snapshot="yes please")})
    assert errors_of(catalog) == ["catalog/m.yaml:10: snapshot: expected boolean, found string 'yes please'"]


def test_gpu_type_modal_does_not_document(catalog: Path) -> None:
    write_catalog(catalog, {"m": model("m", gpu={"type": "A100-90GB"})})
    [error] = errors_of(catalog)
    assert error.startswith("catalog/m.yaml:8: gpu.type: 'A100-90GB' is not a GPU type Modal documents")
    assert "did you mean 'A100-80GB'?" in error and "valid: T4, L4, A10" in error


def test_gpu_count_over_what_modal_allows_for_the_type(catalog: Path) -> None:
    write_catalog(catalog, {"m": model("m", gpu={"type": "A10", "count": 8}, snapshot=False)})
    assert errors_of(catalog) == ["catalog/m.yaml:9: gpu.count: Modal allows at most 4 A10 GPUs per container, not 8"]


def test_tensor_parallel_size_must_be_a_power_of_two(catalog: Path) -> None:
    write_catalog(catalog, {"m": model("m", gpu={"type": "H100", "count": 3})})
    [error] = errors_of(catalog)
    assert "gpu.count: 3 is not a tensor-parallel size (GPUs per container); valid: 1, 2, 4, 8" in error


@pytest.mark.parametrize("value", [0, -0.5, 1.2])
def test_memory_utilization_outside_zero_one(catalog: Path, value: float) -> None:
    write_catalog(catalog, {"m": model("m", gpu={"type": "L4", "memory_utilization": value})})
    [error] = errors_of(catalog)
    assert error.startswith("catalog/m.yaml:9: gpu.memory_utilization:")


@pytest.mark.parametrize("name", ["Qwen_3", "-qwen", "qwen-", "qwen 3"])
def test_name_that_is_not_dns_safe(catalog: Path, name: str) -> None:
    write_catalog(catalog, {name: model(name)})
    [error] = errors_of(catalog)
    assert f"name: {name!r} is not DNS-safe" in error


def test_name_too_long_for_a_readable_url(catalog: Path) -> None:
    name = "a-very-long-model-name-for-a-label-x"
    write_catalog(catalog, {name: model(name)})
    [error] = errors_of(catalog)
    assert "the URL label 'fleet-a-very-long-model-name-for-a-label-x' (prefix + name) is 42 characters" in error


def test_file_stem_must_equal_name(catalog: Path) -> None:
    write_catalog(catalog, {"qwen": model("llama")})
    assert errors_of(catalog) == [
        "catalog/qwen.yaml:1: name: 'llama' must equal the file stem 'qwen' (rename the file or the model)"
    ]


def test_two_models_that_would_share_a_url(catalog: Path) -> None:
    write_catalog(catalog, {"qwen3.6": model("qwen3.6"), "qwen3-6": model("qwen3-6")})
    [error] = errors_of(catalog)
    assert "URL label 'fleet-qwen3-6' is also used by catalog/qwen3-6.yaml" in error


def test_two_files_with_the_same_name(catalog: Path) -> None:
    write_catalog(catalog, {"a": model("b"), "b": model("b")})
    errors = errors_of(catalog)
    assert "catalog/a.yaml:1: name: 'b' must equal the file stem 'a' (rename the file or the model)" in errors


def test_invalid_settings_file(catalog: Path) -> None:
    write_catalog(catalog, {"m": model("m")}, settings={"prefix": "fleet", "vllm_version": "latest", "voulmes": {}})
    errors = errors_of(catalog)
    assert "catalog/_fleet.yaml:2: vllm_version: 'latest' is not a pinned release: expected X.Y.Z" in errors[0]
    assert errors[1].startswith("catalog/_fleet.yaml:3: voulmes: unknown key 'voulmes' (did you mean 'volumes'?)")


def test_error_in_defaults_points_at_settings_file(catalog: Path) -> None:
    settings = "prefix: fleet\ndefaults:\n  scaling:\n    scaledown_window: 1\n"
    write_catalog(catalog, {"a": model("a"), "b": model("b")}, settings=settings)
    errors = errors_of(catalog)
    assert errors == [
        "catalog/_fleet.yaml:4: scaling.scaledown_window: 1 is less than the minimum of 2 "
        "(in the defaults merged into catalog/a.yaml, catalog/b.yaml)"
    ]


def test_defaults_merge_under_models(catalog: Path) -> None:
    settings = {"defaults": {"scaling": {"max_containers": 3}, "gpu": {"memory_utilization": 0.8}}}
    write_catalog(catalog, {"m": model("m", scaling={"min_containers": 1})}, settings=settings)
    [spec] = load_catalog(catalog).models
    assert (spec.scaling.min_containers, spec.scaling.max_containers, spec.memory_utilization) == (1, 3, 0.8)
    assert spec.scaling.scaledown_window == 600  # the schema's own default


def test_empty_catalog(catalog: Path) -> None:
    write_catalog(catalog, {})
    assert errors_of(catalog) == ["catalog: the catalog is empty: add one NAME.yaml per model"]


def test_non_utf8_bytes(catalog: Path) -> None:
    write_catalog(catalog, {"m": b"name: m\ndescription: caf\xe9\n"})
    assert errors_of(catalog) == ["catalog/m.yaml:2: not UTF-8 text (byte 0xe9 at offset 24)"]


def test_duplicate_key(catalog: Path) -> None:
    write_catalog(catalog, {"m": "name: m\nname: m\n"})
    assert errors_of(catalog) == ["catalog/m.yaml:2: duplicate key 'name'"]


def test_flag_owned_by_fleet_is_refused(catalog: Path) -> None:
    write_catalog(catalog, {"m": model("m", vllm={"args": ["--api-key=sk-123", "--tensor-parallel-size", "2"]})})
    errors = errors_of(catalog)
    assert any("vllm.args.0: '--api-key' is set by fleet" in e for e in errors)
    assert any("vllm.args.1: '--tensor-parallel-size' is set by fleet: use gpu.count instead" in e for e in errors)
    assert not any("sk-123" in e for e in errors)


def test_all_problems_in_all_files_are_reported_at_once(catalog: Path) -> None:
    write_catalog(catalog, {"a": model("a", gpu={"type": "X1"}), "b": "[", "c": model("c", snapshot=3)})
    result = run("validate", catalog=catalog)
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert [line.split(":")[0] for line in lines] == ["catalog/a.yaml", "catalog/b.yaml", "catalog/c.yaml"]
    assert "3 model file(s) checked: invalid, 3 error(s), 0 warning(s)" in result.output


def test_risky_choices_warn_and_strict_fails(catalog: Path) -> None:
    entry = model("big", gpu={"type": "H100", "count": 1, "memory_utilization": 0.95})
    entry["model"] = {"id": "org/big", "revision": "main", "params_b": 405, "dtype": "bf16"}
    write_catalog(catalog, {"big": entry})
    result = run("validate", catalog=catalog)
    assert result.exit_code == 0
    warnings = result.stderr.splitlines()
    assert len(warnings) == 3 and all(": warning: " in w for w in warnings)
    text = result.stderr
    assert "'main' is not a commit" in text
    assert "0.95 with snapshots on" in text
    assert "the weights (~810 GB) do not fit in 1 x H100 (80 GB each)" in text
    assert run("validate", "--strict", catalog=catalog).exit_code == 1


def test_weights_that_fit_do_not_warn(catalog: Path) -> None:
    write_catalog(catalog, {"m": model("m", model={"id": "o/m", "revision": PINNED, "weights_gb": 20})})
    assert check_catalog(catalog).problems == []


def test_json_report(catalog: Path) -> None:
    write_catalog(catalog, {"m": model("m", gpu={"type": "L4", "count": 3})})
    result = run("validate", "--json", catalog=catalog)
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert report["valid"] is False
    [problem] = report["problems"]
    assert problem["file"] == "catalog/m.yaml" and problem["line"] == 9 and problem["path"] == "gpu.count"
    assert problem["severity"] == "error"


def test_validate_names_only_the_selected_models(catalog: Path) -> None:
    write_catalog(catalog, {"good": model("good"), "bad": model("bad", snapshot=1)})
    assert run("validate", "good", catalog=catalog).exit_code == 0
    assert run("validate", "bad", catalog=catalog).exit_code == 1
    missing = run("validate", "goood", catalog=catalog)
    assert missing.exit_code == 1
    assert "error: 'goood' is not in the catalog (did you mean 'good'?)" in missing.stderr


def test_catalog_from_environment(catalog: Path) -> None:
    write_catalog(catalog, {"m": model("m")})
    assert run("validate", env={"FLEET_CATALOG": str(catalog)}).exit_code == 0


def test_missing_catalog_directory(catalog: Path) -> None:
    result = run("validate", catalog=catalog / "nope")
    assert result.exit_code == 1
    assert "error: catalog directory" in result.stderr and "Traceback" not in result.stderr


def test_usage_error_exits_2() -> None:
    assert run("validate", "--no-such-flag").exit_code == 2


def test_list_shows_the_catalog(catalog: Path) -> None:
    write_catalog(catalog, {"m": model("m", scaling={"max_containers": 2})})
    result = run("list", catalog=catalog)
    assert result.exit_code == 0
    assert result.output.splitlines() == [
        "NAME  MODEL                        GPU    SNAPSHOT  SCALING            DESCRIPTION",
        "m     Qwen/Qwen3-4B-Instruct-2507  L4 x1  on        0-2 x4, idle 600s",
    ]
    [row] = json.loads(run("list", "--json", catalog=catalog).output)
    assert row["gpu"] == "L4" and row["max_containers"] == 2


def test_list_refuses_an_invalid_catalog(catalog: Path) -> None:
    write_catalog(catalog, {"m": model("m", gpu={"type": "T5"})})
    result = run("list", catalog=catalog)
    assert result.exit_code == 1
    assert "catalog/m.yaml:8: gpu.type: 'T5'" in result.stderr


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("model: {id: a/b}\ngpu: {type: L4}\n", "catalog/m.yaml:1: missing required key 'name'"),
        ("name: m\nmodel: {id: a/b}\n", "catalog/m.yaml:1: missing required key 'gpu'"),
        ("name: m\nmodel: {id: a/b}\ngpu:\n", "catalog/m.yaml:3: gpu: expected object, found null None"),
        ("name: m\nmodel: {id: a/b}\ngpu: {type: L4, count: '2'}\n", "gpu.count: '2' is not a tensor-parallel size"),
        ("name: m\nmodel: {id: a/b}\ngpu: {type: [L4]}\n", "gpu.type: ['L4'] is not a GPU type Modal documents"),
        ("name: m\nmodel: {id: a/b}\ngpu: {type: L4}\nvllm: [--x]\n", "vllm: expected object, found list"),
        ("name: m\nmodel: {id: a/b}\ngpu: {type: L4}\nvllm: {args: [1]}\n", "vllm.args.0: expected string"),
    ],
)
def test_schema_errors_never_crash_the_later_rules(catalog: Path, text: str, expected: str) -> None:
    write_catalog(catalog, {"m": text})
    errors = errors_of(catalog)
    assert any(expected in e for e in errors), errors


def test_flag_spelled_with_underscores_is_still_refused(catalog: Path) -> None:
    write_catalog(catalog, {"m": model("m", vllm={"args": ["--api_key", "k", "--hf-token=t", "--config", "x"]})})
    errors = errors_of(catalog)
    assert any("vllm.args.0: '--api_key' is set by fleet" in e for e in errors)
    assert any("vllm.args.2: '--hf-token' is set by fleet" in e for e in errors)
    assert any("vllm.args.3: '--config' is set by fleet" in e for e in errors)


def test_reserved_environment_is_refused(catalog: Path) -> None:
    write_catalog(catalog, {"m": model("m", vllm={"env": {"HF_TOKEN": "hf_x", "VLLM_SERVER_DEV_MODE": "1"}})})
    errors = errors_of(catalog)
    assert any("vllm.env.HF_TOKEN: 'HF_TOKEN' is set by the HF token secret" in e for e in errors)
    assert any("vllm.env.VLLM_SERVER_DEV_MODE" in e for e in errors)
    assert not any("hf_x" in e for e in errors)


def test_min_containers_above_max(catalog: Path) -> None:
    write_catalog(catalog, {"m": model("m", scaling={"min_containers": 3, "max_containers": 2})})
    [error] = errors_of(catalog)
    assert "scaling.min_containers: min_containers (3) is above max_containers (2)" in error


def test_problems_about_a_model_point_at_its_name_line(catalog: Path) -> None:
    text = "# a comment\n# another\nname: qwen3.6\nmodel: {id: a/b}\ngpu: {type: L4}\n"
    write_catalog(catalog, {"qwen3.6": text, "qwen3-6": model("qwen3-6")})
    assert any(e.startswith("catalog/qwen3.6.yaml:3: name: URL label") for e in errors_of(catalog))


def test_rendered_source_does_not_depend_on_the_working_directory(
    catalog: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fleet.render import render_app

    write_catalog(catalog, {"m": model("m")})
    [here] = load_catalog(catalog).models
    monkeypatch.chdir(catalog)
    [inside] = load_catalog(Path(".")).models
    monkeypatch.chdir("/")
    [absolute] = load_catalog(catalog.resolve()).models
    assert len({here.file, inside.file, absolute.file}) == 3  # messages show the path as typed
    assert render_app(here).source == render_app(inside).source == render_app(absolute).source
