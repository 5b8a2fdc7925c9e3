"""The user's mistakes, as one exception tree. Only the CLI turns them into a message and an exit code.

    FleetError
    ├── CatalogInvalid      the catalog has errors (each a Problem with file, line, key path)
    ├── NotInCatalog        a model name asked for is not in the catalog
    ├── ModalUnavailable    no credentials, Modal unreachable, or a `modal` command failed
    ├── ModalError          a Modal call failed (Modal's own exception, translated in fleet/modal_api.py)
    ├── DeployLocked        another `fleet deploy` of the same fleet is running
    └── ProbeError          (fleet/probe.py) an endpoint check could not be carried out

The runtime's own EngineError (fleet/runtime.py, standard library only) is turned into a FleetError by the CLI.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path


class FleetError(Exception):
    """A problem the user can fix; printed without a traceback."""


@dataclass(frozen=True, order=True)
class Problem:
    """One finding about one catalog file: an error, or a warning when `warning` is true."""

    file: str
    line: int
    path: str
    message: str
    warning: bool = False

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        key = f" {self.path}:" if self.path else ""
        severity = " warning:" if self.warning else ""
        return f"{where}:{key}{severity} {self.message}"

    def as_dict(self) -> dict[str, object]:
        return {
            "file": self.file,
            "line": self.line,
            "path": self.path,
            "message": self.message,
            "severity": "warning" if self.warning else "error",
        }


class CatalogInvalid(FleetError):
    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        errors = [p for p in problems if not p.warning]
        super().__init__(f"{len(errors)} error(s) in the catalog")


class NotInCatalog(FleetError):
    pass


class ModalUnavailable(FleetError):
    pass


class ModalError(FleetError):
    """A call to Modal failed; the message names Modal's exception kind ("NotFoundError: ...")."""


class DeployLocked(FleetError):
    pass


def display_path(path: Path) -> str:
    """A path as the user would type it: relative to the working directory when it is below it."""
    return _display_path(str(path), os.getcwd())


@lru_cache(maxsize=4096)  # a catalog names each file several times; resolving costs system calls
def _display_path(path: str, cwd: str) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path(cwd).resolve()))
    except ValueError:
        return path
