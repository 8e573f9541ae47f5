"""Export a feature view over a spine: a point-in-time-correct training set, and its manifest.

The spine (CSV or Parquet) has ``entity_id`` (an entity id, or a source key ``source:key``
like ``crm:42``), ``event_timestamp`` (ISO 8601) and any label columns, carried through
untouched. Output rows keep the spine's order; rows are grouped by entity so each entity is
decoded once, and every entity's times go through :func:`fabric.features.compute.compute`,
the code path online lookups use. A key no entity holds is counted, not fatal: its row gets
the defaults and ``found = false``.

The data file is written to a temporary name and renamed when complete; the same spine over
the same store state gives a byte-identical file. ``FILE.manifest.json`` beside it records
what it was made from.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from fabric import __version__
from fabric.errors import EntityNotFoundError, FabricError
from fabric.features.compute import compute, parse_time
from fabric.features.service import FeatureService, mask_attributes
from fabric.project import Project

__all__ = ["FORMATS", "ExportReport", "SpineError", "export_view"]

FORMATS = ("parquet", "csv", "jsonl")
_ARROW = {"INTEGER": pa.int64(), "REAL": pa.float64(), "TEXT": pa.string(), "BOOLEAN": pa.bool_()}
Progress = Callable[[str, int, int | None], None]


class SpineError(FabricError):
    """A spine that cannot be used: a missing column, a time that does not parse."""

    code = "bad_request"


@dataclass
class ExportReport:
    """What an export wrote."""

    out: Path
    manifest: Path
    rows: int
    entities: int
    not_found: int
    seconds: float


def _read_spine(path: Path) -> pa.Table:
    if not path.exists():
        raise SpineError(f"{path}: spine file not found")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            table = pq.read_table(path)
        else:
            import pyarrow.csv as pcsv

            table = pcsv.read_csv(
                path,
                convert_options=pcsv.ConvertOptions(
                    column_types={"entity_id": pa.string(), "event_timestamp": pa.string()}
                ),
            )
    except (pa.ArrowInvalid, OSError) as exc:
        raise SpineError(
            f"{path}: not a readable CSV or Parquet spine ({type(exc).__name__})"
        ) from exc
    missing = [c for c in ("entity_id", "event_timestamp") if c not in table.column_names]
    if missing:
        raise SpineError(
            f"{path}: the spine has no column {', '.join(repr(m) for m in missing)} "
            f"(columns: {', '.join(table.column_names)})"
        )
    return table


def _resolve(project: Project, service: FeatureService, entity_type: str, key: str) -> str | None:
    """The entity id a spine key names (an id, an alias, or ``source:key``), or None."""
    source, sep, rest = key.partition(":")
    if sep and source in project.config.sources:
        try:
            return service.entities.find(entity_type, source, rest)
        except (EntityNotFoundError, FabricError):
            return None
    if project.store.get(entity_type, key) is not None:
        return key
    from fabric.store.history import History

    return History(project.catalog).alias_target(entity_type, key)


def export_view(
    project: Project,
    view_name: str,
    out: Path,
    *,
    spine: Path | None = None,
    fmt: str | None = None,
    role: str | None = None,
    progress: Progress | None = None,
) -> ExportReport:
    """Export ``view_name`` over ``spine`` (None: every entity, as of now) to ``out``.

    Raises:
        SpineError: a spine column is missing or a time does not parse (row named).
        EntityNotFoundError: unknown view.
    """
    progress = progress or (lambda stage, n, total: None)
    started = datetime.now(UTC)
    service = FeatureService(project)
    view = service.view(view_name)
    policy = project.policy_for(role)
    fmt = fmt or (
        out.suffix.lstrip(".").lower() if out.suffix.lstrip(".") in FORMATS else "parquet"
    )
    if fmt not in FORMATS:
        raise SpineError(f"unknown format '{fmt}' (formats: {', '.join(FORMATS)})")
    if spine is not None:
        table = _read_spine(spine)
        spine_hash = hashlib.sha256(spine.read_bytes()).hexdigest()
        keys = [None if k is None else str(k) for k in table.column("entity_id").to_pylist()]
        stamps = table.column("event_timestamp").to_pylist()
    else:
        ids = sorted(project.catalog.entities(view.entity_type))
        now = started.replace(tzinfo=None, microsecond=0).isoformat()
        table = pa.table({"entity_id": ids, "event_timestamp": [now] * len(ids)})
        keys, stamps, spine_hash = list(ids), [now] * len(ids), None
    times = []
    for row, stamp in enumerate(stamps, start=1):
        moment = parse_time(stamp)
        if moment is None:
            raise SpineError(
                f"{spine}: row {row}: event_timestamp is not an ISO 8601 time"
                if spine
                else "internal: bad time"
            )
        times.append(moment)
    groups: dict[str, list[int]] = defaultdict(list)
    not_found: list[int] = []
    resolved: dict[str, str | None] = {}
    for index, key in enumerate(keys):
        if key is None:
            not_found.append(index)
            continue
        if key not in resolved:
            resolved[key] = _resolve(project, service, view.entity_type, key)
        entity_id = resolved[key]
        (groups[entity_id] if entity_id is not None else not_found).append(index)
    names = [f.name for f in view.features]
    columns: dict[str, list[Any]] = {n: [None] * len(keys) for n in names}
    found = [False] * len(keys)
    existed = [False] * len(keys)
    for index in not_found:
        for feature in view.features:
            columns[feature.name][index] = feature.default
    for entity_id in sorted(groups):
        indices = groups[entity_id]
        _, _, tables = service.entities._load(view.entity_type, entity_id, None)
        for index, (was, values) in zip(
            indices, compute(view, tables, [times[i] for i in indices]), strict=True
        ):
            mask_attributes(view, policy, entity_id, values)
            found[index], existed[index] = True, was
            for name in names:
                columns[name][index] = values[name]
        progress("export", len(indices), len(keys))
    data = table
    for extra in ("found", "existed", *names):
        if extra in data.column_names:
            raise SpineError(f"the spine has a column '{extra}', which the export writes")
    data = data.append_column("found", pa.array(found, pa.bool_()))
    data = data.append_column("existed", pa.array(existed, pa.bool_()))
    for feature in view.features:
        data = data.append_column(
            feature.name, pa.array(columns[feature.name], _ARROW[feature.type])
        )
    _write(data, out, fmt)
    finished = datetime.now(UTC)
    runs = [r for r in project.catalog.runs(50) if r.status == "succeeded"]
    manifest = out.with_name(out.name + ".manifest.json")
    manifest_doc = {
        "view": view.name,
        "view_version": view.version,
        "feature_definitions_sha256": view.definition_hash,
        "rules_version": project.rules_version(),
        "role": role or project.config.default_role,
        "policy": policy.name,
        "store_state": {
            "sync_run": runs[0].id if runs else None,
            "entities": project.catalog.count(view.entity_type),
        },
        "spine": None if spine is None else str(spine),
        "spine_sha256": spine_hash,
        "rows": len(keys),
        "entities": len(groups),
        "keys_not_found": len(not_found),
        "format": fmt,
        "schema": {f.name: str(t) for f, t in zip(data.schema, data.schema.types, strict=True)},
        "fabric_version": __version__,
        "started_at": started.isoformat(),
        "finished_at": finished.isoformat(),
    }
    _atomic(manifest, json.dumps(manifest_doc, indent=2).encode())
    return ExportReport(
        out,
        manifest,
        len(keys),
        len(groups),
        len(not_found),
        (finished - started).total_seconds(),
    )


def _atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _write(data: pa.Table, out: Path, fmt: str) -> None:
    """Write the table in ``fmt``, under a temporary name renamed when complete."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        if fmt == "parquet":
            pq.write_table(data, tmp, row_group_size=256 * 1024, compression="zstd")
        elif fmt == "csv":
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator="\n")
            writer.writerow(data.column_names)
            for row in data.to_pylist():
                writer.writerow(["" if v is None else v for v in row.values()])
            tmp.write_text(buffer.getvalue(), encoding="utf-8")
        else:
            with tmp.open("w", encoding="utf-8") as handle:
                for row in data.to_pylist():
                    handle.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
