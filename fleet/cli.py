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

from .errors import CatalogInvalid, FleetError, ModalUnavailable, Problem

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
    print_problems(result.warnings)
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


# --- observing endpoints: smoke, prime, bench (fleet/probe.py) ---------------------------------------------

API_KEY_OPTION = click.option(
    "--api-key",
    envvar="FLEET_API_KEY",
    default=None,
    help="The endpoints' API key (env FLEET_API_KEY; the VLLM_API_KEY of the Modal secret). Never printed.",
)
TIMEOUT_OPTION = click.option(
    "--timeout",
    default=900.0,
    show_default=True,
    type=click.FloatRange(1),
    help="Seconds one request may take (a cold start included).",
)
URL_OPTION = click.option(
    "--url", default=None, help="Any OpenAI-compatible base URL (e.g. http://127.0.0.1:8000/v1) instead of Modal's."
)
MODEL_OPTION = click.option("--model", default=None, help="Served model name at --url (default: the NAME given).")


def _progress(name: str) -> Callable[[str], None]:
    """Progress goes to stderr, so `--json` output on stdout stays clean."""
    return lambda message: click.echo(f"[{name}] {message}", err=True)


def _require_key(api_key: str | None) -> str:
    if not api_key:
        raise FleetError("no API key: pass --api-key or set FLEET_API_KEY (the VLLM_API_KEY in the Modal secret)")
    return api_key


def _url_endpoint(url: str, names: tuple[str, ...], model: str | None, api_key: str) -> Any:
    from .probe import Endpoint

    if len(names) > 1:
        raise click.UsageError("--url probes one endpoint: give at most one NAME")
    served = model or (names[0] if names else None)
    if not served:
        raise click.UsageError("--url needs the served model name: --model NAME (or a NAME argument)")
    return Endpoint(names[0] if names else served, url, served, api_key)


def _modal_endpoints(
    specs: list[Any], client: Any, api_key: str, url: str | None = None
) -> tuple[list[tuple[Any, Any]], list[tuple[str, str]]]:
    """(spec, Endpoint) for each deployed model, and (name, reason) for those that cannot be probed."""
    from .probe import Endpoint

    if not specs:
        return [], []
    deployed = client.deployed_apps(specs[0].settings.prefix)
    found, missing = [], []
    for spec in specs:
        if spec.app_name not in deployed:
            missing.append((spec.name, "not deployed (run `fleet deploy`)"))
            continue
        web_url = url or client.web_url(spec.app_name, spec.class_name)
        if web_url is None:
            missing.append((spec.name, "deployed, but Modal has no web endpoint for it (redeploy with --force)"))
            continue
        base = url or f"{web_url}/v1"
        found.append((spec, Endpoint(spec.name, base, spec.name, api_key)))
    return found, missing


def _run_parallel(function: Callable[[Any], Any], items: list[Any], parallel: int) -> list[Any]:
    from concurrent.futures import ThreadPoolExecutor

    if len(items) <= 1:
        return [function(item) for item in items]
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        return list(pool.map(function, items))


def _container_stopper(client: Any, app_name: str) -> Callable[[], int]:
    from .probe import stop_all

    return lambda: stop_all(lambda: client.containers(app_name), client.stop_container)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"


@main.command()
@with_names
@URL_OPTION
@MODEL_OPTION
@API_KEY_OPTION
@TIMEOUT_OPTION
@click.option("--parallel", default=4, show_default=True, type=click.IntRange(1, 32), help="Endpoints at once.")
@ENV_OPTION
@CATALOG_OPTION
@JSON_OPTION
def smoke(
    names: tuple[str, ...],
    all_models: bool,
    url: str | None,
    model: str | None,
    api_key: str | None,
    timeout: float,
    parallel: int,
    environment: str | None,
    catalog_dir: Path,
    as_json: bool,
) -> None:
    """Check that each endpoint answers: /v1/models lists the model, a chat completion has content, a request
    without the key gets 401. Each check timed; exit 1 on any failure.

    \b
    Example:
      export FLEET_API_KEY=...
      fleet smoke --all
      fleet smoke qwen3-4b --json
      fleet smoke --url http://127.0.0.1:8000/v1 --model tiny
    """
    from .probe import http_client
    from .probe import smoke as run_smoke

    key = _require_key(api_key)
    missing: list[tuple[str, str]] = []
    if url:
        if all_models:
            raise click.UsageError("--url probes one endpoint: not with --all")
        endpoints = [_url_endpoint(url, names, model, key)]
    else:
        from .catalog import load_catalog, select

        selection(names, all_models, required=True)
        catalog = load_catalog(catalog_dir)
        specs = select(catalog, names)
        found, missing = _modal_endpoints(specs, _client(catalog, environment), key)
        endpoints = [endpoint for _, endpoint in found]

    with http_client(timeout, connections=2 * parallel) as http:
        reports = _run_parallel(lambda e: run_smoke(e, http, _progress(e.name)), endpoints, parallel)

    failed = [r for r in reports if not r.ok]
    if as_json:
        rows = [r.as_dict() for r in reports]
        rows += [{"name": name, "ok": False, "error": reason} for name, reason in missing]
        click.echo(json.dumps(rows, indent=2))
    else:
        table = [
            [r.endpoint.name, c.name, "ok" if c.ok else "FAILED", f"{c.seconds:.2f}s", c.detail]
            for r in reports
            for c in r.checks
        ]
        table += [[name, "-", "FAILED", "-", reason] for name, reason in missing]
        echo_table(["NAME", "CHECK", "RESULT", "TIME", "DETAIL"], table)
        total = len(reports) + len(missing)
        click.echo(f"\n{total - len(failed) - len(missing)} of {total} endpoint(s) passed")
    finish([(r.endpoint.name, f"smoke test failed ({r.endpoint.base_url})") for r in failed] + missing)


