"""Read YAML files safely, remembering the line of every path for error messages.

Config and rule files are written by people; when one is wrong, the message must point at the
file, the line and the path inside it (``rules/masking.yaml:14 customer.crm_customers.email.op``).
PyYAML's composer keeps the position of every node, so we build plain Python values from the
node tree ourselves and record where each mapping key and list item was written.

Two kinds of hostile document are refused while PyYAML reads them, before their nodes exist:
anchors and aliases (they make "billion laughs" documents possible and no fabric file needs
them), and nesting deeper than :data:`MAX_DEPTH` mappings and lists. PyYAML's scanner keeps a
possible key per open flow level (``[[[[``) and looks at all of them for every token, so a
small file nested deep enough took many seconds to fail; counted per event and stopped at
the limit, it fails at once whatever its size (benchmarks/README.md, "YAML nesting").
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

__all__ = [
    "MAX_DEPTH",
    "MAX_FILE_BYTES",
    "Loc",
    "YamlDocument",
    "YamlLoadError",
    "load_yaml_file",
    "read_once",
]

#: Rule and config files are small; anything larger is a mistake or an attack.
MAX_FILE_BYTES = 1024 * 1024
#: Mappings and lists open inside one another, at most. fabric's deepest file (a masking
#: policy's free-text operator) needs 7; beyond this, a document is a mistake or an attack.
MAX_DEPTH = 64

Loc = tuple[str | int, ...]


class YamlLoadError(Exception):
    """A YAML file could not be read; ``line`` is 1-based or None."""

    def __init__(self, reason: str, line: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.line = line


@dataclass
class YamlDocument:
    """A parsed YAML file: its data and the line where each path starts."""

    path: Path
    data: Any
    lines: dict[Loc, int] = field(default_factory=dict)

    def line_of(self, loc: Loc) -> int | None:
        """Return the line of ``loc`` or of its nearest parent that has one."""
        while True:
            if loc in self.lines:
                return self.lines[loc]
            if not loc:
                return None
            loc = loc[:-1]


_constructor = yaml.SafeLoader("")


_TOO_DEEP = (
    f"nested deeper than {MAX_DEPTH} levels of mappings and lists; fabric files need far "
    "fewer: flatten it"
)


class _GuardedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing anchors, aliases and deep nesting event by event.

    The composer asks for each event just before it builds the node, so a refusal here comes
    before anything deeper than the limit is parsed or built, in the one pass that builds the
    tree (the anchor check used to parse every file a second time).
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.depth = 0

    def fetch_flow_collection_start(self, TokenClass: type[yaml.Token]) -> None:
        """Refuse a ``[`` or ``{`` past the limit as the scanner meets it.

        Each open flow level may start a key, and the scanner looks at every one of them for
        each token, up to 1,024 characters ahead: on ``[[[[`` that took a noticeable time
        before the event check below was reached, and takes none when stopped here
        (benchmarks/README.md, "YAML nesting"). More flow
        levels than the limit mean a deeper document, so this refuses nothing the event
        check would accept.
        """
        if self.flow_level >= MAX_DEPTH:
            raise YamlLoadError(_TOO_DEEP, self.line + 1)
        super().fetch_flow_collection_start(TokenClass)

    def get_event(self) -> yaml.Event:
        """The next event, once it is known to be neither too deep nor an anchor or alias."""
        event: yaml.Event = super().get_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.CollectionStartEvent):
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise YamlLoadError(_TOO_DEEP, _line(event.start_mark))
        elif isinstance(event, yaml.CollectionEndEvent):
            self.depth -= 1
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise YamlLoadError(
                "YAML anchors and aliases (&name, *name) are not allowed; write values out",
                _line(event.start_mark),
            )
        return event


class _Mark(Protocol):
    """What ``_line`` needs of a mark (PyYAML's stubs type marks as a union of two classes)."""

    line: int


def _line(mark: _Mark | None) -> int | None:
    """The 1-based line of a mark, if any."""
    return mark.line + 1 if mark is not None else None


def _build(node: yaml.Node, loc: Loc, lines: dict[Loc, int]) -> Any:
    lines.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _constructor.construct_object(key_node, deep=True)
            if isinstance(key, list | dict):
                line = key_node.start_mark.line + 1
                raise YamlLoadError("mapping keys must be plain values", line)
            if key in out:
                raise YamlLoadError(f"duplicate key {key!r}", key_node.start_mark.line + 1)
            child = (*loc, str(key))
            lines[child] = key_node.start_mark.line + 1
            out[key] = _build(value_node, child, lines)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, (*loc, i), lines) for i, item in enumerate(node.value)]
    return _constructor.construct_object(node, deep=True)


#: Within :func:`read_once`: each file as first read and parsed, by absolute path.
_READ: ContextVar[dict[str, YamlDocument] | None] = ContextVar("fabric_files_read", default=None)


@contextlib.contextmanager
def read_once() -> Iterator[None]:
    """Within: every YAML file is read from disk and parsed once; each later load of it gets
    a copy of that document.

    A sync loads each rule file several times (to compile it, to check it against the
    sources, to compute the rules version it records): an edit saved meanwhile must not make
    it record a version other than the one it ran, and parsing again is wasted work.
    """
    token = _READ.set({})
    try:
        yield
    finally:
        _READ.reset(token)


def load_yaml_file(path: Path) -> YamlDocument:
    """Parse ``path`` into plain values with line numbers.

    Raises:
        YamlLoadError: the file is missing, too large, not YAML, nested deeper than
            :data:`MAX_DEPTH`, or uses anchors/aliases.
    """
    documents = _READ.get()
    if documents is None:
        return _parse(path)
    key = os.path.abspath(path)
    if key not in documents:
        documents[key] = _parse(path)
    # A copy: loaders reshape the data they are given.
    return copy.deepcopy(documents[key])


def _parse(path: Path) -> YamlDocument:
    try:
        size = path.stat().st_size
    except FileNotFoundError as exc:
        raise YamlLoadError("file not found") from exc
    except OSError as exc:
        raise YamlLoadError(f"cannot read file ({exc.strerror})") from exc
    if size > MAX_FILE_BYTES:
        raise YamlLoadError(f"file is {size} bytes; the limit is {MAX_FILE_BYTES} (1 MiB)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise YamlLoadError("file is not valid UTF-8 text") from exc
    except OSError as exc:
        raise YamlLoadError(f"cannot read file ({exc.strerror})") from exc
    try:
        root = yaml.compose(text, Loader=_GuardedLoader)
        lines: dict[Loc, int] = {}
        data = {} if root is None else _build(root, (), lines)
    except yaml.MarkedYAMLError as exc:
        line = _line(exc.problem_mark or exc.context_mark)
        raise YamlLoadError(f"not valid YAML: {exc.problem or exc.context}", line) from exc
    except yaml.YAMLError as exc:
        raise YamlLoadError(f"not valid YAML: {exc}") from exc
    return YamlDocument(path=path, data=data, lines=lines)
