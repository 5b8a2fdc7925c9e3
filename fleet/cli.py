"""The `fleet` command: parses arguments, calls the stages, prints. No logic of its own lives here.

Imports of the stages happen inside each command, so `fleet --help` stays fast and never imports modal.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from .errors import CatalogInvalid, FleetError, ModalUnavailable, Problem, warnings_summary

CATALOG_OPTION = click.option(
    "--catalog",
    "catalog_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("catalog"),
    envvar="FLEET_CATALOG",
    show_default=True,
    help="Catalog directory (env FLEET_CATALOG).",
)
JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print a machine-readable report.")
OUT_OPTION = click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("build/apps"),
    show_default=True,
    help="Where the generated apps are written.",
)


class FleetGroup(click.Group):
    """Funnels the user's mistakes into one `error: ...` line and exit code 1; bugs keep their traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CatalogInvalid as exc:
            print_problems(exc.problems)
            click.echo(f"error: {exc}", err=True)
            ctx.exit(1)
        except FleetError as exc:
            if ctx.obj and ctx.obj.get("verbose"):
                raise
            click.echo(f"error: {exc}", err=True)
            ctx.exit(1)
        except Exception as exc:
            # Modal's own errors (not found, auth, server) are the user's to read, not a traceback.
            if not type(exc).__module__.startswith(("modal.", "grpclib.")) or (ctx.obj and ctx.obj.get("verbose")):
                raise
            from .modal_api import describe_error

            click.echo(f"error: Modal: {describe_error(exc)}", err=True)
            ctx.exit(1)