@main.command()
@with_names
@click.option(
    "--max-cold-starts", default=8, show_default=True, type=click.IntRange(1, 50), help="Give up after this many."
)
@click.option("--target", type=click.FloatRange(0, min_open=True), default=None,
              help="Seconds: a cold start this fast counts as a restore (for a snapshot already in use).")
@URL_OPTION
@API_KEY_OPTION
@TIMEOUT_OPTION
@click.option("--parallel", default=4, show_default=True, type=click.IntRange(1, 32), help="Models at once.")
@ENV_OPTION
@CATALOG_OPTION
@JSON_OPTION
def prime(
    names: tuple[str, ...],
    all_models: bool,
    max_cold_starts: int,
    target: float | None,
    url: str | None,
    api_key: str | None,
    timeout: float,
    parallel: int,
    environment: str | None,
    catalog_dir: Path,
    as_json: bool,
) -> None:
    """Drive cold starts until Modal restores each model from its GPU snapshot.

    Each attempt stops every container of the model, sends one request and times its first token. Done when
    two cold starts in a row took at most half the slowest one (or --target); stops early, and says so, when
    cold starts keep failing (restores crashing). The first 3 to 5 cold starts after a deploy are slow.

    \b
    Example:
      export FLEET_API_KEY=...
      fleet prime --all
      fleet prime qwen3.6-27b --max-cold-starts 10
      fleet prime qwen3-4b --target 60     # already primed? accept 60 s cold starts
    """
    from .catalog import load_catalog, select
    from .probe import http_client
    from .probe import prime as run_prime

    selection(names, all_models, required=True)
    if url and len(names) != 1:
        raise click.UsageError("--url sends the requests of one model elsewhere: give exactly one NAME")
    key = _require_key(api_key)
    catalog = load_catalog(catalog_dir)
    specs = select(catalog, names)
    skipped = [(s.name, "snapshot off in the catalog: nothing to prime") for s in specs if not s.snapshot]
    skipped += [
        (s.name, f"min_containers is {s.scaling.min_containers}: a container always runs, no cold start to time")
        for s in specs
        if s.snapshot and s.scaling.min_containers > 0
    ]
    wanted = [s for s in specs if s.snapshot and s.scaling.min_containers == 0]
    client = _client(catalog, environment)
    found, missing = _modal_endpoints(wanted, client, key, url) if wanted else ([], [])

    def run(pair: tuple[Any, Any]) -> Any:
        spec, endpoint = pair
        say = _progress(spec.name)
        say(f"priming {spec.app_name}: up to {max_cold_starts} cold start(s)")
        return run_prime(
            endpoint,
            http,
            _container_stopper(client, spec.app_name),
            max_attempts=max_cold_starts,
            target=target,
            progress=say,
        )

    with http_client(timeout, connections=2 * parallel) as http:
        reports = _run_parallel(run, found, parallel)

    failed = [r for r in reports if not r.ok]
    if as_json:
        rows = [r.as_dict() for r in reports]
        rows += [{"name": n, "verdict": "skipped", "ok": True, "message": why} for n, why in skipped]
        rows += [{"name": n, "verdict": "missing", "ok": False, "message": why} for n, why in missing]
        click.echo(json.dumps(rows, indent=2))
    else:
        table = [
            [
                r.endpoint.name,
                str(a.number),
                str(a.stopped),
                _seconds(a.timing.ttft if a.timing.ok else a.timing.total),
                ("fast" if a.fast else "slow") if a.timing.ok else f"FAILED: {a.timing.error}",
            ]
            for r in reports
            for a in r.attempts
        ]
        echo_table(["NAME", "COLD START", "STOPPED", "FIRST TOKEN", "RESULT"], table)
        click.echo()
        for report in reports:
            click.echo(f"{report.endpoint.name}: {report.verdict}: {report.message}")
        for name, why in skipped:
            click.echo(f"{name}: skipped: {why}")
    finish([(r.endpoint.name, r.verdict) for r in failed] + missing)


