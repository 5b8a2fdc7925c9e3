"""`fleet gateway --local`, `fleet keys create|list|revoke`, `fleet usage`: the fleet's one front door.

Keys and usage live in named Modal Dicts (names in _fleet.yaml `gateway:`), or with `--local` in JSON files
under `--state` (what `fleet gateway --local` reads).
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from pathlib import Path
from typing import Any

import click

from ..errors import FleetError
from .common import CATALOG_OPTION, ENV_OPTION, JSON_OPTION, echo_table

STATE_OPTION = click.option(
    "--state",
    "state_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path(".fleet/gateway"),
    show_default=True,
    help="Where --local keeps keys.json and usage.json.",
)
LOCAL_OPTION = click.option("--local", "local", is_flag=True, help="Use the local files under --state, not Modal.")
INTERNAL_KEY_ENV = "FLEET_API_KEY"  # the key `fleet serve --local` engines take: never on the command line


def _stores(catalog_dir: Path, local: bool, state_dir: Path, environment: str | None) -> tuple[Any, Any, Any]:
    """(catalog, keys store, usage store): local JSON files, or the named Modal Dicts of _fleet.yaml."""
    from ..catalog import load_catalog
    from ..gateway.store import ModalDictStore
    from .common import _client

    catalog = load_catalog(catalog_dir)
    if local:
        return (catalog, *_local_stores(state_dir))
    settings = catalog.settings.gateway
    client = _client(catalog, environment)
    keys_store = ModalDictStore(settings.keys_dict, client.environment)
    return catalog, keys_store, ModalDictStore(settings.usage_dict, client.environment)


def _local_stores(state_dir: Path) -> tuple[Any, Any]:
    from ..gateway.store import JsonFileStore

    return JsonFileStore(state_dir / "keys.json"), JsonFileStore(state_dir / "usage.json")


@click.group()
def keys() -> None:
    """Team keys for the gateway: create (shown once), list, revoke (refused everywhere within 30 s)."""


@keys.command("create")
@click.argument("team")
@click.option("--models", default=None, help="Comma-separated models the key may use.")
@click.option("--all", "all_models", is_flag=True, help="Every model of the catalog, now and later.")
@click.option("--expires", default=None, help="Lifetime, e.g. 90d, 12h (default: never).")
@LOCAL_OPTION
@STATE_OPTION
@ENV_OPTION
@CATALOG_OPTION
def keys_create(
    team: str, models: str | None, all_models: bool, expires: str | None, local: bool, state_dir: Path,
    environment: str | None, catalog_dir: Path,
) -> None:
    """Make a key for TEAM and print it once (only its hash is stored).

    \b
    Example:
      fleet keys create search --models qwen3-4b,llama-3.1-8b --expires 90d
      fleet keys create research --all
    """
    from ..catalog import load_catalog, select
    from ..gateway.keys import ALL_MODELS, iso, new_key, parse_duration, store_key

    if bool(models) == all_models:
        raise click.UsageError("give --models a,b or --all (one of them)")
    names: tuple[str, ...] = (ALL_MODELS,)
    if models:
        names = tuple(n.strip() for n in models.split(",") if n.strip())
        select(load_catalog(catalog_dir), names)  # unknown names: one error, with "did you mean"
    try:
        lifetime = parse_duration(expires) if expires else None
        key, record = new_key(team, names, lifetime)
    except ValueError as exc:
        raise FleetError(str(exc)) from None
    catalog, store, _ = _stores(catalog_dir, local, state_dir, environment)
    store_key(store, key, record)
    if not local and not catalog.settings.gateway.enabled:
        click.echo("note: `gateway.enabled` is false in _fleet.yaml: no deployed gateway reads this key yet", err=True)
    until = f"expires {iso(record.expires)}" if record.expires else "never expires"
    click.echo(f"created key {record.key_id} for team {team} (models: {', '.join(record.models)}; {until})")
    click.echo(key)
    click.echo("This is the only time the key is shown: hand it to the team now.", err=True)


@keys.command("list")
@LOCAL_OPTION
@STATE_OPTION
@ENV_OPTION
@CATALOG_OPTION
@JSON_OPTION
def keys_list(local: bool, state_dir: Path, environment: str | None, catalog_dir: Path, as_json: bool) -> None:
    """Every key: team, short id, models, created, expires, last used (never the key).

    \b
    Example:
      fleet keys list
      fleet keys list --json
    """
    from ..gateway.keys import iso, list_keys

    _, store, _ = _stores(catalog_dir, local, state_dir, environment)
    now = time.time()
    rows = [
        {
            "team": r.team,
            "key_id": r.key_id,
            "models": list(r.models),
            "created": iso(r.created),
            "expires": iso(r.expires) or None,
            "expired": r.expired(now),
            "last_used": iso(used) or None,
        }
        for r, used in list_keys(store)
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no keys: create one with `fleet keys create TEAM --all`")
        return
    table = [
        [
            r["team"],
            r["key_id"],
            ",".join(r["models"]),
            r["created"],
            (r["expires"] or "never") + (" (expired)" if r["expired"] else ""),
            r["last_used"] or "never",
        ]
        for r in rows
    ]
    echo_table(["TEAM", "KEY ID", "MODELS", "CREATED", "EXPIRES", "LAST USED"], table)


@keys.command("revoke")
@click.argument("team_or_key_id")
@LOCAL_OPTION
@STATE_OPTION
@ENV_OPTION
@CATALOG_OPTION
def keys_revoke(team_or_key_id: str, local: bool, state_dir: Path, environment: str | None, catalog_dir: Path) -> None:
    """Revoke every key of a TEAM, or one key by its KEY ID. No deploy: gateways refuse it within their
    key cache time (30 s at most).

    \b
    Example:
      fleet keys revoke search
      fleet keys revoke 3f2a9c1b0d4e
    """
    from ..gateway.keys import revoke

    catalog, store, _ = _stores(catalog_dir, local, state_dir, environment)
    revoked = revoke(store, team_or_key_id)
    if not revoked:
        raise FleetError(f"no key of team or with id '{team_or_key_id}' (see `fleet keys list`)")
    for record in revoked:
        click.echo(f"revoked {record.key_id} (team {record.team})")
    click.echo(f"every gateway refuses it within {catalog.settings.gateway.key_cache_seconds}s")


@click.command()
@click.option("--since", default="7d", show_default=True, help="How far back, e.g. 7d, 30d.")
@click.option("--team", default=None, help="Only this team.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV.")
@LOCAL_OPTION
@STATE_OPTION
@ENV_OPTION
@CATALOG_OPTION
@JSON_OPTION
def usage(
    since: str, team: str | None, as_csv: bool, local: bool, state_dir: Path, environment: str | None,
    catalog_dir: Path, as_json: bool,
) -> None:
    """Gateway usage per day x team x model: requests, tokens, errors, cold waits (numbers only).

    \b
    Example:
      fleet usage --since 30d
      fleet usage --team search --csv > search.csv
    """
    from ..gateway.keys import parse_duration
    from ..gateway.usage import COUNTERS, day_of, summarize

    if as_json and as_csv:
        raise click.UsageError("give --json or --csv, not both")
    try:
        since_day = day_of(time.time() - parse_duration(since))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
    _, _, store = _stores(catalog_dir, local, state_dir, environment)
    rows = [row.to_json() for row in summarize(store.items(), since_day=since_day, team=team)]
    header = ["day", "team", "model", *COUNTERS]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    elif as_csv:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=header, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        click.echo(out.getvalue(), nl=False)
    elif not rows:
        click.echo(f"no usage since {since_day}")
    else:
        echo_table([h.upper().replace("_", " ") for h in header], [[str(r[h]) for h in header] for r in rows])


@click.command()
@click.option("--local", "local", is_flag=True, help="Run on this machine (Modal's comes from `fleet deploy --all`).")
@click.option(
    "--upstream",
    "upstreams",
    multiple=True,
    metavar="NAME=URL",
    help="A model's engine, e.g. tiny=http://127.0.0.1:8001 (repeatable).",
)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--key-cache-seconds",
    default=30.0,
    show_default=True,
    type=click.FloatRange(0.1, 30),
    help="How soon a revoked key is refused.",
)
@STATE_OPTION
@CATALOG_OPTION
def gateway(
    local: bool, upstreams: tuple[str, ...], port: int, key_cache_seconds: float, state_dir: Path, catalog_dir: Path
) -> None:
    """Run the gateway on this machine in front of `fleet serve --local` engines.

    Keys and usage are the files under --state (`fleet keys create TEAM --all --local`). The gateway calls
    the engines with the key in FLEET_API_KEY (the one `fleet serve --local` takes). Ctrl-C stops.

    \b
    Example:
      FLEET_API_KEY=k fleet serve tiny --local --port 8001 &
      fleet keys create me --all --local
      FLEET_API_KEY=k fleet gateway --local --upstream tiny=http://127.0.0.1:8001
    """
    import uvicorn

    from ..catalog import load_catalog, select
    from ..gateway.app import Gateway, create_app
    from ..gateway.config import GatewayConfig, GatewayModel, StaticUpstreams
    from ..gateway.render import gateway_models

    if not local:
        raise click.UsageError("only --local is supported: the Modal gateway comes from `fleet deploy --all`")
    catalog = load_catalog(catalog_dir)
    urls = dict(_upstream(text) for text in upstreams)
    select(catalog, list(urls))
    models = tuple(GatewayModel(**m) for m in gateway_models(catalog.models))
    config = GatewayConfig(models=models, key_cache_ttl=key_cache_seconds, created=int(time.time()))
    internal_key = os.environ.get(INTERNAL_KEY_ENV) or None
    app = create_app(
        Gateway(config, StaticUpstreams(urls), *_local_stores(state_dir), internal_key)
    )
    running = ", ".join(urls) or "none"
    click.echo(f"gateway at http://127.0.0.1:{port}/v1 for {len(models)} model(s); running locally: {running}")
    click.echo(f"keys: {state_dir / 'keys.json'} (`fleet keys create TEAM --all --local`); press Ctrl-C to stop")
    if internal_key is None:
        click.echo(f"warning: {INTERNAL_KEY_ENV} is not set: engines that need a key will refuse the gateway", err=True)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)  # no per-request log line


def _upstream(text: str) -> tuple[str, str]:
    name, sep, url = text.partition("=")
    if not sep or not name or not url.startswith(("http://", "https://")):
        raise click.BadParameter(f"{text!r}: use NAME=URL, e.g. tiny=http://127.0.0.1:8001", param_hint="--upstream")
    return name, url


COMMANDS = [gateway, keys, usage]
