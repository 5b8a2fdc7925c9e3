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
    from ..deploy import read_plan
    from ..observe import LIVE_HEADER, live_cells, live_notes, status_with_live

    catalog, apps = _rendered(catalog_dir, (), gateway=True)
    client = _client(catalog, environment)
    rows, live = status_with_live(client, read_plan(client, apps, catalog.settings.prefix))
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
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["table", "openai-env", "litellm"]),
    default="table",
    show_default=True,
    help="openai-env: OPENAI_BASE_URL lines; litellm: a model_list for a LiteLLM proxy.",
)
def endpoints(environment: str | None, catalog_dir: Path, as_json: bool, output_format: str) -> None:
    """The OpenAI base URL and model name of each deployed model, ready to hand to a team.

    With the gateway deployed (`gateway: {enabled: true}`), its URL comes first and each model's base URL
    goes through it (`<gateway>/models/<name>/v1`), so team keys work everywhere.

    \b
    Example:
      fleet endpoints
      fleet endpoints --json > endpoints.json
      fleet endpoints --format openai-env > .env
      fleet endpoints --format litellm > litellm.yaml
    """
    from ..gateway.export import Endpoint, litellm, openai_env
    from ..gateway.render import GatewaySpec

    catalog, apps = _rendered(catalog_dir, (), gateway=True)
    from ..deploy import endpoint_urls

    client = _client(catalog, environment)
    urls = {row.name: row.url for row in endpoint_urls(client, [app.spec for app in apps]) if row.deployed}
    gateway = next((a for a in apps if isinstance(a.spec, GatewaySpec)), None)
    front = urls.pop(gateway.spec.name, None) if gateway else None
    rows = [Endpoint("gateway", f"{front}/v1", None, True)] if front else []
    for app in apps:
        if app is not gateway and urls.get(app.spec.name):
            base = f"{front}/models/{app.spec.name}/v1" if front else f"{urls[app.spec.name]}/v1"
            rows.append(Endpoint(app.spec.name, base, app.spec.name, bool(front)))
    if as_json:
        report = []
        for r in rows:
            row: dict[str, object] = {"name": r.name, "base_url": r.base_url, "model": r.model}
            if front:  # the model app's own URL (it takes the internal key, not team keys)
                row["direct_base_url"] = f"{urls[r.name]}/v1" if r.model else None
            report.append(row)
        click.echo(json.dumps(report, indent=2))
        return
    if output_format == "openai-env":
        click.echo(openai_env(rows), nl=False)
        return
    if output_format == "litellm":
        click.echo(litellm(rows), nl=False)
        return
    if not rows:
        click.echo("no model of the catalog is deployed: run `fleet deploy --all`")
        return
    echo_table(["NAME", "BASE URL", "MODEL"], [[r.name, r.base_url, r.model or "(any)"] for r in rows])
    if front:
        click.echo("API key: a team key from `fleet keys create TEAM` (the gateway calls the models with its own)")
    else:
        click.echo(f"API key: the value of VLLM_API_KEY in the Modal secret '{catalog.settings.api_key_secret}'")

COMMANDS = [status, endpoints]
