"""vLLM releases known to break sleep/wake (what a GPU snapshot relies on) for some models or for TP > 1.

Each row is a public vLLM issue, read before it was written here (the `search` tool, issues corpus,
2026-11-29): a row covers the release series its reporters named (0.14.x and 0.15.x for #32714), no
wider, except where a comment says the bound is inferred. `fleet validate` warns when a snapshot model
matches a row; a warning, not an error: a fix may have been backported, and the rows are reports.
Left out on purpose: vllm #44395 (a crash after a partial wake, `wake_up(tags=["weights"])`, 0.22.0):
fleet's runtime always wakes fully, so no catalog entry can match it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from .spec import ModelSpec

Version = tuple[int, int, int]


def parse_version(text: str) -> Version:
    major, minor, patch = (int(part) for part in text.split("."))
    return major, minor, patch


def _kv_cache_dtype(spec: ModelSpec) -> str:
    """The --kv-cache-dtype the model's args ask for ("auto" when none)."""
    args = list(spec.vllm_args)
    for i, arg in enumerate(args):
        if arg.startswith("--kv-cache-dtype="):
            return arg.split("=", 1)[1]
        if arg in ("--kv-cache-dtype", "--kv_cache_dtype") and i + 1 < len(args):
            return args[i + 1]
    return "auto"


# Hybrid attention families (linear-attention / Mamba / DeltaNet layers beside attention): their per-layer
# state is a list of tensors, which the wake path of #41563 did not expect.
_HYBRID = re.compile(r"qwen3\.[5-9]|qwen3-next|qwen3-coder-next|nemotron-h|nemotron-3|nemotron-omni", re.I)


@dataclass(frozen=True)
class KnownIssue:
    first: Version  # first affected release, as reported
    last: Version  # last affected release, as reported (inclusive)
    applies: Callable[[ModelSpec], bool]
    what: str  # what breaks, for whom
    source: str  # the public issue

    def matches(self, version: str, spec: ModelSpec) -> bool:
        return spec.snapshot and self.first <= parse_version(version) <= self.last and self.applies(spec)


KNOWN_ISSUES: tuple[KnownIssue, ...] = (
    KnownIssue(
        first=(0, 14, 0),
        last=(0, 15, 999),
        applies=lambda spec: spec.gpu_count > 1,
        what="sleep level 1 with tensor parallelism leaves ~16 GB per GPU allocated (0.13.0 freed all but ~1 GB); "
        "reported on 0.14.0 and 0.15.0",
        source="vllm issue #32714",
    ),
    KnownIssue(
        # Inferred lower bound: the wake-up zeroing that fails came with vllm PR #28783 (merged 2025-11).
        first=(0, 12, 0),
        last=(0, 25, 999),
        applies=lambda spec: bool(_HYBRID.search(spec.model_id)) and _kv_cache_dtype(spec).startswith("fp8"),
        what="/wake_up fails (\"'list' object has no attribute 'zero_'\") on hybrid models such as Qwen3.6 with an "
        "fp8 KV cache and the engine stays wedged (nightlies of 2026-05 and 2026-07); on 0.25.1 the same setup "
        "did not start with sleep mode on",
        source="vllm issues #41563, #49237",
    ),
)


def known_issues(version: str, spec: ModelSpec) -> list[KnownIssue]:
    return [issue for issue in KNOWN_ISSUES if issue.matches(version, spec)]