@click.group(cls=FleetGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Show tracebacks for errors.")
@click.version_option(package_name="fleet")
@click.pass_context
def main(ctx: click.Context, verbose: bool) -> None:
    """Deploy a catalog of open LLMs as scale-to-zero vLLM endpoints on Modal."""
    ctx.obj = {"verbose": verbose}


def print_problems(problems: list[Problem]) -> None:
    for problem in problems:
        click.echo(str(problem), err=True)


def print_warnings_summary(problems: list[Problem]) -> None:
    """Warnings are printed in full by `validate` only; every other command says how many there are."""
    line = warnings_summary(sum(1 for p in problems if p.warning))
    if line:
        click.echo(line, err=True)


@main.command()
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
    from .catalog import check_catalog, model_files, select_problems

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


@main.command("list")
@CATALOG_OPTION
@JSON_OPTION
def list_models(catalog_dir: Path, as_json: bool) -> None:
    """Show the catalog as a table: model, GPU, snapshot, scaling.

    \b
    Example:
      fleet list
      fleet list --json
    """
    from .catalog import load_catalog

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


def finish(errors: list[tuple[str, str]]) -> None:
    """End a command that acted on several models: each failure as `error: NAME: ...`, exit 1 if any."""
    for name, message in errors:
        click.echo(f"error: {name}: {message}", err=True)
    sys.exit(1 if errors else 0)


def echo_table(header: list[str], rows: list[list[str]], echo: Callable[[str], None] = click.echo) -> None:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows)]
    for row in [header, *rows]:
        echo("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())


def selection(names: tuple[str, ...], all_models: bool, *, required: bool) -> tuple[str, ...]:
    """NAMES or --all (not both); when `required`, one of them must be given."""
    if names and all_models:
        raise click.UsageError("give model NAMES or --all, not both")
    if required and not names and not all_models:
        raise click.UsageError("name the models to act on, or pass --all")
    return names


@main.command()
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
    from .catalog import load_catalog, select
    from .errors import display_path
    from .render import render_all, stale_files, write_apps

    catalog = load_catalog(catalog_dir)
    apps = render_all(select(catalog, selection(names, all_models, required=False)))
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


ENV_OPTION = click.option("--env", "environment", default=None, help="Modal environment (default: _fleet.yaml's).")
NAMES_ARGUMENTS = [
    click.argument("names", nargs=-1),
    click.option("--all", "all_models", is_flag=True, help="Every model in the catalog."),
]


def with_names(function: Callable[..., Any]) -> Callable[..., Any]:
    for decorator in reversed(NAMES_ARGUMENTS):
        function = decorator(function)
    return function


def _rendered(catalog_dir: Path, names: tuple[str, ...], out_dir: Path | None = None) -> tuple[Any, list[Any]]:
    """Validate, select and render (writing the files only into `out_dir`): all before Modal is touched."""
    from .catalog import check_catalog, select
    from .render import render_all, write_apps

    result = check_catalog(catalog_dir)
    if result.errors or result.catalog is None:
        raise CatalogInvalid(result.problems)
    print_warnings_summary(result.warnings)
    catalog = result.catalog
    apps = render_all(select(catalog, names))
    if out_dir is not None:
        write_apps(apps, out_dir)
    return catalog, apps


def _client(catalog: Any, environment: str | None) -> Any:
    from .modal_api import ModalClient

    client = ModalClient(environment or catalog.settings.environment)
    client.require_credentials()
    return client


@main.command()
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
    from .deploy import make_plan

    selection(names, all_models, required=False)
    catalog, apps = _rendered(catalog_dir, names)
    prefix = None if names else catalog.settings.prefix
    deployed = _client(catalog, environment).deployed_apps(catalog.settings.prefix)
    items = make_plan(apps, deployed, orphans_of=prefix)
    if as_json:
        click.echo(json.dumps([{"name": i.name, "app": i.app_name, "action": i.action.value} for i in items], indent=2))
        return
    echo_table(["NAME", "APP", "ACTION"], [[i.name, i.app_name, i.action.value] for i in items])


@main.command()
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
    from .deploy import apply_plan, check_secrets, make_plan

    selection(names, all_models, required=True)
    catalog, apps = _rendered(catalog_dir, names, out_dir)
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
    from .deploy import Action, make_plan
    from .modal_api import ModalClient

    client = ModalClient(environment or catalog.settings.environment)
    try:
        client.require_credentials()
    except ModalUnavailable:
        return {}
    items = make_plan(apps, client.deployed_apps(catalog.settings.prefix))
    skip = {Action.UNCHANGED: "skip (unchanged)"}
    return {i.name: ("redeploy (--force)" if force else skip.get(i.action, f"deploy ({i.action.value})")) for i in items}


def _print_dry_run(apps: list[Any], out_dir: Path, plan: dict[str, str]) -> None:
    from .errors import display_path

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


@main.command()
@ENV_OPTION
@CATALOG_OPTION
@JSON_OPTION
def status(environment: str | None, catalog_dir: Path, as_json: bool) -> None:
    """Per model: deployed or not, in sync with the catalog or not, URL, GPU, last deploy.

    \b
    Example:
      fleet status
      fleet status --json
    """
    from .deploy import make_plan, status_rows

    catalog, apps = _rendered(catalog_dir, ())
    client = _client(catalog, environment)
    prefix = catalog.settings.prefix
    rows = status_rows(make_plan(apps, client.deployed_apps(prefix), orphans_of=prefix), client)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = [[r["name"], r["state"], r["gpu"] or "", r["deployed_at"] or "", r["url"] or ""] for r in rows]
    echo_table(["NAME", "STATE", "GPU", "DEPLOYED AT", "URL"], table)


@main.command()
@ENV_OPTION
@CATALOG_OPTION
@JSON_OPTION
def endpoints(environment: str | None, catalog_dir: Path, as_json: bool) -> None:
    """The OpenAI base URL and model name of each deployed model, ready to hand to a team.

    \b
    Example:
      fleet endpoints
      fleet endpoints --json > endpoints.json
    """
    catalog, apps = _rendered(catalog_dir, ())
    client = _client(catalog, environment)
    deployed = client.deployed_apps(catalog.settings.prefix)
    rows = []
    for app in apps:
        if app.spec.app_name not in deployed:
            continue
        url = client.web_url(app.spec.app_name, app.spec.class_name)
        rows.append({"name": app.spec.name, "base_url": f"{url}/v1" if url else None, "model": app.spec.name})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no model of the catalog is deployed: run `fleet deploy --all`")
        return
    echo_table(["NAME", "BASE URL", "MODEL"], [[r["name"], r["base_url"] or "", r["model"]] for r in rows])
    click.echo(f"API key: the value of VLLM_API_KEY in the Modal secret '{catalog.settings.api_key_secret}'")


@main.command()
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
    from .catalog import load_catalog, select
    from .deploy import Action, make_plan, stop_apps
    from .render import render_all

    if bool(names) == orphans:
        raise click.UsageError("give model NAMES or --orphans (one of them)")
    catalog = load_catalog(catalog_dir)
    client = _client(catalog, environment)
    deployed = client.deployed_apps(catalog.settings.prefix)
    if orphans:
        items = make_plan(render_all(list(catalog.models)), deployed, orphans_of=catalog.settings.prefix)
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


@main.command()
@click.argument("name")
@click.option("--local", "local", is_flag=True, help="Run on this machine (the only mode: Modal runs come from deploy).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--model-path",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    help="Serve weights from this directory instead of the Hugging Face repo.",
)
@click.option("--cycle", is_flag=True, help="Also run one sleep + wake round, the path a snapshot restore takes.")
@click.option("--api-key", envvar="FLEET_API_KEY", help="Key clients must send (env FLEET_API_KEY); default: a new one.")
@click.option("--python", "python", default=sys.executable, show_default=True, help="Interpreter that has vLLM.")
@click.option("--eager", is_flag=True, help="Force --enforce-eager (faster start on a CPU).")
@CATALOG_OPTION
def serve(
    name: str,
    local: bool,
    port: int,
    model_path: Path | None,
    cycle: bool,
    api_key: str | None,
    python: str,
    eager: bool,
    catalog_dir: Path,
) -> None:
    """Run a catalog model's vLLM on this machine, through the same runtime as the Modal container.

    Snapshots are off; --cycle exercises sleep and wake once. Prints the base URL and key; Ctrl-C stops.

    \b
    Example:
      fleet serve qwen3-4b --local
      fleet serve tiny --local --model-path ./tiny-model --port 8001 --cycle
    """
    from .catalog import load_catalog, select
    from .local import local_config, serve_local
    from .runtime import EngineConfig, EngineError

    if not local:
        raise click.UsageError("only --local is supported: Modal endpoints come from `fleet deploy`")
    [spec] = select(load_catalog(catalog_dir), (name,))
    changes: dict[str, Any] = {"port": port, "python": python}
    if model_path is not None:
        changes.update(model=str(model_path.resolve()), revision=None)
    if eager:
        changes["enforce_eager"] = True
    config = local_config(EngineConfig(**spec.engine_options()), **changes)  # type: ignore[arg-type]
    try:
        serve_local(config, cycle=cycle, api_key=api_key, out=click.echo)
    except (EngineError, ValueError) as exc:  # ValueError: a key the engine cannot take (spaces, commas)
        raise FleetError(str(exc)) from None


from . import cli_probe  # noqa: E402,F401 - registers smoke, prime and bench on `main`
