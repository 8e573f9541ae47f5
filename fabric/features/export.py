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

import contextlib
import csv
import hashlib
import heapq
import io
import json
import multiprocessing
import os
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from fabric import __version__
from fabric.errors import FabricError
from fabric.features.compute import compute, parse_time
from fabric.features.service import FeatureService, mask_attributes
from fabric.features.spec import FeatureView
from fabric.project import Project
from fabric.store.base import entity_key, partition_of
from fabric.store.history import History

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


#: Spine rows per batch read and per output row group slice.
_BATCH = 65_536


def _spine_batches(path: Path) -> Iterator[pa.RecordBatch]:
    """Stream a spine in batches (CSV or Parquet), checking its two columns."""
    if not path.exists():
        raise SpineError(f"{path}: spine file not found")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            parquet = pq.ParquetFile(path)
            names = parquet.schema_arrow.names
            batches: Iterator[pa.RecordBatch] = parquet.iter_batches(batch_size=_BATCH)
        else:
            import pyarrow.csv as pcsv

            reader = pcsv.open_csv(
                path,
                read_options=pcsv.ReadOptions(block_size=8 << 20),
                convert_options=pcsv.ConvertOptions(
                    column_types={"entity_id": pa.string(), "event_timestamp": pa.string()}
                ),
            )
            names = reader.schema.names
            batches = iter(reader)
        missing = [c for c in ("entity_id", "event_timestamp") if c not in names]
        if missing:
            raise SpineError(
                f"{path}: the spine has no column {', '.join(repr(m) for m in missing)} "
                f"(columns: {', '.join(names)})"
            )
        for extra in ("found", "existed"):
            if extra in names:
                raise SpineError(f"{path}: the spine has a column '{extra}', which exports write")
        for batch in batches:
            for start in range(0, batch.num_rows, _BATCH):
                yield batch.slice(start, _BATCH)
    except (pa.ArrowInvalid, OSError) as exc:
        raise SpineError(
            f"{path}: not a readable CSV or Parquet spine ({type(exc).__name__})"
        ) from exc


def _resolve(project: Project, service: FeatureService, entity_type: str, key: str) -> str | None:
    """The entity id a spine key names (an id, an alias, or ``source:key``), or None."""
    source, sep, rest = key.partition(":")
    if sep and source in project.config.sources:
        try:
            return service.entities.find(entity_type, source, rest)
        except FabricError:
            return None
    if project.store.get(entity_type, key) is not None:
        return key
    return History(project.catalog).alias_target(entity_type, key)


@dataclass(frozen=True)
class _Job:
    """One partition of spine rows to compute: ``index, entity_id, time`` in a file."""

    config: Path
    view: str
    role: str | None
    rows: Path
    results: Path


def _feature_schema(view: FeatureView) -> pa.Schema:
    return pa.schema(
        [
            pa.field("index", pa.int64()),
            pa.field("found", pa.bool_()),
            pa.field("existed", pa.bool_()),
            *(pa.field(f.name, _ARROW[f.type]) for f in view.features),
        ]
    )


#: Per worker process: the project its jobs read (opened once, not once per partition).
_projects: dict[Path, Project] = {}


def _compute_partition(job: _Job) -> int:
    """Compute a partition in a worker process (the project opened once per process)."""
    project = _projects.get(job.config)
    if project is None:
        project = _projects[job.config] = Project.open(job.config)
    return _compute_with(project, job)


def _compute_with(project: Project, job: _Job) -> int:
    """Compute a partition's rows; write them sorted by spine index."""
    service = FeatureService(project)
    view = service.view(job.view)
    policy = project.policy_for(job.role)
    rows = ipc.open_file(job.rows).read_all().to_pydict()
    by_entity: dict[str, list[int]] = defaultdict(list)
    for at, entity_id in enumerate(rows["entity_id"]):
        by_entity[entity_id].append(at)
    names = [f.name for f in view.features]
    count = len(rows["index"])
    out: dict[str, list[Any]] = {n: [None] * count for n in ("found", "existed", *names)}
    for entity_id in sorted(by_entity):
        positions = by_entity[entity_id]
        times = [datetime.fromisoformat(rows["time"][i]) for i in positions]
        if entity_id == _MISSING:
            results = [(False, {f.name: f.default for f in view.features})] * len(times)
        else:
            _, tables = service.entities.shared_tables(view.entity_type, entity_id, view.tables)
            results = compute(view, tables, times)
        for at, (existed, values) in zip(positions, results, strict=True):
            if entity_id != _MISSING:
                mask_attributes(view, policy, entity_id, values)
            out["found"][at] = entity_id != _MISSING
            out["existed"][at] = existed
            for name in names:
                out[name][at] = values[name]
    table = pa.table({"index": rows["index"], **out}, schema=_feature_schema(view))
    table = table.sort_by("index")
    with ipc.new_file(job.results, table.schema) as writer:
        writer.write_table(table, max_chunksize=_BATCH)
    return count


