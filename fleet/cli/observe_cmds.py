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
    """Per model: deployed or not, in sync with the catalog or not, URL, GPU, last deploy; and live: containers
    now, requests and errors in the last hour, the last cold start (restored or booted), the snapshot's state.

    \b
    Example:
      fleet status
      fleet status --json
    """
    from ..deploy import make_plan, status_rows

    catalog, apps = _rendered(catalog_dir, ())
    client = _client(catalog, environment)
    prefix = catalog.settings.prefix
    # The live side (fleet/observe.py): containers, traffic, cold starts, snapshot state, looked up in
    # parallel, and meanwhile the plan rows.
    from concurrent.futures import ThreadPoolExecutor

    from ..observe import LIVE_HEADER, live_cells, live_notes, live_status

    deployed_apps = client.deployed_apps(prefix)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="live") as background:
        specs = [a.spec for a in apps if a.spec.app_name in deployed_apps]
        live_rows = background.submit(live_status, client, specs)
        rows = status_rows(make_plan(apps, deployed_apps, orphans_of=prefix), client)
        live = live_rows.result()
    if as_json:
        merged = [{**r, "live": live[r["name"]].as_dict() if r["name"] in live else None} for r in rows]
        click.echo(json.dumps(merged, indent=2))
        return
    table = [
        [r["name"], r["state"], r["gpu"] or "", r["deployed_at"] or "", *live_cells(live.get(r["name"])),
         r["url"] or ""]
        for r in rows
    ]
    echo_table(["NAME", "STATE", "GPU", "DEPLOYED AT", *LIVE_HEADER, "URL"], table)
    for note in live_notes(live):
        click.echo(f"note: {note}", err=True)


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

COMMANDS = [status, endpoints]
