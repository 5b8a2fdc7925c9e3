"""`fleet lock` and `fleet new`: the commands that ask the Hugging Face hub (no Modal account needed)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .common import CATALOG_OPTION, JSON_OPTION, echo_table, finish, selection, with_names


@click.command("lock")
@with_names
@click.option("--upgrade", is_flag=True, help="Move branch revisions (main) to their newest commit.")
@click.option("--parallel", default=16, show_default=True, type=click.IntRange(1, 64), help="Hub requests at once.")
@CATALOG_OPTION
@JSON_OPTION
def lock(
    names: tuple[str, ...], all_models: bool, upgrade: bool, parallel: int, catalog_dir: Path, as_json: bool
) -> None:
    """Pin every model (or the NAMES given) to a commit and the exact files vLLM loads: catalog/fleet.lock.

    Asks the Hugging Face hub (HF_ENDPOINT and HF_TOKEN as you set them) only for models that are new or
    whose id, revision or load format changed; --upgrade asks for every named model again. One model that
    fails (gated without a token, not found, hub unreachable) is reported and the others still lock.

    \b
    Example:
      fleet lock                     # the whole catalog
      fleet lock qwen3-4b --upgrade  # move qwen3-4b's `main` to its newest commit
    """
    from ..catalog import check_catalog, select
    from ..errors import CatalogInvalid, display_path
    from ..hub import Hub
    from ..lock import lock_catalog

    result = check_catalog(catalog_dir)
    if result.errors or result.catalog is None:
        raise CatalogInvalid(result.problems)
    catalog = result.catalog
    selected = select(catalog, selection(names, all_models, required=False))
    report = lock_catalog(catalog, selected, Hub(), upgrade=upgrade, prune=not names, workers=parallel)
    if report.note:
        click.echo(f"warning: {report.note}", err=True)
    if as_json:
        rows = [
            {
                "name": o.name,
                "action": o.action,
                "commit": o.entry.commit if o.entry else None,
                "previous_commit": o.previous.commit if o.previous else None,
                "files": len(o.entry.files) if o.entry else None,
                "total_bytes": o.entry.total_bytes if o.entry else None,
                "error": o.error,
            }
            for o in report.outcomes
        ]
        click.echo(json.dumps({"lock": display_path(report.path), "written": report.written, "models": rows}, indent=2))
    else:
        table = [
            [
                o.name,
                o.action,
                _commit_change(o),
                str(len(o.entry.files)) if o.entry else "-",
                _gigabytes(o.entry.total_bytes) if o.entry else "-",
            ]
            for o in report.outcomes
        ]
        echo_table(["NAME", "ACTION", "COMMIT", "FILES", "SIZE"], table)
        actions = ("locked", "updated", "unchanged", "removed", "failed")
        counts = {a: sum(o.action == a for o in report.outcomes) for a in actions}
        summary = ", ".join(f"{n} {a}" for a, n in counts.items() if n)
        state = "written" if report.written else "unchanged"
        click.echo(f"{display_path(report.path)} {state}: {summary or 'nothing to lock'}")
    finish([(o.name, o.error or "failed") for o in report.failed])


def _commit_change(outcome: object) -> str:
    entry, previous = getattr(outcome, "entry"), getattr(outcome, "previous")
    if entry is None:
        return previous.commit[:12] if previous else "-"
    if previous is not None and previous.commit != entry.commit:
        return f"{previous.commit[:12]} -> {entry.commit[:12]}"
    return entry.commit[:12]


def _gigabytes(count: int) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= size / 10:
            return f"{count / size:.1f} {unit}"
    return f"{count} B"


@click.command("new")
@click.argument("hf_id")
@click.option("--gpu", "gpu_type", default=None, help="Only this GPU type (the cheapest count of it that fits).")
@click.option("--name", default=None, help="Model name and file stem (default: from the repo name).")
@click.option("--max-model-len", type=click.IntRange(1), default=None, help="Context length to size the KV cache for.")
@click.option("--dry-run", is_flag=True, help="Show the entry and the reasoning; write nothing.")
@CATALOG_OPTION
@JSON_OPTION
def new(
    hf_id: str,
    gpu_type: str | None,
    name: str | None,
    max_model_len: int | None,
    dry_run: bool,
    catalog_dir: Path,
    as_json: bool,
) -> None:
    """Write catalog/NAME.yaml for a Hugging Face model, on the cheapest GPU that holds it, and lock it.

    Reads config.json and the file sizes from the hub; sizes the GPU for the weights plus a KV cache for the
    context (the model's, capped at 32768 unless --max-model-len) at memory utilization 0.85, with prices from
    fleet/prices.py; says why, and what the next cheaper option lacked.

    \b
    Example:
      fleet new Qwen/Qwen3-8B
      fleet new meta-llama/Llama-3.1-8B-Instruct --gpu L40S --name llama-8b
    """
    from ..errors import display_path
    from ..hub import Hub
    from ..newmodel import fleet_prefix, propose, write_proposal

    prefix = fleet_prefix(catalog_dir)  # the name must leave room for it in the URL label
    proposal = propose(Hub(), hf_id, prefix=prefix, name=name, gpu=gpu_type, max_model_len=max_model_len)
    path = None if dry_run else write_proposal(catalog_dir, proposal)
    if as_json:
        choice = proposal.choice
        report = {
            "name": proposal.name,
            "file": display_path(path) if path else None,
            "entry": proposal.entry(),
            "commit": proposal.lock_entry.commit,
            "weight_bytes": proposal.facts.weight_bytes,
            "kv_bytes": proposal.facts.kv_bytes(proposal.context),
            "needed_bytes": choice.needed_bytes,
            "gpu": {"type": choice.gpu_type, "count": choice.count, "usd_per_hour": choice.usd_per_hour},
            "next_cheaper": proposal.cheaper.label if proposal.cheaper else None,
            "next_cheaper_lacks": proposal.cheaper.lacks() if proposal.cheaper else None,
            "explanation": proposal.explanation(),
        }
        click.echo(json.dumps(report, indent=2))
        return
    for line in proposal.explanation():
        click.echo(line)
    if path is None:
        click.echo(proposal.yaml_text(), nl=False)
    else:
        click.echo(f"wrote {display_path(path)} and locked it at {proposal.lock_entry.commit[:12]}")


COMMANDS = [lock, new]
