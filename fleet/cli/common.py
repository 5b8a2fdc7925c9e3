"""Pieces every command module shares: options, table printing, selection, validate-then-render, the Modal client.

Nothing here imports a stage module at import time, so `fleet --help` stays fast and never imports modal.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..errors import CatalogInvalid, ModalUnavailable, Problem, warnings_summary

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


def print_problems(problems: list[Problem]) -> None:
    for problem in problems:
        click.echo(str(problem), err=True)


def print_warnings_summary(problems: list[Problem]) -> None:
    """Warnings are printed in full by `validate` only; every other command says how many there are."""
    line = warnings_summary(sum(1 for p in problems if p.warning))
    if line:
        click.echo(line, err=True)


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


ENV_OPTION = click.option("--env", "environment", default=None, help="Modal environment (default: _fleet.yaml's).")
NAMES_ARGUMENTS = [
    click.argument("names", nargs=-1),
    click.option("--all", "all_models", is_flag=True, help="Every model in the catalog."),
]


def with_names(function: Callable[..., Any]) -> Callable[..., Any]:
    for decorator in reversed(NAMES_ARGUMENTS):
        function = decorator(function)
    return function


def _rendered(
    catalog_dir: Path, names: tuple[str, ...], out_dir: Path | None = None, *, gateway: bool = False
) -> tuple[Any, list[Any]]:
    """Validate, select and render (writing the files only into `out_dir`): all before Modal is touched.
    With `gateway` and no names, the gateway's app (when enabled) comes last."""
    from ..catalog import check_catalog, select
    from ..render import render_all, write_apps

    result = check_catalog(catalog_dir)
    if result.errors or result.catalog is None:
        raise CatalogInvalid(result.problems)
    print_warnings_summary(result.warnings)
    catalog = result.catalog
    apps = render_all(select(catalog, names))
    if gateway and not names:
        from ..gateway.render import gateway_apps

        apps += gateway_apps(catalog)
    if out_dir is not None:
        write_apps(apps, out_dir)
    return catalog, apps


def _client(catalog: Any, environment: str | None) -> Any:
    from ..modal_api import ModalClient

    client = ModalClient(environment or catalog.settings.environment)
    client.require_credentials()
    return client
