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
import re
from dataclasses import dataclass, field
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
    # The model file a problem located elsewhere (in `defaults:`) was found for; folded into the message
    # by the catalog (catalog._merge_shared), never printed on its own.
    model: str = field(default="", compare=False)

    def __str__(self) -> str:
        # Every part may carry a catalog author's characters (a file name, a key): escaped at this edge, so
        # no terminal ever receives a control character or an ANSI escape from the catalog.
        where = f"{self.file}:{self.line}" if self.line else self.file
        key = f" {self.path}:" if self.path else ""
        severity = " warning:" if self.warning else ""
        return escape_controls(f"{where}:{key}{severity} {self.message}")

    def as_dict(self) -> dict[str, object]:
        return {
            "file": self.file,
            "line": self.line,
            "path": self.path,
            "message": self.message,
            "severity": "warning" if self.warning else "error",
        }


# C0 and C1 control characters (ESC starts every ANSI sequence), DEL, the bidirectional marks, overrides
# and isolates that make text display in another order than it is read ("Trojan Source"), and the
# invisible ones (zero-width space and joiners, word joiner, BOM) that make two names look the same.
UNSAFE_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060\u2066-\u2069\ufeff]")
EXCERPT_LENGTH = 32  # short enough that a typical API key or token is never shown whole


def escape_controls(text: str) -> str:
    """`text` with every unsafe character written as a Python escape (\\x1b, \\u202e): safe on a terminal."""
    return UNSAFE_CHARACTERS.sub(lambda m: ascii(m.group())[1:-1], text)


def excerpt(value: object, limit: int = EXCERPT_LENGTH) -> str:
    """A short, escaped quotation of a value of unknown origin: repr-style, cut to `limit` characters.

    Messages quote values this way and never whole: a value may be a secret, a file read through a link,
    or a megabyte of text, and a terminal must never receive its control characters.
    """
    # ascii(): a lookalike letter (Cyrillic 'е' for 'e') shows as \u0435, so two values that look alike
    # in a message never read as equal.
    text = escape_controls(ascii(value))
    if len(text) <= limit:
        return text
    size = f" ({len(value)} characters)" if isinstance(value, str) else ""
    return f"{text[: limit - 3]}...{size}"


def warnings_summary(count: int) -> str | None:
    """The one line a command other than `validate` prints about catalog warnings (validate prints them all)."""
    if not count:
        return None
    return f"{count} catalog warning{'s' if count != 1 else ''}: run `fleet validate` to see them"


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
    # Only the directory is resolved: a link is shown by its own name, never by the name of its target.
    given = Path(path)
    try:
        return str((given.parent.resolve() / given.name).relative_to(Path(cwd).resolve()))
    except ValueError:
        return path
