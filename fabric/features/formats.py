"""The file formats an export is written in: one list for the CLI, the API and the writer.

Kept apart from the writer (:mod:`fabric.services.export`) so the CLI can offer the choices
without importing Arrow.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Literal, get_args

from fabric.errors import InvalidRequestError

__all__ = ["FORMATS", "ExportFormat", "export_format"]

ExportFormat = Literal["parquet", "csv", "jsonl"]
#: Every format an export can be written in; the first is the default.
FORMATS: tuple[str, ...] = get_args(ExportFormat)


def export_format(name: str, fmt: str | None) -> str:
    """The format to write the file ``name`` in: ``fmt``, else the name's suffix when it
    names one, else the default.

    Raises:
        InvalidRequestError: ``fmt`` is not one of :data:`FORMATS`.
    """
    if fmt is None:
        suffix = PurePosixPath(name).suffix.lstrip(".").lower()
        return suffix if suffix in FORMATS else FORMATS[0]
    if fmt not in FORMATS:
        raise InvalidRequestError(f"unknown format '{fmt}' (formats: {', '.join(FORMATS)})")
    return fmt
