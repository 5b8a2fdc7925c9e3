"""`fleet plan`, `fleet deploy`, `fleet destroy`: compare the catalog with Modal and act on the difference."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from ..errors import ModalUnavailable
from .common import (
    CATALOG_OPTION,
    ENV_OPTION,
    JSON_OPTION,
    OUT_OPTION,
    _client,
    _rendered,
    echo_table,
    finish,
    selection,
    with_names,
)

@click.command()
@with_names
@ENV_OPTION
@CATALOG_OPTION
@JSON_OPTION
def plan(names: tuple[str, ...], all_models: bool, environment: str | None, catalog_dir: Path, as_json: bool) -> None:
    """Compare the catalog with Modal: new, changed, unchanged, orphaned.

    \b
    Example:
      fleet plan --all
      fleet plan qwen3-4b
    """
    from ..deploy import make_plan

    selection(names, all_models, required=False)
    catalog, apps = _rendered(catalog_dir, names, gateway=True)
    prefix = None if names else catalog.settings.prefix
    deployed = _client(catalog, environment).deployed_apps(catalog.settings.prefix)
    items = make_plan(apps, deployed, orphans_of=prefix)
    if as_json:
        click.echo(json.dumps([{"name": i.name, "app": i.app_name, "action": i.action.value} for i in items], indent=2))
        return
    echo_table(["NAME", "APP", "ACTION"], [[i.name, i.app_name, i.action.value] for i in items])


@click.command()
@with_names
@click.option("--parallel", default=4, show_default=True, type=click.IntRange(1, 32), help="Deploys at once.")
@click.option("--force", is_flag=True, help="Redeploy unchanged apps too (throws their snapshots away).")
@click.option("--dry-run", is_flag=True, help="Validate, render and show the plan; deploy nothing. No account needed.")
@click.option("--skip-weights", is_flag=True, help="Do not pre-download weights into the shared cache.")
@OUT_OPTION
@ENV_OPTION
@CATALOG_OPTION
def deploy(
    names: tuple[str, ...],
    all_models: bool,
    parallel: int,
    force: bool,
    dry_run: bool,
    skip_weights: bool,
    out_dir: Path,
    environment: str | None,
    catalog_dir: Path,
) -> None:
    """Deploy models to Modal: validate, render, then deploy new and changed apps in parallel.

    Unchanged apps are skipped (a redeploy throws their GPU snapshot away) unless --force.

    \b
    Example:
      fleet deploy --all --dry-run
      fleet deploy --all --parallel 8
      fleet deploy qwen3.6-27b --force
    """
    from ..deploy import apply_plan, check_secrets, make_plan

    selection(names, all_models, required=True)
    catalog, apps = _rendered(catalog_dir, names, out_dir, gateway=True)
    if dry_run:
        _print_dry_run(apps, out_dir, _plan_if_reachable(apps, catalog, environment, force))
        return
    client = _client(catalog, environment)
    check_secrets(client, [a.spec for a in apps], catalog.settings)
    items = make_plan(apps, client.deployed_apps(catalog.settings.prefix))

    def progress(name: str, message: str) -> None:
        click.echo(f"[{name}] {message}")

    outcomes = apply_plan(
        items, client, out_dir, force=force, parallel=parallel, fetch_weights=not skip_weights, progress=progress
    )
    click.echo()
    rows = [
        [o.item.name, o.item.action.value, o.result, f"{o.seconds:.1f}s", o.url or (o.error or "").split("\n")[0]]
        for o in outcomes
    ]
    echo_table(["NAME", "ACTION", "RESULT", "TIME", "URL / ERROR"], rows)
    failed = [o for o in outcomes if o.failed]
    deployed = len([o for o in outcomes if o.result == "deployed"])
    skipped = len([o for o in outcomes if o.result == "skipped"])
    click.echo(f"\n{deployed} deployed, {skipped} unchanged (skipped), {len(failed)} failed")
    finish([(o.item.name, o.error or "failed") for o in failed])


def _plan_if_reachable(apps: list[Any], catalog: Any, environment: str | None, force: bool) -> dict[str, str]:
    """What a deploy would do per model, read from Modal when credentials are there; {} without an account."""
    from ..deploy import Action, make_plan
    from ..modal_api import ModalClient

    client = ModalClient(environment or catalog.settings.environment)
    try:
        client.require_credentials()
    except ModalUnavailable:
        return {}
    items = make_plan(apps, client.deployed_apps(catalog.settings.prefix))
    skip = {Action.UNCHANGED: "skip (unchanged)"}
    return {i.name: ("redeploy (--force)" if force else skip.get(i.action, f"deploy ({i.action.value})")) for i in items}


def _print_dry_run(apps: list[Any], out_dir: Path, plan: dict[str, str]) -> None:
    from ..errors import display_path

    click.echo(f"Dry run: {len(apps)} app(s) rendered into {display_path(out_dir)}; nothing deployed.")
    rows = [
        [
            a.spec.name,
            plan.get(a.spec.name, "deploy"),
            f"{a.spec.gpu_type} x{a.spec.gpu_count}",
            "on" if a.spec.snapshot else "off",
            ", ".join(a.spec.secrets),
            a.spec_hash,
        ]
        for a in apps
    ]
    echo_table(["NAME", "WOULD", "GPU", "SNAPSHOT", "SECRETS", "SPEC HASH"], rows)
    if not plan:
        click.echo("No Modal credentials: every app is shown as a deploy. With them, unchanged apps show as skipped.")

@click.command()
@click.argument("names", nargs=-1)
@click.option("--orphans", is_flag=True, help="Stop every fleet app that is no longer in the catalog.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@ENV_OPTION
@CATALOG_OPTION
def destroy(names: tuple[str, ...], orphans: bool, yes: bool, environment: str | None, catalog_dir: Path) -> None:
    """Stop deployed apps (by model NAME, or every orphan). Their snapshots are lost.

    \b
    Example:
      fleet destroy qwen3-4b
      fleet destroy --orphans --yes
    """
    from ..catalog import load_catalog, select
    from ..deploy import Action, make_plan, stop_apps
    from ..render import render_all

    if bool(names) == orphans:
        raise click.UsageError("give model NAMES or --orphans (one of them)")
    catalog = load_catalog(catalog_dir)
    client = _client(catalog, environment)
    deployed = client.deployed_apps(catalog.settings.prefix)
    if orphans:
        from ..gateway.render import gateway_apps

        apps = render_all(list(catalog.models)) + gateway_apps(catalog)
        items = make_plan(apps, deployed, orphans_of=catalog.settings.prefix)
        targets = [i.app_name for i in items if i.action is Action.ORPHANED]
    else:
        targets = [spec.app_name for spec in select(catalog, names) if spec.app_name in deployed]
    if not targets:
        click.echo("nothing to stop")
        return
    if not yes:
        click.confirm(f"Stop {', '.join(targets)}? Their endpoints and snapshots go away", abort=True)
    failed = []
    for app_name, error in stop_apps(client, targets):
        if error is None:
            click.echo(f"stopped {app_name}")
        else:
            failed.append(app_name)
            click.echo(f"error: {app_name}: {error}", err=True)
    sys.exit(1 if failed else 0)

COMMANDS = [plan, deploy, destroy]
