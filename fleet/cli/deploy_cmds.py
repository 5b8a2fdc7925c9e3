"""`fleet plan`, `fleet deploy`, `fleet destroy`: one plan (fleet/plan.py), printed, then applied as printed."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
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

EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a command stopped by Ctrl-C
FORCE_OPTION = click.option(
    "--force", is_flag=True, help="Plan a redeploy of unchanged apps too (throws their snapshots away)."
)
HISTORY_OPTION = click.option(
    "--bench-history",
    "history",
    type=click.Path(path_type=Path, dir_okay=False),
    default=Path("bench-history.jsonl"),
    show_default=True,
    help="`fleet bench --json` history: the cold starts that price a lost snapshot.",
)


@click.command()
@with_names
@FORCE_OPTION
@click.option(
    "--detailed-exitcode",
    is_flag=True,
    help="Exit 0 when there is nothing to do, 2 when there are changes, 1 on error.",
)
@HISTORY_OPTION
@ENV_OPTION
@CATALOG_OPTION
@JSON_OPTION
def plan(
    names: tuple[str, ...],
    all_models: bool,
    force: bool,
    detailed_exitcode: bool,
    history: Path,
    environment: str | None,
    catalog_dir: Path,
    as_json: bool,
) -> None:
    """Compare the catalog with Modal: create, redeploy (snapshot lost, with its cost), update live, unchanged,
    orphan; each with why (key: deployed -> catalog).

    \b
    Example:
      fleet plan --all
      fleet plan qwen3-4b --json
      fleet plan --all --detailed-exitcode   # in CI: 0 nothing to do, 2 changes
    """
    from ..deploy import read_plan

    selection(names, all_models, required=False)
    catalog, apps = _rendered(catalog_dir, names, gateway=True)
    client = _client(catalog, environment)
    the_plan = read_plan(client, apps, catalog.settings.prefix, force=force, orphans=not names, history=history)
    if as_json:
        click.echo(json.dumps(the_plan.as_dict(), indent=2))
    else:
        print_plan(the_plan)
    if detailed_exitcode:
        sys.exit(the_plan.detailed_exit_code)


@click.command()
@with_names
@click.option("--parallel", default=4, show_default=True, type=click.IntRange(1, 32), help="Deploys at once.")
@FORCE_OPTION
@click.option("--dry-run", is_flag=True, help="Validate, render and show the plan; deploy nothing. No account needed.")
@click.option("--skip-weights", is_flag=True, help="Do not pre-download weights into the shared cache.")
@click.option(
    "--break-lock", is_flag=True, help="Take over the fleet's deploy lock if its holder left it (older than 60 min)."
)
@HISTORY_OPTION
@OUT_OPTION
@ENV_OPTION
@CATALOG_OPTION
@JSON_OPTION
def deploy(
    names: tuple[str, ...],
    all_models: bool,
    parallel: int,
    force: bool,
    dry_run: bool,
    skip_weights: bool,
    break_lock: bool,
    history: Path,
    out_dir: Path,
    environment: str | None,
    catalog_dir: Path,
    as_json: bool,
) -> None:
    """Deploy models to Modal: validate, render, print the plan, then apply exactly that plan.

    Unchanged apps are skipped (a redeploy throws their GPU snapshot away); a change to scaling only is
    applied to the running app, without a deploy. One deploy per fleet at a time (a lock in Modal). Ctrl-C
    stops queueing, lets deploys in flight finish, prints what was done and exits 130.

    \b
    Example:
      fleet deploy --all --dry-run
      fleet deploy --all --parallel 8
      fleet deploy qwen3.6-27b --force
    """
    from ..deploy import Stop, apply_plan, check_secrets, deploy_lock, read_plan

    selection(names, all_models, required=True)
    catalog, apps = _rendered(catalog_dir, names, out_dir, gateway=True)
    prefix = catalog.settings.prefix
    if dry_run:
        _dry_run(apps, catalog, environment, out_dir, force=force, orphans=not names, history=history, as_json=as_json)
        return
    client = _client(catalog, environment)
    check_secrets(client, apps, catalog.settings)
    stop = Stop()
    with deploy_lock(client, prefix, break_stale=break_lock):
        # Planned under the lock: a deploy running meanwhile could not change what this one applies.
        the_plan = read_plan(client, apps, prefix, force=force, orphans=not names, history=history)
        if not as_json:
            print_plan(the_plan)
            click.echo()
        with _interruptible(stop):
            applied = apply_plan(
                the_plan, client, out_dir, parallel=parallel, fetch_weights=not skip_weights,
                progress=_progress(err=as_json), stop=stop,
            )
    if as_json:
        click.echo(json.dumps({"plan": the_plan.as_dict(), "outcomes": [o.as_dict() for o in applied.outcomes],
                               "summary": applied.summary(), "interrupted": applied.interrupted}, indent=2))
    else:
        _print_outcomes(applied)
    if applied.interrupted:
        for outcome in applied.failed:
            click.echo(f"error: {outcome.item.name}: {outcome.error or 'failed'}", err=True)
        click.echo(f"error: interrupted; {applied.summary()}. Run `fleet plan` to see what is left.", err=True)
        sys.stdout.flush()
        sys.stderr.flush()
        if stop.abandon.is_set():
            os._exit(EXIT_INTERRUPTED)  # deploys still in flight: do not wait for their threads
        sys.exit(EXIT_INTERRUPTED)
    finish([(o.item.name, o.error or "failed") for o in applied.failed])


def print_plan(the_plan: Any) -> None:
    """The plan as a table (action and why per app), each lost snapshot's cost, then the summary line."""
    rows = [[i.name, i.action.value, i.why or "-"] for i in the_plan.items]
    if rows:
        echo_table(["NAME", "ACTION", "WHY"], rows)
    for item in the_plan.items:
        if item.cost is not None:
            click.echo(f"  {item.name}: redeploy discards its snapshot: {item.cost}")
    click.echo(the_plan.summary())
    total = the_plan.total_cost_usd()
    if total is not None:
        from ..prices import price_note

        click.echo(f"Lost snapshots cost about ${total[0]:.2f}-${total[1]:.2f} in slow cold starts; {price_note()}")


