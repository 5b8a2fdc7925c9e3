"""Which `vllm.args` a catalog may pass: read the way vLLM's own argument parser will read them.

vLLM's server parses flags with argparse, which accepts any unique prefix of a flag (`--por 9` is
`--port 9`, `--api-ke=x` is `--api-key x`), after vLLM folds `_` into `-` and turns `--a.b VALUE` into a
JSON option that takes the NEXT argument whatever it is (a trailing `--additional-config.note` swallowed
fleet's `--middleware ...`). So a flag is judged on what argparse would resolve it to, using a table of
the server's options read from vLLM itself (fleet/schema/vllm_flags.json; `python -m fleet.vllm_flags`
writes it again from the installed vLLM) -- never by comparing strings with a fixed list.

Rules, each with its reason:
- a flag that resolves to an option fleet sets (or could resolve to one: any prefix of one) is refused;
  ownership is per option, so its aliases and `--no-` forms are fleet's too (OWNED below);
- `--` and a value with no flag before it are refused: argparse would read the value as the model to
  serve, and after `--` it would read fleet's own flags as bare values;
- a flag that needs a value must get one from the catalog: never the end of the list, never another flag
  (a dotted `--a.b` must be written `--a.b=VALUE`);
- an ambiguous prefix is refused (vLLM refuses it at start); a flag the table does not know is a warning
  (a newer vLLM may have it).

Standard library only: `fleet validate` must not import vLLM.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache, cached_property
from importlib import resources
from typing import Any, Sequence

from .errors import excerpt

TABLE_FILE = "vllm_flags.json"

# Options fleet sets or must keep, by argparse destination: every option string of these options (aliases
# such as -tp and --device-memory-utilization, and the --no- forms) is refused, and so is any prefix of one.
_SERVER = "the engine must serve plain HTTP on fleet's host and port, where Modal's proxy and the runtime look"
OWNED: dict[str, str] = {
    "model": "use model.id instead",
    "revision": "use model.revision instead",
    "served_model_name": "use name instead",
    "tensor_parallel_size": "use gpu.count instead",
    "gpu_memory_utilization": "use gpu.memory_utilization instead",
    "max_model_len": "use model.max_model_len instead",
    "enforce_eager": "use vllm.fast_boot instead",
    "enable_sleep_mode": "use snapshot instead",
    "host": _SERVER,
    "port": _SERVER,
    "uds": f"a Unix socket instead of a port: {_SERVER}",
    "root_path": "it re-mounts the API under a path prefix, beside the guard's allow-list of paths",
    "middleware": "fleet installs its own guard middleware; another one could answer before the guard",
    "headless": "it runs no API server at all",
    "grpc": f"it serves gRPC instead of HTTP: {_SERVER}",
    "grpc_port": "it opens a second server (gRPC inference and control) outside fleet's guard",
    "ssl_keyfile": f"Modal's proxy terminates TLS: {_SERVER}",
    "ssl_certfile": f"Modal's proxy terminates TLS: {_SERVER}",
    "ssl_ca_certs": f"Modal's proxy terminates TLS: {_SERVER}",
    "ssl_cert_reqs": f"Modal's proxy terminates TLS: {_SERVER}",
    "ssl_ciphers": f"Modal's proxy terminates TLS: {_SERVER}",
    "enable_ssl_refresh": f"Modal's proxy terminates TLS: {_SERVER}",
    "api_key": "keys come from the API key secret in _fleet.yaml, never from the catalog",
    "hf_token": "the token comes from the HF token secret in _fleet.yaml, never from the catalog",
    "config": "fleet passes several API keys through vLLM's config file",
    "help": "it prints help and exits: the engine would never start",
}
# The options fleet passes itself (the others are refused because of what they would do to the server).
FLEET_SETS = {
    "model",
    "revision",
    "served_model_name",
    "tensor_parallel_size",
    "gpu_memory_utilization",
    "max_model_len",
    "enforce_eager",
    "enable_sleep_mode",
    "host",
    "port",
    "middleware",
    "api_key",
    "hf_token",
    "config",
}
# Used when the table lacks an owned option (a vLLM that renamed it): the names fleet passes itself.
_OWNED_FALLBACK = {
    "--model": "model",
    "--revision": "revision",
    "--served-model-name": "served_model_name",
    "--tensor-parallel-size": "tensor_parallel_size",
    "-tp": "tensor_parallel_size",
    "--gpu-memory-utilization": "gpu_memory_utilization",
    "--max-model-len": "max_model_len",
    "--enforce-eager": "enforce_eager",
    "--enable-sleep-mode": "enable_sleep_mode",
    "--host": "host",
    "--port": "port",
    "--middleware": "middleware",
    "--api-key": "api_key",
    "--hf-token": "hf_token",
    "--config": "config",
}
# argparse reads these as values, not flags (a parser with no option that looks like a negative number).
_NEGATIVE_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$")
# What an option name may look like (before any '='): no spaces, no control characters, no lookalikes.
_FLAG_NAME = re.compile(r"-{1,2}[A-Za-z0-9][A-Za-z0-9_.+-]*")
_OPTIMIZATION = re.compile(r"-O.")  # vLLM rewrites -O3, -O=3, -Odecode into --optimization-level VALUE


@dataclass(frozen=True)
class Option:
    dest: str
    takes: str  # "none", "one", "some" (one or more), "optional" (zero or one)


@dataclass
class FlagTable:
    vllm_version: str
    options: dict[str, Option]

    @cached_property
    def owned(self) -> dict[str, str]:
        """Every owned option string -> its destination."""
        found = {name: option.dest for name, option in self.options.items() if option.dest in OWNED}
        return {**_OWNED_FALLBACK, **found}


@dataclass(frozen=True)
class Finding:
    index: int
    message: str
    warning: bool = False


@cache
def flag_table() -> FlagTable:
    text = resources.files("fleet.schema").joinpath(TABLE_FILE).read_text(encoding="utf-8")
    data = json.loads(text)
    options = {name: Option(dest, takes) for name, (dest, takes) in data["options"].items()}
    return FlagTable(data["vllm_version"], options)


def check_args(args: Sequence[str], table: FlagTable | None = None) -> list[Finding]:
    """Every problem with a `vllm.args` list, each at the index of the argument it concerns."""
    return _ArgsReader(table or flag_table(), list(args)).read()


class _ArgsReader:
    def __init__(self, table: FlagTable, args: list[str]) -> None:
        self.table = table
        self.args = args
        self.owned = table.owned
        self.findings: list[Finding] = []
        self.seen: dict[str, str] = {}  # destination -> the flag that set it first

    def read(self) -> list[Finding]:
        i = 0
        while i < len(self.args):
            i = self.read_one(i)
        return self.findings

    def error(self, index: int, message: str) -> None:
        self.findings.append(Finding(index, message))

    def is_flag(self, index: int) -> bool:
        """Whether argparse reads args[index] as an option (a value that starts with '-' is one too)."""
        arg = self.args[index]
        return arg.startswith("-") and arg != "-" and not _NEGATIVE_NUMBER.match(arg)

    def read_one(self, i: int) -> int:
        """Judge the argument at i (and the values it takes); return the index of the next flag."""
        arg = self.args[i]
        if arg == "--":
            self.error(i, "'--' ends vLLM's options: fleet's own flags after it would be read as bare values")
            return i + 1
        if not self.is_flag(i):
            self.error(
                i,
                f"{excerpt(arg)} is a value with no flag before it: vLLM would read it as the model to serve "
                "(write the flag first, or FLAG=VALUE)",
            )
            return i + 1
        name, has_value = (arg.split("=", 1)[0], True) if "=" in arg else (arg, False)
        if _OPTIMIZATION.match(arg) or arg == "-O":
            return self.optimization_level(i)
        if not _FLAG_NAME.fullmatch(name):
            self.error(i, f"{excerpt(arg)} is not a flag name: one flag per list item, its value in the next item")
            return i + 1
        # vLLM folds '_' into '-' between the leading '--' and the first '.', then reads `--a.b` as `--a`.
        if name.startswith("--"):
            head, dot, tail = name[2:].partition(".")
            name = "--" + head.replace("_", "-") + dot + tail
        key, dotted = name.split(".", 1)[0], "." in name
        dest = self.owned_dest(key)
        if dest is not None:
            self.error(i, self.owned_message(arg, key, dest))
            takes = [o.takes for o in self.table.options.values() if o.dest == dest] or ["one"]
            return self.skip_values(i + 1, "none" if has_value else takes[0])
        if not key.startswith("--") and key not in self.table.options and key[:2] in self.table.options:
            has_value = True  # -qfp8: argparse reads -q with its value attached
        option, problem = self.resolve(key)
        if problem:
            self.findings.append(Finding(i, problem, warning=option is None and "ambiguous" not in problem))
        if option is not None and not dotted:
            if option.dest in self.seen:
                first = self.seen[option.dest]
                again = "is given twice" if first == key else f"repeats {first}"
                self.findings.append(Finding(i, f"{excerpt(key)} {again}: vLLM keeps only the last", warning=True))
            self.seen.setdefault(option.dest, key)
        takes = "one" if dotted else (option.takes if option else "unknown")
        if has_value:
            if takes == "none":
                self.error(i, f"'{key}' is a switch and takes no value: write it without '=...'")
            return i + 1
        return self.take_values(i, key, takes, dotted)

    def optimization_level(self, i: int) -> int:
        if self.args[i] != "-O":
            return i + 1
        if i + 1 < len(self.args) and self.args[i + 1] in {"0", "1", "2", "3"}:
            return i + 2
        self.error(i, "'-O' takes a level: write -O0 .. -O3 (or --optimization-level LEVEL)")
        return i + 1

    def owned_dest(self, key: str) -> str | None:
        """The owned option `key` is, abbreviates, or (for -tp2) starts with; None when it is none of them."""
        if key in self.owned:
            return self.owned[key]
        if key in self.table.options:  # an exact name wins over every prefix in argparse
            return None
        for owned, dest in self.owned.items():
            if owned.startswith(key) and len(key) > 1:
                return dest
            if not key.startswith("--") and not owned.startswith("--") and key.startswith(owned):
                return dest  # -tp2: a short option with its value attached
        return None

    def owned_message(self, arg: str, key: str, dest: str) -> str:
        names = sorted(n for n, d in self.owned.items() if d == dest)
        shown = excerpt(arg.split("=", 1)[0], 60)
        canonical = min((n for n in names if n.startswith("--")), key=len, default=names[0])
        spelled = "" if key in names else f" (vLLM reads abbreviations: this one reaches {canonical})"
        verdict = "is set by fleet" if dest in FLEET_SETS else "is refused"
        return f"{shown}{spelled} {verdict}: {OWNED[dest]}"

    def resolve(self, key: str) -> tuple[Option | None, str]:
        """The option argparse would pick for `key`, or None and why not."""
        if key in self.table.options:
            return self.table.options[key], ""
        if key.startswith("--"):
            matches = sorted(n for n in self.table.options if n.startswith(key))
        else:
            matches = sorted(n for n in self.table.options if not n.startswith("--") and n.startswith(key))
            if key[:2] in self.table.options and key[:2] not in matches:
                matches.append(key[:2])  # -qfp8: -q with its value attached
        dests = {self.table.options[m].dest for m in matches}
        if len(dests) == 1:
            return self.table.options[matches[0]], ""
        if matches:
            return None, f"{excerpt(key)} is ambiguous (vLLM refuses it at start): it could be {', '.join(matches[:4])}"
        return None, (
            f"{excerpt(key)} is not a flag of vLLM {self.table.vllm_version}'s server (the flag table fleet "
            "checks against): vLLM refuses an unknown flag at start, unless the pinned vllm_version added it"
        )

    def take_values(self, i: int, key: str, takes: str, dotted: bool) -> int:
        following = i + 1 < len(self.args) and not self.is_flag(i + 1)
        if takes in ("one", "some") and not following:
            where = "it is the last argument" if i + 1 >= len(self.args) else f"{excerpt(self.args[i + 1])} is a flag"
            fix = f"write {key}.KEY=VALUE" if dotted else f"give it a value, or write {key}=VALUE"
            what = "takes the next argument as its value whatever it is" if dotted else "needs a value"
            self.error(i, f"'{key}' {what}, but {where}: {fix}")
            return i + 1
        return self.skip_values(i + 1, takes)

    def skip_values(self, j: int, takes: str) -> int:
        """Step over the values argparse would give a flag that takes `takes`."""
        if takes == "none":
            return j
        if takes in ("one", "optional", "unknown"):
            return j + 1 if j < len(self.args) and not self.is_flag(j) else j
        while j < len(self.args) and not self.is_flag(j):
            j += 1
        return j


# --- the table, read from vLLM ------------------------------------------------------------------------


def read_parser() -> dict[str, Any]:
    """The option table of the installed vLLM's OpenAI server (imports vLLM: ~10 s)."""
    import vllm
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = make_arg_parser(FlexibleArgumentParser())
    options = {}
    for action in parser._actions:  # argparse has no public way to list them
        takes = {0: "none", None: "one", "+": "some", "?": "optional", "*": "some"}.get(action.nargs, "one")
        for name in action.option_strings:
            options[name] = [action.dest, takes]
    return {
        "vllm_version": vllm.__version__.split("+")[0],
        "source": "vllm.entrypoints.launchers.cli_args.make_arg_parser (python -m fleet.vllm_flags)",
        "options": dict(sorted(options.items())),
    }


def table_json(table: dict[str, Any]) -> str:
    lines = [f'  {json.dumps(name)}: {json.dumps(value)}' for name, value in table["options"].items()]
    head = f'{{\n  "vllm_version": {json.dumps(table["vllm_version"])},\n  "source": {json.dumps(table["source"])},\n'
    return head + '  "options": {\n  ' + ",\n  ".join(lines) + "\n  }\n}\n"


if __name__ == "__main__":  # pragma: no cover - a maintainer's tool
    from pathlib import Path

    target = Path(__file__).parent / "schema" / TABLE_FILE
    target.write_text(table_json(read_parser()), encoding="utf-8")
    print(f"wrote {target}")