#: The partition of spine rows whose key no entity holds.
_MISSING = "\x00missing"


def export_view(
    project: Project,
    view_name: str,
    out: Path,
    *,
    spine: Path | None = None,
    fmt: str | None = None,
    role: str | None = None,
    workers: int = 1,
    progress: Progress | None = None,
) -> ExportReport:
    """Export ``view_name`` over ``spine`` (None: every entity, as of now) to ``out``.

    Three streaming passes, so memory holds batches and one partition, never the spine:
    the spine's keys are resolved and its rows sent to partition files by entity; each
    partition is computed (in ``workers`` processes) and written sorted by spine row; the
    partitions are merged back in spine order next to the spine's own columns.

    Raises:
        SpineError: a spine column is missing or a time does not parse (row named).
        EntityNotFoundError: unknown view.
    """
    progress = progress or (lambda stage, n, total: None)
    started = datetime.now(UTC)
    service = FeatureService(project)
    view = service.view(view_name)
    policy = project.policy_for(role)
    suffix = out.suffix.lstrip(".").lower()
    fmt = fmt or (suffix if suffix in FORMATS else "parquet")
    if fmt not in FORMATS:
        raise SpineError(f"unknown format '{fmt}' (formats: {', '.join(FORMATS)})")
    if project.config.path is None:
        raise SpineError("exports need a project opened from its fabric.yaml")
    now = started.replace(tzinfo=None, microsecond=0).isoformat()

    def batches() -> Iterator[pa.RecordBatch]:
        if spine is not None:
            yield from _spine_batches(spine)
            return
        ids = sorted(project.catalog.entities(view.entity_type))
        for begin in range(0, len(ids), _BATCH):
            chunk = ids[begin : begin + _BATCH]
            yield pa.record_batch({"entity_id": chunk, "event_timestamp": [now] * len(chunk)})

    partitions = max(4, 4 * workers)
    with tempfile.TemporaryDirectory(prefix="fabric-export-") as tmp:
        work = Path(tmp)
        total, entities, not_found = _place(
            project, service, view, batches(), work, partitions, spine
        )
        jobs = [
            _Job(
                project.config.path,
                view.name,
                role,
                work / f"rows-{p}.arrow",
                work / f"results-{p}.arrow",
            )
            for p in [*range(partitions), "missing"]
            if (work / f"rows-{p}.arrow").exists()
        ]
        with contextlib.ExitStack() as stack:
            if workers > 1 and len(jobs) > 1:
                pool = stack.enter_context(multiprocessing.get_context("spawn").Pool(workers))
                done: Iterable[int] = pool.imap_unordered(_compute_partition, jobs)
            else:
                done = (_compute_with(project, job) for job in jobs)
            for count in done:
                progress("export rows", count, total)
        schema = _write(batches(), [j.results for j in jobs], view, out, fmt)
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
        "spine_sha256": None if spine is None else _sha256(spine),
        "rows": total,
        "entities": entities,
        "keys_not_found": not_found,
        "format": fmt,
        "schema": {field.name: str(field.type) for field in schema},
        "fabric_version": __version__,
        "started_at": started.isoformat(),
        "finished_at": finished.isoformat(),
    }
    _atomic(manifest, json.dumps(manifest_doc, indent=2).encode())
    return ExportReport(
        out, manifest, total, entities, not_found, (finished - started).total_seconds()
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _place(
    project: Project,
    service: FeatureService,
    view: FeatureView,
    batches: Iterator[pa.RecordBatch],
    work: Path,
    partitions: int,
    spine: Path | None,
) -> tuple[int, int, int]:
    """Pass one: resolve keys, check times, send rows to partition files by entity.

    Returns (rows, entities, rows whose key no entity holds).
    """
    schema = pa.schema([("index", pa.int64()), ("entity_id", pa.string()), ("time", pa.string())])
    writers: dict[str, ipc.RecordBatchFileWriter] = {}
    buffers: dict[str, dict[str, list[Any]]] = {}
    resolved: dict[str, str | None] = {}
    seen: set[str] = set()
    index = not_found = 0

    def flush(name: str) -> None:
        buffer = buffers.pop(name, None)
        if not buffer or not buffer["index"]:
            return
        writer = writers.get(name)
        if writer is None:
            writer = writers[name] = ipc.new_file(work / f"rows-{name}.arrow", schema)
        writer.write_batch(pa.record_batch(buffer, schema=schema))

    try:
        for batch in batches:
            keys = batch.column("entity_id").to_pylist()
            stamps = batch.column("event_timestamp").to_pylist()
            for key, stamp in zip(keys, stamps, strict=True):
                moment = parse_time(stamp)
                if moment is None:
                    raise SpineError(
                        f"{spine}: row {index + 1}: event_timestamp is not an ISO 8601 time"
                    )
                text = None if key is None else str(key)
                if text is not None and text not in resolved:
                    resolved[text] = _resolve(project, service, view.entity_type, text)
                entity_id = None if text is None else resolved[text]
                if entity_id is None:
                    name, entity_id = "missing", _MISSING
                    not_found += 1
                else:
                    seen.add(entity_id)
                    name = str(partition_of(entity_key(view.entity_type, entity_id), partitions))
                buffer = buffers.setdefault(name, {"index": [], "entity_id": [], "time": []})
                buffer["index"].append(index)
                buffer["entity_id"].append(entity_id)
                buffer["time"].append(moment.isoformat())
                if len(buffer["index"]) >= _BATCH:
                    flush(name)
                index += 1
        for name in list(buffers):
            flush(name)
    finally:
        for writer in writers.values():
            writer.close()
    return index, len(seen), not_found


def _merged(results: Sequence[Path]) -> Iterator[dict[str, Any]]:
    """Every result row in spine order: the partitions' sorted files, merged."""

    def rows(path: Path) -> Iterator[dict[str, Any]]:
        reader = ipc.open_file(path)
        for at in range(reader.num_record_batches):
            yield from reader.get_batch(at).to_pylist()

    return heapq.merge(*(rows(p) for p in results), key=lambda r: int(r["index"]))


def _atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _write(
    batches: Iterator[pa.RecordBatch],
    results: Sequence[Path],
    view: FeatureView,
    out: Path,
    fmt: str,
) -> pa.Schema:
    """Pass three: the spine's columns and the features, in spine order, to ``out``.

    Written under a temporary name and renamed when complete. Returns the schema written.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    merged = _merged(results)
    feature_schema = _feature_schema(view)
    parquet: pq.ParquetWriter | None = None
    schema: pa.Schema | None = None
    try:
        with tmp.open("wb") as handle:
            expected = 0
            for batch in batches:
                chunk = [next(merged) for _ in range(batch.num_rows)]
                # Every spine row comes back exactly once, in order: labels must never meet
                # another row's features.
                if [r["index"] for r in chunk] != list(range(expected, expected + len(chunk))):
                    raise FabricError("internal error: exported rows out of spine order")
                expected += len(chunk)
                columns = {
                    f.name: pa.array([r[f.name] for r in chunk], f.type)
                    for f in feature_schema
                    if f.name != "index"
                }
                table = pa.Table.from_batches([batch])
                for name, column in columns.items():
                    table = table.append_column(name, column)
                if schema is None:
                    schema = table.schema
                    if fmt == "parquet":
                        parquet = pq.ParquetWriter(handle, schema, compression="zstd")
                    elif fmt == "csv":
                        handle.write((",".join(_csv_cell(n) for n in schema.names) + "\n").encode())
                table = table.cast(schema)
                if parquet is not None:
                    parquet.write_table(table, row_group_size=_BATCH)
                elif fmt == "csv":
                    text = io.StringIO()
                    writer = csv.writer(text, lineterminator="\n")
                    for row in table.to_pylist():
                        writer.writerow(["" if v is None else v for v in row.values()])
                    handle.write(text.getvalue().encode())
                else:
                    for row in table.to_pylist():
                        line = json.dumps(row, ensure_ascii=False, default=str) + "\n"
                        handle.write(line.encode())
            if parquet is not None:
                parquet.close()
        if schema is None:
            raise SpineError("the spine has no rows")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return schema


def _csv_cell(text: str) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow([text])
    return buffer.getvalue()
