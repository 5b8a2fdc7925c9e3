"""`fleet logs`, `fleet cost`, `fleet rollback`: operating the deployed fleet (fleet/observe.py)."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any

import click

from ..errors import FleetError, ModalUnavailable
from .common import CATALOG_OPTION, ENV_OPTION, JSON_OPTION, _client, echo_table


def _one_spec(catalog_dir: Path, name: str) -> tuple[Any, Any]:
    from ..catalog import load_catalog, select

    catalog = load_catalog(catalog_dir)
    return catalog, select(catalog, (name,))[0]


# --- logs ---------------------------------------------------------------------------------------------------

_STEP_COLOUR = {"crash": "red", "restore": "green", "snapshot": "cyan", "boot": "yellow"}


def _log_text(line: Any) -> str:
    stamp = line.at.strftime("%Y-%m-%d %H:%M:%S")
    container = line.container or "-"
    if line.step is None:
        return f"{stamp}  {container}  {'':<10}  {line.text}"
    mark = f">> {line.step.upper()}"
    return click.style(f"{stamp}  {container}  {mark:<10}  {line.text}", fg=_STEP_COLOUR.get(line.step), bold=True)


@click.command()
@click.argument("name")
@click.option("--since", default=None, help="From when: 30m, 1h, 2d ago, or a date/time (UTC). Default: 1h.")
@click.option("-f", "--follow", is_flag=True, help="Stream new lines until the app stops (Ctrl-C ends it).")
@ENV_OPTION
@CATALOG_OPTION
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def logs(name: str, since: str | None, follow: bool, environment: str | None, catalog_dir: Path, as_json: bool) -> None:
    """The model's container logs, API keys redacted, lifecycle lines (boot, warm-up, sleep, snapshot,
    restore, wake, crash) marked with >>.

    \b
    Example:
      fleet logs qwen3-4b
      fleet logs qwen3-4b --since 2d | grep '>>'
      fleet logs qwen3-4b --follow
    """
    from ..observe import log_lines, parse_since

    if follow and since:
        raise click.UsageError("--follow streams new lines: not with --since")
    catalog, spec = _one_spec(catalog_dir, name)
    start = None if follow else parse_since(since or "1h")
    client = _client(catalog, environment)
    printed = 0
    try:
        for line in log_lines(client, spec, since=start, follow=follow):
            click.echo(json.dumps(line.as_dict()) if as_json else _log_text(line))
            printed += 1
    except KeyboardInterrupt:
        pass
    if not printed and start is not None:
        click.echo(f"no log lines since {start:%Y-%m-%d %H:%M} UTC (a model scaled to zero logs nothing): "
                   "try --since 1d", err=True)


# --- cost ---------------------------------------------------------------------------------------------------


@click.command()
@click.option("--for", "for_", default=None, help="today, yesterday, this week, last week, this month, last month.")
@click.option("--since", default=None, help="From a date (2026-11-01) or a duration ago (7d) until now.")
@ENV_OPTION
@CATALOG_OPTION
@JSON_OPTION
@click.option("--csv", "as_csv", is_flag=True, help="One CSV row per model.")
def cost(
    for_: str | None, since: str | None, environment: str | None, catalog_dir: Path, as_json: bool, as_csv: bool
) -> None:
    """Dollars per model from Modal's billing report (grouped by the apps' fleet tags), GPU and the rest,
    with each model's GPU price per hour; per team too once the gateway records usage.

    Without Modal credentials there is no bill to read: it shows the rates from the dated price table.

    \b
    Example:
      fleet cost                       # this month so far
      fleet cost --for 'last month' --csv > last-month.csv
      fleet cost --since 2026-11-01 --json
    """
    from ..catalog import load_catalog
    from ..observe import cost_report, period

    if for_ and since:
        raise click.UsageError("give --for or --since, not both")
    if as_json and as_csv:
        raise click.UsageError("give --json or --csv, not both")
    start, end = period(for_, since)
    catalog = load_catalog(catalog_dir)
    try:
        client = _client(catalog, environment)
    except ModalUnavailable as exc:
        click.echo(f"note: {exc}; without Modal's bill only the rates are shown", err=True)
        client = None
    report = cost_report(client, catalog, start, end)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    elif as_csv:
        click.echo(_cost_csv(report), nl=False)
    else:
        _print_cost(report)


def _cost_csv(report: Any) -> str:
    rates = {r.name: r for r in report.rates}
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["model", "app", "gpu_usd", "other_usd", "total_usd", "gpu_usd_per_hour", "rate_source"])
    billed = {m.name for m in report.models}
    for row in report.as_dict()["models"]:
        rate = rates.get(row["model"])
        writer.writerow(
            [row["model"], row["app"], row["gpu_usd"], row["other_usd"], row["total_usd"],
             rate.usd_per_hour if rate else "", rate.source if rate else ""]
        )
    for rate in report.rates:
        if rate.name not in billed:
            writer.writerow([rate.name, "", "", "", "", rate.usd_per_hour, rate.source])
    return out.getvalue()


def _print_cost(report: Any) -> None:
    data = report.as_dict()
    rates = {r.name: r for r in report.rates}
    days = f"{report.start:%Y-%m-%d} to {report.end:%Y-%m-%d} (UTC, end excluded)"
    if report.billed:
        click.echo(f"Cost from Modal's billing report, {days}")
        table = []
        for m in data["models"]:
            rate = rates.get(m["model"])
            name = m["model"] + ("" if m["in_catalog"] else " (not in catalog)")
            gpu, hourly = (rate.gpu, str(rate.usd_per_hour)) if rate else ("", "")
            table.append([name, gpu, m["gpu_usd"], m["other_usd"], m["total_usd"], hourly])
        billed = {m["model"] for m in data["models"]}
        table += [[r.name, r.gpu, "0.00", "0.00", "0.00", str(r.usd_per_hour)] for r in report.rates
                  if r.name not in billed]
        echo_table(["MODEL", "GPU", "GPU $", "OTHER $", "TOTAL $", "GPU $/H"], table)
        click.echo(f"total: ${data['total_usd']}")
    else:
        click.echo("GPU price per hour while a container runs (no bill without Modal credentials)")
        echo_table(["MODEL", "GPU", "GPU $/H"], [[r.name, r.gpu, str(r.usd_per_hour)] for r in report.rates])
    click.echo("rates: " + "; ".join(sorted({r.source for r in report.rates})))
    if not report.billed:
        return
    if report.teams:
        click.echo("\nPer team (each model's daily cost shared by the team's tokens that day):")
        teams = [[t["team"], t["model"], str(t["tokens"]), t["usd"]] for t in data["teams"]]
        echo_table(["TEAM", "MODEL", "TOKENS", "$"], teams)
    else:
        click.echo("per team: no gateway usage recorded for this period (the split needs `gateway: {enabled: true}`)")


# --- rollback -----------------------------------------------------------------------------------------------


def _version(value: str | None) -> int | None:
    if value is None:
        return None
    match = re.fullmatch(r"v?(\d+)", value.strip())
    if not match:
        raise click.BadParameter(f"{value!r}: a version such as 3 or v3 (see the history table)", param_hint="--to")
    return int(match.group(1))


@click.command()
@click.argument("name")
@click.option("--to", "to", default=None, help="The version to go back to (3 or v3); default: the previous one.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@ENV_OPTION
@CATALOG_OPTION
def rollback(name: str, to: str | None, yes: bool, environment: str | None, catalog_dir: Path) -> None:
    """Go back to an earlier deployment of a model (Modal's app rollback), after showing its history.

    The version rolled back to gets a new GPU snapshot: the next cold starts are slow again. The catalog
    still describes the newer version, so `fleet plan` shows the model as changed until it is reverted.

    \b
    Example:
      fleet rollback qwen3-4b
      fleet rollback qwen3-4b --to v3 --yes
    """
    from ..observe import rollback as do_rollback
    from ..observe import rollback_target

    version = _version(to)
    catalog, spec = _one_spec(catalog_dir, name)
    client = _client(catalog, environment)
    history = client.deployment_history(spec.app_name)
    if not history:
        raise FleetError(f"{spec.app_name}: Modal has no deployment history for it")
    table = [
        [f"v{d.version}" + (" *" if d.current else ""),
         d.deployed_at.isoformat(sep=" ", timespec="seconds") if d.deployed_at else "",
         d.deployed_by, d.client_version]
        for d in history
    ]
    echo_table(["VERSION", "DEPLOYED AT", "BY", "CLIENT"], table)
    click.echo("(* current)\n")
    target = rollback_target(history, version)
    current = next((d.version for d in history if d.current), None)
    click.echo(
        f"Rolling {spec.app_name} back from v{current} to v{target.version}. Modal deploys v{target.version} "
        "again as a new version: its GPU snapshot is rebuilt, so the next 3 to 5 cold starts are slow "
        "(run `fleet prime` after). The catalog still describes the newer version: `fleet plan` will show "
        f"{spec.name} as changed until the catalog is reverted (a `fleet deploy` now would undo the rollback)."
    )
    if not yes:
        click.confirm("Roll back?", abort=True)
    result = do_rollback(client, spec, target, history)
    said = f" ({result.modal_said})" if result.modal_said else ""
    click.echo(f"{spec.name}: rolled back to v{result.to_version}{said}")


COMMANDS = [logs, cost, rollback]
