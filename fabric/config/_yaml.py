"""Read YAML files safely, remembering the line of every path for error messages.

Config and rule files are written by people; when one is wrong, the message must point at the
file, the line and the path inside it (``rules/masking.yaml:14 customer.crm_customers.email.op``).
PyYAML's composer keeps the position of every node, so we build plain Python values from the
node tree ourselves and record where each mapping key and list item was written. Anchors and
aliases are refused outright: they make "billion laughs" documents possible and no fabric file
needs them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["MAX_FILE_BYTES", "YamlDocument", "YamlLoadError", "load_yaml_file"]

#: Rule and config files are small; anything larger is a mistake or an attack.
MAX_FILE_BYTES = 1024 * 1024

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


def load_yaml_file(path: Path) -> YamlDocument:
    """Parse ``path`` into plain values with line numbers.

    Raises:
        YamlLoadError: the file is missing, too large, not YAML, or uses anchors/aliases.
    """
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
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                mark = event.start_mark
                raise YamlLoadError(
                    "YAML anchors and aliases (&name, *name) are not allowed; write values out",
                    mark.line + 1 if mark is not None else None,
                )
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        lines: dict[Loc, int] = {}
        data = {} if root is None else _build(root, (), lines)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise YamlLoadError(f"not valid YAML: {exc.problem or exc.context}", line) from exc
    except yaml.YAMLError as exc:
        raise YamlLoadError(f"not valid YAML: {exc}") from exc
    except RecursionError as exc:
        raise YamlLoadError("nested too deeply to be a fabric file") from exc
    return YamlDocument(path=path, data=data, lines=lines)
