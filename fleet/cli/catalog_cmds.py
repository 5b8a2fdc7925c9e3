"""`fleet validate`, `fleet list`, `fleet render`: the commands that need only the catalog (no Modal account)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .common import CATALOG_OPTION, JSON_OPTION, OUT_OPTION, echo_table, print_problems, selection

@click.command()
@click.argument("names", nargs=-1)
@CATALOG_OPTION
@JSON_OPTION
@click.option("--strict", is_flag=True, help="Treat warnings as errors.")
def validate(names: tuple[str, ...], catalog_dir: Path, as_json: bool, strict: bool) -> None:
    """Check the catalog (or the NAMES given) and report every problem at once.

    Exit 0 when valid, 1 when not (or on warnings with --strict), 2 on usage errors.

    \b
    Example:
      fleet validate
      fleet validate qwen3.6-27b --strict
    """
    from ..catalog import check_catalog, model_files, select_problems

    result = check_catalog(catalog_dir)
    problems = select_problems(result, names)
    errors = [p for p in problems if not p.warning or strict]
    if as_json:
        report = {"valid": not errors, "problems": [p.as_dict() for p in problems]}
        click.echo(json.dumps(report, indent=2))
    else:
        print_problems(problems)
        checked = len(names) if names else len(model_files(catalog_dir))
        warnings = len(problems) - len([p for p in problems if not p.warning])
        verdict = "invalid" if errors else "valid"
        click.echo(f"{checked} model file(s) checked: {verdict}, {len(errors)} error(s), {warnings} warning(s)")
    sys.exit(1 if errors else 0)


@click.command("list")
@CATALOG_OPTION
@JSON_OPTION
def list_models(catalog_dir: Path, as_json: bool) -> None:
    """Show the catalog as a table: model, GPU, snapshot, scaling.

    \b
    Example:
      fleet list
      fleet list --json
    """
    from ..catalog import load_catalog

    catalog = load_catalog(catalog_dir)
    rows = [
        {
            "name": m.name,
            "description": m.description,
            "model": m.model_id,
            "revision": m.revision,
            "gpu": m.gpu_type,
            "gpu_count": m.gpu_count,
            "snapshot": m.snapshot,
            "fast_boot": m.fast_boot,
            "min_containers": m.scaling.min_containers,
            "max_containers": m.scaling.max_containers,
            "max_concurrent_requests": m.scaling.max_concurrent_requests,
            "scaledown_window": m.scaling.scaledown_window,
        }
        for m in catalog.models
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = [
        [
            r["name"],
            r["model"],
            f"{r['gpu']} x{r['gpu_count']}",
            "on" if r["snapshot"] else "off",
            f"{r['min_containers']}-{r['max_containers']} x{r['max_concurrent_requests']}, idle {r['scaledown_window']}s",
            r["description"],
        ]
        for r in rows
    ]
    echo_table(["NAME", "MODEL", "GPU", "SNAPSHOT", "SCALING", "DESCRIPTION"], table)

@click.command()
@click.argument("names", nargs=-1)
@click.option("--all", "all_models", is_flag=True, help="Every model in the catalog (the default).")
@OUT_OPTION
@click.option("--check", is_flag=True, help="Write nothing; exit 1 if a file on disk differs from the catalog.")
@CATALOG_OPTION
def render(names: tuple[str, ...], all_models: bool, out_dir: Path, check: bool, catalog_dir: Path) -> None:
    """Generate one Modal app per model (build/apps/<prefix>_<name>.py).

    \b
    Example:
      fleet render --all
      fleet render qwen3.6-27b --out /tmp/apps
      fleet render --check        # exit 1 if build/apps differs from the catalog
    """
    from ..catalog import load_catalog, select
    from ..errors import display_path
    from ..render import render_all, stale_files, write_apps

    catalog = load_catalog(catalog_dir)
    apps = render_all(select(catalog, selection(names, all_models, required=False)))
    if not names:
        from ..gateway.render import gateway_apps

        apps += gateway_apps(catalog)
    if check:
        stale = stale_files(apps, out_dir, prefix=None if names else catalog.settings.prefix)
        expected = {out_dir / app.filename for app in apps}
        for path in stale:
            why = "out of date (run `fleet render`)" if path in expected else "not from any catalog model (delete it)"
            click.echo(f"{display_path(path)}: {why}", err=True)
        click.echo(f"{len(apps) - len(set(stale) & expected)} of {len(apps)} rendered app(s) up to date")
        sys.exit(1 if stale else 0)
    for path in write_apps(apps, out_dir):
        click.echo(f"wrote {display_path(path)}")

COMMANDS = [validate, list_models, render]
