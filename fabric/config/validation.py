"""Turn pydantic validation errors into messages that name file, line, path and what is allowed.

Shared by every YAML-backed model (fabric.yaml, rule files) so all of them read the same way:
``fabric.yaml:12 sources.crm.tables.customers.watermrk: unknown key (allowed: columns, name, ...)``.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from fabric.config.documents import Loc, YamlDocument

__all__ = ["StrictModel", "display_path", "format_issue", "suggest", "validate_document"]

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Base of every model read from a file: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def display_path(path: Path) -> str:
    """Show ``path`` relative to the working directory when it is below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def format_issue(doc_path: Path, line: int | None, loc: Loc, message: str) -> str:
    """Format one problem as ``file:line path: message``."""
    where = display_path(doc_path) + (f":{line}" if line else "")
    dotted = ".".join(str(part) for part in loc)
    return f"{where} {dotted}: {message}" if dotted else f"{where}: {message}"


def _model_in(annotation: Any) -> Any:
    """Strip Optional/Annotated wrappers to find the model or container inside."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _model_in(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if arg is not type(None):
                return _model_in(arg)
    return annotation


def _union_member(annotation: Any, tag: Any) -> Any:
    """The member of a discriminated union of models whose tag is ``tag`` (None: not one)."""
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) not in (typing.Union, types.UnionType):
        return None
    for arg in typing.get_args(annotation):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            for info in arg.model_fields.values():
                if typing.get_origin(info.annotation) is typing.Literal and tag in typing.get_args(
                    info.annotation
                ):
                    return arg
    return None


def _type_at(model: type[BaseModel], loc: Loc) -> Any:
    """Walk the model's annotations along ``loc``; None when the path leaves known types.

    ``loc`` is pydantic's: a discriminated union adds its tag (an operator's ``op``) as a
    step of its own, which picks the member model here.
    """
    current: Any = model
    for part in loc:
        member = _union_member(current, part)
        if member is not None:
            current = member
            continue
        current = _model_in(current)
        origin = typing.get_origin(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            info = current.model_fields.get(str(part)) or next(
                (f for f in current.model_fields.values() if f.alias == part), None
            )
            if info is None:
                return None
            current = info.annotation
        elif origin is dict:
            current = typing.get_args(current)[1]
        elif origin in (list, tuple):
            current = typing.get_args(current)[0]
        else:
            return None
    return _model_in(current)


def _allowed_keys(model: type[BaseModel], loc: Loc) -> list[str]:
    owner = _type_at(model, loc)
    if isinstance(owner, type) and issubclass(owner, BaseModel):
        return sorted(info.alias or name for name, info in owner.model_fields.items())
    return []


def suggest(word: str, options: Iterable[str]) -> str:
    """``"did you mean 'x'? "`` for the closest option, or nothing."""
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'? " if close else ""


def _describe(model: type[BaseModel], err: Any) -> str:
    loc: Loc = tuple(err["loc"])
    kind = err["type"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(model, loc[:-1])
        hint = suggest(str(loc[-1]), allowed)
        return f"unknown key; {hint}(allowed: {', '.join(allowed)})"
    if kind == "missing":
        return "required key is missing"
    if kind == "union_tag_invalid":
        ctx = err.get("ctx", {})
        options = [t.strip(" '") for t in str(ctx.get("expected_tags", "")).split(",")]
        tag = str(ctx.get("tag", ""))[:40]
        hint = suggest(tag, options)
        return (
            f"unknown {str(ctx.get('discriminator', 'kind')).strip(chr(39))} '{tag}'; "
            f"{hint}(allowed: {', '.join(options)})"
        )
    message = str(err["msg"])
    if kind == "value_error":
        return message.removeprefix("Value error, ")  # our own words, written as shown
    # Never echo the offending value: it may be a secret or a piece of source data.
    return message[0].lower() + message[1:] if message else kind


def _in_document(data: Any, loc: Loc) -> Loc:
    """``loc`` as a path in the file: the tags pydantic adds for unions are not in it."""
    shown: list[str | int] = []
    node = data
    for at, part in enumerate(loc):
        inside = (isinstance(node, dict) and part in node) or (
            isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        )
        if inside:
            node = node[part]
        elif isinstance(node, dict) and part in node.values():
            continue  # a union's tag (an operator's op): pydantic's step, not the file's
        elif at == len(loc) - 1 or not isinstance(node, dict | list):
            shown.append(part)  # a key that is wrong or missing: name it
            node = None
            continue
        else:
            continue  # a union's tag: a step of pydantic's, not of the file
        shown.append(part)
    return tuple(shown)


def validate_document(
    model: type[M], doc: YamlDocument, *, context: dict[str, Any] | None = None
) -> tuple[M | None, list[str]]:
    """Validate ``doc.data`` against ``model``; return the model or every problem found."""
    try:
        return model.model_validate(doc.data, context=context), []
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False, include_input=False):
            loc: Loc = tuple(p for p in err["loc"] if not str(p).startswith("function-"))
            if err["type"] == "union_tag_invalid":
                loc = (*loc, str(err.get("ctx", {}).get("discriminator", "")).strip("'"))
            err = {**err, "loc": loc}
            shown = _in_document(doc.data, loc)
            line = doc.line_of(shown)
            problems.append(format_issue(doc.path, line, shown, _describe(model, err)))
        return None, problems
