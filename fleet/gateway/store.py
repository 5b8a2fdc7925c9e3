"""Where keys and usage live: one small interface, two backends.

`ModalDictStore` is a named `modal.Dict` (a real Modal primitive: the deployed gateway and `fleet keys` on a
laptop read and write the same one). `JsonFileStore` is a local file for `fleet gateway --local`: every write
is read-modify-write under an exclusive file lock, then an atomic rename, so two processes (the gateway and
`fleet keys revoke`) never lose each other's writes and a reader never sees half a file.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol


class Store(Protocol):
    """String keys, JSON-able values. Every method may block (a network call): call it off the event loop."""

    def get(self, key: str) -> Any | None: ...

    def put_many(self, entries: dict[str, Any]) -> None: ...

    def pop(self, key: str) -> Any | None: ...

    def items(self) -> list[tuple[str, Any]]: ...


class JsonFileStore:
    """A JSON object in one file. Reads are cached by (inode, mtime, size): 10,000 keys are parsed once, not per
    call; every write replaces the file (a new inode), so another process's write is always noticed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._cached: tuple[tuple[int, int, int], dict[str, Any]] | None = None

    def get(self, key: str) -> Any | None:
        return self._read().get(key)

    def items(self) -> list[tuple[str, Any]]:
        return list(self._read().items())

    def put_many(self, entries: dict[str, Any]) -> None:
        with self._locked() as data:
            data.update(entries)

    def pop(self, key: str) -> Any | None:
        with self._locked() as data:
            return data.pop(key, None)

    def _read(self) -> dict[str, Any]:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return {}
        version = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if self._cached is None or self._cached[0] != version:
            self._cached = (version, self._load())
        return self._cached[1]

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8") or "{}")
        except FileNotFoundError:
            return {}
        if not isinstance(data, dict):
            raise ValueError(f"{self.path}: expected a JSON object")
        return data

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        """The file's content, to change in place; written back atomically when the block ends cleanly."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = self._load()
            yield data
            handle, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name, suffix=".tmp")
            try:
                with os.fdopen(handle, "w", encoding="utf-8") as out:
                    json.dump(data, out, separators=(",", ":"))
                    out.flush()
                    os.fsync(out.fileno())
                os.chmod(temporary, 0o600)  # key hashes and team names: the owner's only
                os.replace(temporary, self.path)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temporary)
                raise
        self._cached = None


class ModalDictStore:
    """A named modal.Dict (created on first use). Values are JSON text, so any client version reads them."""

    def __init__(self, name: str, environment: str | None = None) -> None:
        import modal

        self.name = name
        self._dict = modal.Dict.from_name(name, environment_name=environment, create_if_missing=True)

    def get(self, key: str) -> Any | None:
        raw = self._dict.get(key)
        return None if raw is None else json.loads(raw)

    def put_many(self, entries: dict[str, Any]) -> None:
        if entries:
            self._dict.update({key: json.dumps(value, separators=(",", ":")) for key, value in entries.items()})

    def pop(self, key: str) -> Any | None:
        raw = self._dict.pop(key, None)
        return None if raw is None else json.loads(raw)

    def items(self) -> list[tuple[str, Any]]:
        return [(key, json.loads(raw)) for key, raw in self._dict.items()]
