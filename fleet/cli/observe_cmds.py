"""`fleet status`, `fleet endpoints`: what Modal runs for the catalog, read back."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .common import CATALOG_OPTION, ENV_OPTION, JSON_OPTION, _client, _rendered, echo_table

@click.command()
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
    from ..deploy import read_plan, status_rows

    catalog, apps = _rendered(catalog_dir, ())
    client = _client(catalog, environment)
    rows = status_rows(read_plan(client, apps, catalog.settings.prefix), client)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = [[r["name"], r["state"], r["gpu"] or "", r["deployed_at"] or "", r["url"] or ""] for r in rows]
    echo_table(["NAME", "STATE", "GPU", "DEPLOYED AT", "URL"], table)


@click.command()
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
    from ..deploy import endpoint_urls

    catalog, apps = _rendered(catalog_dir, ())
    client = _client(catalog, environment)
    rows = [
        {"name": row.name, "base_url": row.base_url, "model": row.name}
        for row in endpoint_urls(client, [app.spec for app in apps])
        if row.deployed
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no model of the catalog is deployed: run `fleet deploy --all`")
        return
    echo_table(["NAME", "BASE URL", "MODEL"], [[r["name"], r["base_url"] or "", r["model"]] for r in rows])
    click.echo(f"API key: the value of VLLM_API_KEY in the Modal secret '{catalog.settings.api_key_secret}'")


COMMANDS = [status, endpoints]
