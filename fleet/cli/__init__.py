"""The `fleet` command: a group of thin commands, one module per command family.

Each command parses its arguments, calls one stage function and prints the typed result. Stage modules are
imported inside the commands, so `fleet --help` stays fast and never imports modal. The command modules
import only `common`, never each other or this module: no import cycle.
"""

from __future__ import annotations

from typing import Any

import click

from ..errors import CatalogInvalid, FleetError, ModalError
from . import catalog_cmds, deploy_cmds, gateway_cmds, lock_cmds, observe_cmds, ops_cmds, probe_cmds, serve_cmds
from .common import print_problems

# One line per command module; a new family of commands is a new module and one entry here.
COMMAND_MODULES = (catalog_cmds, deploy_cmds, observe_cmds, probe_cmds, serve_cmds, gateway_cmds, lock_cmds, ops_cmds)

class FleetGroup(click.Group):
    """Funnels the user's mistakes into one `error: ...` line and exit code 1; bugs keep their traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        arguments = list(ctx.args)  # the command's own arguments; click clears ctx.args when it dispatches
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            # `plan --detailed-exitcode` promises 2 for "changes": a usage error must not look like one.
            if "--detailed-exitcode" not in arguments:
                raise
            exc.show()
            ctx.exit(1)
        except KeyboardInterrupt:
            # Ctrl-C outside a deploy's apply loop (which handles it itself): no traceback, the shell's code.
            click.echo("\ninterrupted", err=True)
            ctx.exit(130)
        except CatalogInvalid as exc:
            print_problems(exc.problems)
            click.echo(f"error: {exc}", err=True)
            ctx.exit(1)
        except FleetError as exc:
            # Modal's own errors arrive here already translated by the Modal seam (fleet.errors.ModalError).
            if ctx.obj and ctx.obj.get("verbose"):
                raise
            prefix = "Modal: " if isinstance(exc, ModalError) else ""
            click.echo(f"error: {prefix}{exc}", err=True)
            ctx.exit(1)


@click.group(cls=FleetGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Show tracebacks for errors.")
@click.version_option(package_name="fleet")
@click.pass_context
def main(ctx: click.Context, verbose: bool) -> None:
    """Deploy a catalog of open LLMs as scale-to-zero vLLM endpoints on Modal."""
    ctx.obj = {"verbose": verbose}


for _module in COMMAND_MODULES:
    for _command in _module.COMMANDS:
        main.add_command(_command)
