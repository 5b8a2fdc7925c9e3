"""YAML read one way everywhere: safe loader, keys as strings, and the line of every key kept.

A document is returned as plain data plus a map from key path (a tuple of keys and list indexes) to the
1-based line where that key (or item) is written, so every later error can name its line.

Every file is hostile until read: the reader is bounded. It opens only regular files (a fifo would block),
reads at most MAX_FILE_BYTES, refuses nesting deeper than MAX_DEPTH and documents that expand to more than
MAX_VALUES values (an alias bomb, "billion laughs", is a few lines that expand to billions), refuses
recursive aliases, and accepts only the plain YAML types (no `!!python/...`, no custom tags, no merge keys).
Each of these ends in one YamlError for the file, never a RecursionError or MemoryError.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import excerpt

try:  # libyaml is ~10x faster; the pure-Python loader gives the same nodes
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

KeyPath = tuple[str | int, ...]

MAX_FILE_BYTES = 256 * 1024  # a model file is ~1 KB; this leaves room for long comments
MAX_DEPTH = 32  # the schema nests 3 levels; `defaults:` adds one
MAX_VALUES = 10_000  # values after alias expansion; a large model file has ~100
# The scalar types a catalog holds. A timestamp-looking value (`revision: 2024-01-01`) stays the string
# that was written: a date object would only confuse every later rule.
_PLAIN_SCALARS = {
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
}
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_MAP, _SEQ, _MERGE = "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq", "tag:yaml.org,2002:merge"


@dataclass
class YamlDoc:
    data: Any
    lines: dict[KeyPath, int] = field(default_factory=dict)

    def line_of(self, path: KeyPath) -> int:
        """The line of `path`, or of its closest written parent (a missing key is reported at its parent)."""
        while path not in self.lines and path:
            path = path[:-1]
        return self.lines.get(path, 1)


class YamlError(Exception):
    """A file that is not a YAML document we can read; carries the 1-based line."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


def read_yaml(path: Path) -> YamlDoc:
    raw = read_bounded(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise YamlError(line, f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})") from None
    return parse_yaml(text)


def read_bounded(path: Path, limit: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of a regular file of at most `limit` bytes; YamlError for anything else (never blocks)."""
    # O_NONBLOCK: opening a fifo for reading would otherwise wait for a writer forever.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise YamlError(0, f"not a regular file ({file_kind(info.st_mode)}): a model file is a plain file")
        if info.st_size > limit:
            raise YamlError(0, f"the file is {info.st_size} bytes; a catalog file is at most {limit} bytes")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            raw = handle.read(limit + 1)  # the size may have changed since fstat
    finally:
        os.close(fd)
    if len(raw) > limit:
        raise YamlError(0, f"the file is over {limit} bytes; a catalog file is at most {limit} bytes")
    return raw


def file_kind(mode: int) -> str:
    kinds = [
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a fifo"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISLNK, "a link"),
        (stat.S_ISREG, "a file"),
    ]
    return next((name for test, name in kinds if test(mode)), "not a file")


def parse_yaml(text: str) -> YamlDoc:
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        column = f", column {mark.column + 1}" if mark else ""
        context = ""
        if exc.problem and exc.context and exc.context_mark:
            context = f" ({exc.context} started on line {exc.context_mark.line + 1})"
        raise YamlError(line, f"YAML syntax error{column}: {exc.problem or exc.context}{context}") from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow, such as NUL
        line = text[: exc.position].count("\n") + 1
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        raise YamlError(line, f"character #x{code:04x} is not allowed in YAML ({exc.reason})") from None
    except yaml.YAMLError as exc:  # e.g. more than one document in the stream
        raise YamlError(1, f"YAML error: {exc}") from None
    if node is None:
        raise YamlError(1, "the file is empty")
    _measure(node, 0, {}, set())  # bounds first, on the node graph: a bomb is refused before any expansion
    doc = YamlDoc(data=None)
    doc.data = _Builder(doc.lines).build(node, (), 0)
    return doc


def _measure(node: yaml.Node, depth: int, sizes: dict[int, int], open_nodes: set[int]) -> int:
    """How many values `node` expands to (aliases counted at every use); YamlError past a bound.

    Each node is measured once (`sizes`), so this is linear in the file, whatever the expansion.
    """
    line = node.start_mark.line + 1
    if depth > MAX_DEPTH:
        raise YamlError(line, f"nested more than {MAX_DEPTH} levels deep")
    if id(node) in sizes:
        return sizes[id(node)]
    if id(node) in open_nodes:
        raise YamlError(line, "a recursive alias (a value that contains itself)")
    size = 1
    if isinstance(node, (yaml.SequenceNode, yaml.MappingNode)):
        open_nodes.add(id(node))
        children = node.value if isinstance(node, yaml.SequenceNode) else [n for pair in node.value for n in pair]
        for child in children:
            size += _measure(child, depth + 1, sizes, open_nodes)
            if size > MAX_VALUES:
                raise YamlError(line, f"the document expands to more than {MAX_VALUES} values (YAML aliases?)")
        open_nodes.discard(id(node))
    sizes[id(node)] = size
    return size


class _Builder:
    """Node graph -> plain data, once `_measure` has bounded it (depth, expansion, no cycles)."""

    def __init__(self, lines: dict[KeyPath, int]) -> None:
        self.lines = lines
        self.loader = _Loader("")

    def build(self, node: yaml.Node, path: KeyPath, depth: int) -> Any:
        line = node.start_mark.line + 1
        self.lines.setdefault(path, line)
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node)
        if node.tag not in (_MAP, _SEQ):
            raise YamlError(line, f"the tag {_tag(node.tag)} is not allowed: {_PLAIN_TYPES}")
        if isinstance(node, yaml.MappingNode):
            return self.mapping(node, path, depth)
        return [self.build(item, path + (i,), depth + 1) for i, item in enumerate(node.value)]

    def mapping(self, node: yaml.MappingNode, path: KeyPath, depth: int) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                raise YamlError(key_line, "a key must be a plain string")
            if key_node.tag == _MERGE:
                raise YamlError(key_line, f"merge keys (<<) are not supported: {_SHARE_WITH_DEFAULTS}")
            key = str(key_node.value)
            if key in result:
                raise YamlError(key_line, f"duplicate key {excerpt(key)}")
            self.lines[path + (key,)] = key_line
            result[key] = self.build(value_node, path + (key,), depth + 1)
        return result

    def scalar(self, node: yaml.ScalarNode) -> Any:
        line = node.start_mark.line + 1
        if node.tag == _TIMESTAMP:
            return node.value
        if node.tag not in _PLAIN_SCALARS:
            raise YamlError(line, f"the tag {_tag(node.tag)} is not allowed: {_PLAIN_TYPES}")
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError as exc:
            raise YamlError(line, f"cannot read value: {excerpt(exc.problem)}") from None
        except ValueError:  # e.g. an integer of more digits than Python converts (4300)
            raise YamlError(line, f"cannot read value {excerpt(node.value)}: not a usable number") from None


def _tag(tag: str) -> str:
    return excerpt(tag.replace("tag:yaml.org,2002:", "!!"), 60)


_SHARE_WITH_DEFAULTS = "share values with `defaults:` in _fleet.yaml"
_PLAIN_TYPES = "catalog values are plain strings, numbers, booleans, lists and mappings"
