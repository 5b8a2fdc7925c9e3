"""`fleet serve NAME --local`: a catalog model's vLLM on this machine, through the container's runtime."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from ..errors import FleetError
from .common import CATALOG_OPTION

@click.command()
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
    from ..catalog import load_catalog, select
    from ..local import local_config, serve_local
    from ..runtime import EngineConfig, EngineError

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


COMMANDS = [serve]