@main.command()
@click.argument("name")
@click.option("--concurrency", default=4, show_default=True, type=click.IntRange(1, 256), help="Requests at once.")
@click.option("--requests", "requests_", default=32, show_default=True, type=click.IntRange(1, 10_000),
              help="Warm requests to send.")
@click.option("--max-tokens", default=64, show_default=True, type=click.IntRange(1, 8192), help="Tokens per answer.")
@click.option("--time-limit", default=300.0, show_default=True, type=click.FloatRange(1),
              help="Seconds after which no new warm request starts.")
@click.option("--no-cold", is_flag=True, help="Do not stop the running containers first (no cold start).")
@URL_OPTION
@MODEL_OPTION
@API_KEY_OPTION
@TIMEOUT_OPTION
@ENV_OPTION
@CATALOG_OPTION
@JSON_OPTION
def bench(
    name: str,
    concurrency: int,
    requests_: int,
    max_tokens: int,
    time_limit: float,
    no_cold: bool,
    url: str | None,
    model: str | None,
    api_key: str | None,
    timeout: float,
    environment: str | None,
    catalog_dir: Path,
    as_json: bool,
) -> None:
    """Measure one model: cold start time to first token, then warm latency (p50, p95) and tokens per second
    at a given concurrency. On Modal the running containers are stopped first, so the first request is a
    cold start (--no-cold to keep them); with --url nothing is stopped.

    \b
    Example:
      fleet bench qwen3-4b --concurrency 8 --requests 64
      fleet bench qwen3-4b --json >> bench-history.jsonl
      fleet bench tiny --url http://127.0.0.1:8000/v1 --requests 4
    """
    from .probe import bench as run_bench
    from .probe import http_client

    key = _require_key(api_key)
    make_cold = None
    if url:
        endpoint = _url_endpoint(url, (name,), model, key)
    else:
        from .catalog import load_catalog, select

        catalog = load_catalog(catalog_dir)
        spec = select(catalog, (name,))[0]
        client = _client(catalog, environment)
        found, missing = _modal_endpoints([spec], client, key)
        if missing:
            raise FleetError(f"{name}: {missing[0][1]}")
        endpoint = found[0][1]
        if not no_cold:
            make_cold = _container_stopper(client, spec.app_name)

    with http_client(timeout, connections=concurrency + 1) as http:
        report = run_bench(
            endpoint, http, concurrency=concurrency, requests=requests_, max_tokens=max_tokens,
            time_limit=time_limit, make_cold=make_cold, progress=_progress(endpoint.name),
        )
    data = report.as_dict()
    if as_json:
        click.echo(json.dumps(data))
    else:
        first, warm = data["first_request"], data["warm"]
        label = "cold start" if report.cold else "first request"
        click.echo(f"{endpoint.name} at {endpoint.base_url}")
        if report.first.ok:
            click.echo(
                f"{label}: first token in {_seconds(first['ttft_s'])}, "
                f"{first['tokens']} token(s) in {_seconds(first['total_s'])}"
            )
        else:
            click.echo(f"{label}: FAILED: {report.first.error}")
        if report.first.ok:
            click.echo(
                f"warm: {warm['completed']}/{warm['requested']} ok, {warm['failed']} failed, concurrency "
                f"{warm['concurrency']}, in {_seconds(warm['seconds'])}"
            )
            click.echo(
                f"latency p50 {_seconds(warm['latency_p50_s'])}, p95 {_seconds(warm['latency_p95_s'])}; "
                f"first token p50 {_seconds(warm['ttft_p50_s'])}, p95 {_seconds(warm['ttft_p95_s'])}"
            )
            rate = warm["tokens_per_second"]
            click.echo(f"throughput: {warm['tokens']} token(s), " + (f"{rate} tokens/s" if rate else "-"))
    if not report.ok:
        reasons = ([report.first.error] if not report.first.ok else []) + data["warm"]["errors"]
        if report.first.ok and len(report.warm) < report.requested:
            reasons.append(f"time limit reached after {len(report.warm)} of {report.requested} requests")
        click.echo(f"error: {endpoint.name}: bench failed: {'; '.join(r for r in reasons if r)}", err=True)
    sys.exit(0 if report.ok else 1)


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