def _print_outcomes(applied: Any) -> None:
    rows = [
        [o.item.name, o.item.action.value, o.result, f"{o.seconds:.1f}s", o.url or (o.error or "").split("\n")[0]]
        for o in applied.outcomes
    ]
    click.echo()
    echo_table(["NAME", "ACTION", "RESULT", "TIME", "URL / ERROR"], rows)
    click.echo(f"\n{applied.summary()}")
    for outcome in applied.outcomes:
        for note in outcome.notes:
            click.echo(f"note: {outcome.item.name}: {note}")


def _progress(*, err: bool) -> Any:
    def progress(name: str, message: str) -> None:
        click.echo(f"[{name}] {message}", err=err)

    return progress


@contextmanager
def _interruptible(stop: Any) -> Iterator[None]:
    """Ctrl-C during the apply: the first stops queueing (in-flight deploys finish), the second stops
    waiting for them. SIGTERM (a CI job cancelled) counts the same. Outside the main thread (tests calling
    the command in a thread) nothing is installed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_sigint(signum: int, frame: Any) -> None:
        if stop.requested.is_set():
            click.echo("\ninterrupted again: not waiting for the deploys in flight (their apps stay marked pending)",
                       err=True)
        else:
            click.echo("\ninterrupted: nothing new starts; waiting for the deploys in flight (Ctrl-C again to stop "
                       "waiting)", err=True)
        stop.interrupt()

    previous = {sig: signal.signal(sig, on_sigint) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _dry_run(
    apps: list[Any], catalog: Any, environment: str | None, out_dir: Path, *, force: bool, orphans: bool,
    history: Path, as_json: bool,
) -> None:
    """The plan a deploy would apply, read from Modal when credentials are there; without an account, the
    rendered apps (every one shown as to create, since nothing can be compared)."""
    from ..deploy import read_plan
    from ..errors import display_path
    from ..modal_api import ModalClient

    client = ModalClient(environment or catalog.settings.environment)
    try:
        client.require_credentials()
    except ModalUnavailable:
        client = None
    if client is not None:
        the_plan = read_plan(client, apps, catalog.settings.prefix, force=force, orphans=orphans, history=history)
        if as_json:
            click.echo(json.dumps({"dry_run": True, "plan": the_plan.as_dict()}, indent=2))
            return
        click.echo(f"Dry run: {len(apps)} app(s) rendered into {display_path(out_dir)}; nothing deployed.")
        print_plan(the_plan)
        return
    if as_json:
        click.echo(json.dumps({"dry_run": True, "plan": None, "apps": [a.name for a in apps]}, indent=2))
        return
    click.echo(f"Dry run: {len(apps)} app(s) rendered into {display_path(out_dir)}; nothing deployed.")
    rows = [
        [
            a.name,
            "create?",
            f"{a.gpu_type} x{a.gpu_count}" if a.gpu_type else "CPU",
            "on" if a.snapshot else "off",
            ", ".join(a.secrets),
            a.spec_hash,
        ]
        for a in apps
    ]
    echo_table(["NAME", "WOULD", "GPU", "SNAPSHOT", "SECRETS", "SPEC HASH"], rows)
    click.echo("No Modal credentials: nothing compared with Modal. With them, this shows the plan `fleet plan` shows.")


@click.command()
@click.argument("names", nargs=-1)
@click.option("--orphans", is_flag=True, help="Stop every fleet app that is no longer in the catalog.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@ENV_OPTION
@CATALOG_OPTION
def destroy(names: tuple[str, ...], orphans: bool, yes: bool, environment: str | None, catalog_dir: Path) -> None:
    """Stop deployed apps (by model NAME, or every orphan the plan finds). Their snapshots are lost.

    \b
    Example:
      fleet destroy qwen3-4b
      fleet destroy --orphans --yes
    """
    from ..catalog import load_catalog, select
    from ..deploy import read_plan, stop_apps
    from ..gateway.render import gateway_apps
    from ..render import render_all

    if bool(names) == orphans:
        raise click.UsageError("give model NAMES or --orphans (one of them)")
    catalog = load_catalog(catalog_dir)
    client = _client(catalog, environment)
    if orphans:
        apps = render_all(list(catalog.models)) + gateway_apps(catalog)  # the gateway is never an orphan
        the_plan = read_plan(client, apps, catalog.settings.prefix, orphans=True)
        targets = [i.app_name for i in the_plan.orphans]
    else:
        deployed = client.deployed_apps(catalog.settings.prefix)
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
