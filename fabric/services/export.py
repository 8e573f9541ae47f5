"""Export a feature view over a spine: a point-in-time-correct training set, and its manifest.

The spine (CSV or Parquet) has ``entity_id`` (an entity id, or a source key ``source:key``
like ``crm:42``), ``event_timestamp`` (ISO 8601) and any label columns, carried through
untouched. Output rows keep the spine's order; rows are grouped by entity so each entity is
decoded once, and every (entity, time) goes through
:func:`fabric.features.compute.compute_many`, the code path online lookups use. A key no
entity holds is counted, not fatal: its row gets the defaults and ``found = false``.

The data file is written to a temporary name and renamed when complete; the same spine over
the same store state gives a byte-identical file. ``FILE.manifest.json`` beside it records
what it was made from (an export to ``s3://`` is written locally, then published whole:
:mod:`fabric.objects`). Given a byte budget (the API's quota per key), an export stops as soon
as its file passes it, and nothing of it is kept.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import math
import os
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from fabric import __version__
from fabric.errors import BudgetExceededError, FabricError, SpineError
from fabric.executors import LocalExecutor
from fabric.features.compute import ARROW_TYPES, columns_read, compute_many, parse_times
from fabric.features.formats import export_format
from fabric.features.spec import FeatureView
from fabric.features.spine import SpineLimits, check_spine, estimated_rows, spine_batches
from fabric.files import private_temp, write_private
from fabric.objects import Location, S3Url, check_reachable, fetch, object_size, publish
from fabric.project import Project
from fabric.services.features import FeatureService, mask_columns

__all__ = [
    "ExportReport",
    "SpineLimits",
    "export_view",
]

Progress = Callable[[str, int, int | None], None]


@dataclass
class ExportReport:
    """What an export wrote."""

    out: Location
    manifest: Location
    rows: int
    entities: int
    not_found: int
    seconds: float


#: Spine rows per batch read and per output row group slice.
_BATCH = 65_536
#: Spine rows per partition, about: a worker holds one partition's rows and results.
_PARTITION_ROWS = 50_000
#: At most this many partitions (each is an open file while the spine is read). Past
#: 256 x 50,000 spine rows, partitions grow instead, and with them a worker's memory.
_MAX_PARTITIONS = 256
#: Entities decoded and computed together (their rows are held at once).
_CHUNK_ENTITIES = 2_000
#: Spine keys remembered with their entities; past this many the resolver starts afresh.
_KNOWN_KEYS = 1_000_000
#: The partition of spine rows whose key no entity holds.
_MISSING = "\x00missing"
_ROWS = pa.schema([("index", pa.int64()), ("entity_id", pa.string()), ("time", pa.int64())])


def _times(column: pa.ChunkedArray | pa.Array, spine: Path | None, first: int) -> pa.Array:
    """Spine times as microseconds since 1970 (UTC); the row of the first bad one named."""
    if pa.types.is_timestamp(column.type) and not column.null_count:
        # Instants are stored in UTC; a time without a zone is taken as UTC.
        return pc.cast(column, pa.timestamp("us", tz=column.type.tz)).cast(pa.int64())
    text = column if pa.types.is_string(column.type) else pc.cast(column, pa.string())
    if isinstance(text, pa.ChunkedArray):
        text = text.combine_chunks()
    numbers, valid = parse_times(text)
    if not valid.all():
        row = first + int(np.argmin(valid)) + 1
        raise SpineError(f"{spine}: row {row}: event_timestamp is not an ISO 8601 time")
    return pa.array(numbers, pa.int64())


class _Resolver:
    """Spine keys -> entity ids and partitions: an id, an alias, or ``source:key``.

    The keys seen so far are an Arrow array beside their entity ids and partitions, so a
    batch of spine rows is matched to them in C; only keys not seen before are looked up
    (ids in one catalog query). Past ``_KNOWN_KEYS`` keys it starts afresh: memory stays
    bounded whatever the spine.
    """

    #: stands for a missing key (ids never hold NUL)
    _NULL = "\x00null"

    def __init__(
        self, project: Project, service: FeatureService, entity_type: str, partitions: int
    ) -> None:
        self.project = project
        self.service = service
        self.entity_type = entity_type
        self.partitions = partitions
        self._reset()

    def _reset(self) -> None:
        self.keys = pa.array([self._NULL], pa.string())
        self.ids = pa.array([_MISSING], pa.string())
        self.places = np.array([-1], np.int64)

    def batch(self, keys: pa.Array) -> tuple[pa.Array, Any]:
        """Each row's entity id (``_MISSING`` when no entity holds its key) and partition
        (-1 for those)."""
        keys = keys.fill_null(self._NULL)
        at = pc.index_in(keys, value_set=self.keys)
        if at.null_count:
            new = pc.unique(keys.filter(at.is_null())).to_pylist()
            if len(self.keys) + len(new) > _KNOWN_KEYS:
                self._reset()
                return self.batch(keys)  # every key of the batch is new again
            stored = self.project.catalog.existing(self.entity_type, new)
            found = [key if key in stored else self._one(key) for key in new]
            # Any stable placement that puts an entity in one partition will do (the file is
            # in spine order whatever the partitions): CRC-32 of the id, in C.
            places = [-1 if e is None else zlib.crc32(e.encode()) % self.partitions for e in found]
            self.keys = pa.concat_arrays([self.keys, pa.array(new, pa.string())])
            self.ids = pa.concat_arrays(
                [self.ids, pa.array([_MISSING if e is None else e for e in found], pa.string())]
            )
            offset = len(self.places)
            self.places = np.concatenate([self.places, np.array(places, np.int64)])
            # Only the rows of new keys are looked up again, among the new keys alone.
            again = pc.index_in(keys, value_set=pa.array(new, pa.string()))
            at = pc.if_else(at.is_null(), pc.add(again, offset), at)
        return self.ids.take(at), self.places[at.to_numpy(zero_copy_only=False)]

    def _one(self, key: str) -> str | None:
        source, sep, rest = key.partition(":")
        if sep and source in self.project.config.sources:
            try:
                return self.service.entities.find(self.entity_type, source, rest)
            except FabricError:
                return None
        return self.project.catalog.alias_target(self.entity_type, key)


@dataclass(frozen=True)
class _Job:
    """One partition of spine rows to compute: ``index, entity_id, time`` in a file."""

    config: Path
    view: str
    role: str | None
    rows: Path
    results: Path
    partitions: int


def _feature_schema(view: FeatureView) -> pa.Schema:
    return pa.schema(
        [
            pa.field("index", pa.int64()),
            pa.field("found", pa.bool_()),
            pa.field("existed", pa.bool_()),
            *(pa.field(f.name, ARROW_TYPES[f.type]) for f in view.features),
        ]
    )


#: Per worker process: the project its jobs read (opened once, not once per partition).
_projects: dict[Path, Project] = {}


def _open_project(config: Path) -> None:
    """Open the project in a worker as it starts, while the parent reads the spine."""
    if config not in _projects:
        # The system allocator: Arrow's default (mimalloc) keeps what each partition freed.
        # With the system one an exporting process peaks lower, at the same speed
        # (benchmarks/README.md, "Export allocator").
        pa.set_memory_pool(pa.system_memory_pool())
        _projects[config] = Project.open(config)


def _compute_partition(job: _Job) -> tuple[int, int]:
    """Compute a partition in a worker process (the project opened once per process)."""
    _open_project(job.config)
    return _compute_with(_projects[job.config], job)


def _compute_with(project: Project, job: _Job) -> tuple[int, int]:
    """Compute a partition's rows and write them sorted by spine index.

    Returns (rows, entities).
    """
    service = FeatureService(project)
    view = service.view(job.view)
    policy = project.policy_for(job.role)
    contexts = service.contexts(view, policy)
    plan = service.plan(view, policy)
    # A role that does not see a time the view reads in clear is not told when rows were.
    hide_existed = plan.hide_existed
    layout = columns_read(view)
    rows = ipc.open_file(job.rows).read_all()
    ids = rows.column("entity_id").to_pylist()
    numbers: dict[str, int] = {}
    owner = np.fromiter((numbers.setdefault(i, len(numbers)) for i in ids), np.int64, len(ids))
    entities = list(numbers)
    times = rows.column("time").to_numpy()
    index = rows.column("index").to_numpy()
    # Rows of each chunk of entities together, to hold only that chunk's entities' rows.
    chunk_of = owner // _CHUNK_ENTITIES
    order = np.argsort(chunk_of, kind="stable")
    bounds = np.searchsorted(chunk_of[order], np.arange(-(-len(entities) // _CHUNK_ENTITIES) + 1))
    parts: list[pa.Table] = []
    schema = _feature_schema(view)
    for begin, end in itertools.pairwise(bounds):
        if begin == end:
            continue
        picked = order[begin:end]
        first = int(owner[picked[0]]) // _CHUNK_ENTITIES * _CHUNK_ENTITIES
        chunk = entities[first : first + _CHUNK_ENTITIES]
        stored = [e for e in chunk if e != _MISSING]
        read = iter(service.entities.stored_rows(view.entity_type, stored, layout))
        tables = [[] if e == _MISSING else next(read) for e in chunk]
        done = compute_many(view, tables, owner[picked] - first, times[picked])
        entity_of = [chunk[o] for o in (owner[picked] - first).tolist()]
        mask_columns(plan, entity_of, done.columns, contexts)
        found = np.fromiter((e != _MISSING for e in entity_of), np.bool_, len(entity_of))
        parts.append(
            pa.table(
                {
                    "index": pa.array(index[picked], pa.int64()),
                    "found": pa.array(found),
                    "existed": pa.nulls(len(entity_of), pa.bool_())
                    if hide_existed
                    else pa.array(done.existed),
                    **{name: column.arrow() for name, column in done.columns.items()},
                }
            )
        )
    table = pa.concat_tables(parts, promote_options="permissive") if parts else schema.empty_table()
    table = table.sort_by("index")
    with ipc.new_file(job.results, table.schema) as writer:
        # The merge holds one chunk of every partition at a time: chunks a few times what a
        # partition gives each batch of the spine keep that near a few batches.
        writer.write_table(table, max_chunksize=max(1024, 4 * _BATCH // job.partitions))
    return len(ids), len(entities) - (_MISSING in numbers)


def export_view(
    project: Project,
    view_name: str,
    out: Location,
    *,
    spine: Location | None = None,
    fmt: str | None = None,
    role: str | None = None,
    workers: int = 1,
    progress: Progress | None = None,
    limits: SpineLimits | None = None,
    budget: int | None = None,
) -> ExportReport:
    """Export ``view_name`` over ``spine`` (None: every entity, as of now) to ``out``.

    Three streaming passes, so memory holds batches and one partition per worker, never the
    spine: the spine's keys are resolved and its rows sent to partition files by entity;
    each partition is computed (in ``workers`` processes) and written sorted by spine row;
    the partitions are merged back in spine order next to the spine's own columns.

    ``out`` and ``spine`` may be objects on S3 (:mod:`fabric.objects`): a spine there is
    copied to a private temporary directory first, and the export is written there whole
    and then published, the file first and its manifest after, so each appears complete or
    not at all.

    The spine's columns are checked before anything starts; ``limits`` bound what a spine
    from someone else may decode to (the API's; ``fabric export`` reads the user's own file
    and passes none). The file and its manifest are readable by their owner only, from the
    moment they are created, as are the directories made for them. ``budget`` bounds the
    bytes of the file: the export stops after the first batch that takes it past (the API's
    quota per key; ``fabric export`` has none).

    Raises:
        SpineError: a spine column is missing, doubled or named like one the export
            writes, or a time does not parse (row named).
        SpineTooLargeError: the spine is past one of ``limits``.
        BudgetExceededError: the file passed ``budget`` (and was deleted).
        EntityNotFoundError: unknown view.
        ObjectStorageError: S3 refused or did not answer (nothing is left at ``out``).
    """
    progress = progress or (lambda stage, n, total: None)
    started = datetime.now(UTC)
    service = FeatureService(project)
    view = service.view(view_name)
    policy = project.policy_for(role)
    fmt = export_format(out.name, fmt)
    if project.config.path is None:
        raise SpineError("exports need a project opened from its fabric.yaml")
    if isinstance(out, S3Url):
        check_reachable(out)  # before the work, not after it
    if isinstance(spine, S3Url) and object_size(spine) is None:
        raise SpineError(f"{spine}: spine file not found")
    with tempfile.TemporaryDirectory(prefix="fabric-export-") as tmp:
        work = Path(tmp)
        spine_file = spine if not isinstance(spine, S3Url) else fetch(spine, work)
        # An export bound for S3 is written here whole, then published.
        file = out if isinstance(out, Path) else work / "out" / out.name
        total, entities, not_found, schema = _export(
            project,
            service,
            view,
            file,
            fmt,
            spine_file,
            str(spine),
            role,
            workers,
            progress,
            limits,
            budget,
            started,
            work,
        )
        finished = datetime.now(UTC)
        last_run = project.catalog.last_succeeded_run()
        manifest_doc = {
            "view": view.name,
            "view_version": view.version,
            "feature_definitions_sha256": view.definition_hash,
            "rules_version": project.rules_version(),
            "role": role or project.config.default_role,
            "policy": policy.name,
            "store_state": {
                "sync_run": None if last_run is None else last_run.id,
                "entities": project.catalog.count(view.entity_type),
            },
            "out": str(out),
            "spine": None if spine is None else str(spine),
            "spine_sha256": None if spine_file is None else _sha256(spine_file),
            "rows": total,
            "entities": entities,
            "keys_not_found": not_found,
            "format": fmt,
            "workers": workers,
            "schema": {field.name: str(field.type) for field in schema},
            "fabric_version": __version__,
            "started_at": started.isoformat(),
            "finished_at": finished.isoformat(),
        }
        manifest = out.with_name(out.name + ".manifest.json")
        manifest_file = file.with_name(file.name + ".manifest.json")
        write_private(manifest_file, json.dumps(manifest_doc, indent=2).encode())
        if isinstance(out, S3Url) and isinstance(manifest, S3Url):
            progress("export: uploading", 0, None)
            publish(file, out)
            publish(manifest_file, manifest)
    return ExportReport(
        out, manifest, total, entities, not_found, (finished - started).total_seconds()
    )


def _export(
    project: Project,
    service: FeatureService,
    view: FeatureView,
    out: Path,
    fmt: str,
    spine: Path | None,
    spine_name: str,
    role: str | None,
    workers: int,
    progress: Progress,
    limits: SpineLimits | None,
    budget: int | None,
    started: datetime,
    work: Path,
) -> tuple[int, int, int, pa.Schema]:
    """The three passes of :func:`export_view`, writing the local file ``out`` (partition
    files in ``work``, the export's temporary directory): its rows, entities found, keys not
    found, and the schema written."""
    now = started.replace(tzinfo=None, microsecond=0).isoformat()
    features = [f.name for f in view.features]
    # The spine's rows as its check counted them (None: not counted without limits).
    counted = (
        None
        if spine is None
        else check_spine(spine, limits, reserved=features, name=spine_name).rows
    )

    def batches() -> Iterator[pa.RecordBatch]:
        if spine is not None:
            yield from spine_batches(spine, _BATCH, limits, features)
            return
        ids = sorted(project.catalog.entities(view.entity_type))
        for begin in range(0, len(ids), _BATCH):
            chunk = ids[begin : begin + _BATCH]
            yield pa.record_batch({"entity_id": chunk, "event_timestamp": [now] * len(chunk)})

    if spine is None:
        estimate = project.catalog.count(view.entity_type)
    else:
        estimate = counted if counted is not None else estimated_rows(spine)
    partitions = min(_MAX_PARTITIONS, max(4 * workers, math.ceil(estimate / _PARTITION_ROWS)))
    assert project.config.path is not None  # checked by export_view
    with contextlib.ExitStack() as stack:
        executor = None
        if workers > 1:
            # Workers with the project open, forked from a server that imported fabric once
            # (spawning each paid for all of fabric's imports, on the cores reading the
            # spine: benchmarks/README.md, "Export workers"). They start now, while the
            # spine is read.
            executor = stack.enter_context(
                LocalExecutor(
                    workers,
                    preload=[__name__],
                    initializer=_open_project,
                    initargs=(project.config.path,),
                )
            )
            executor.warm_up()
        total, not_found = _place(
            project, service, view, batches(), work, partitions, spine, progress, estimate
        )
        jobs = [
            _Job(
                project.config.path,
                view.name,
                role,
                work / f"rows-{p}.arrow",
                work / f"results-{p}.arrow",
                partitions,
            )
            for p in [*range(partitions), "missing"]
            if (work / f"rows-{p}.arrow").exists()
        ]
        entities = 0
        done: Iterable[tuple[int, int]]
        if executor is not None and len(jobs) > 1:
            done = executor.start(_compute_partition, jobs, ordered=False)
        else:
            done = (_compute_with(project, job) for job in jobs)
        for count, found in done:
            entities += found
            progress("export: computing features", count, total)
        schema = _write(
            batches(), [j.results for j in jobs], view, out, fmt, progress, total, budget
        )
    return total, entities, not_found, schema


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
    progress: Progress,
    estimate: int,
) -> tuple[int, int]:
    """Pass one: resolve keys, check times, send rows to partition files by entity.

    Returns (rows, rows whose key no entity holds).
    """
    writers: dict[int, ipc.RecordBatchFileWriter] = {}
    resolver = _Resolver(project, service, view.entity_type, partitions)
    index = not_found = 0
    try:
        for batch in batches:
            count = batch.num_rows
            when = _times(batch.column("event_timestamp"), spine, index)
            keys = pc.cast(batch.column("entity_id"), pa.string())
            if isinstance(keys, pa.ChunkedArray):
                keys = keys.combine_chunks()
            entity_ids, places = resolver.batch(keys)
            not_found += int(np.count_nonzero(places < 0))
            rows = pa.table(
                {
                    "index": pa.array(np.arange(index, index + count, dtype=np.int64)),
                    "entity_id": entity_ids,
                    "time": when,
                },
                schema=_ROWS,
            )
            order = np.argsort(places, kind="stable")
            sorted_places = places[order]
            for place in np.unique(sorted_places).tolist():
                begin, end = np.searchsorted(sorted_places, [place, place + 1])
                writer = writers.get(place)
                if writer is None:
                    name = "missing" if place < 0 else str(place)
                    writer = writers[place] = ipc.new_file(work / f"rows-{name}.arrow", _ROWS)
                writer.write_table(rows.take(pa.array(order[begin:end])))
            index += count
            progress("export: reading spine", count, max(estimate, index))
    finally:
        for writer in writers.values():
            writer.close()
    return index, not_found


class _Merge:
    """The partitions' result files (each sorted by spine index) read back in spine order."""

    def __init__(self, results: Sequence[Path]) -> None:
        self.readers = [ipc.open_file(p) for p in results]
        self.next = [0] * len(results)
        self.pending: list[pa.Table | None] = [None] * len(results)

    def take(self, start: int, end: int) -> pa.Table:
        """The result rows of indices ``start`` (the first not taken yet) to ``end``, in
        index order."""
        pieces = []
        for at, reader in enumerate(self.readers):
            while True:
                table = self.pending[at]
                if table is None or table.num_rows == 0:
                    if self.next[at] >= reader.num_record_batches:
                        break
                    table = pa.Table.from_batches([reader.get_batch(self.next[at])])
                    self.next[at] += 1
                index = table.column("index").to_numpy()
                cut = int(np.searchsorted(index, end, "left"))
                pieces.append(table.slice(0, cut))
                self.pending[at] = table.slice(cut)
                if cut < table.num_rows:
                    break
        merged = pa.concat_tables(pieces, promote_options="permissive")
        # Every index below ``end`` not taken before is here once: each row's place is its
        # index less the first, so the rows are put in order without a sort.
        index = merged.column("index").to_numpy()
        order = np.empty(len(index), np.int64)
        order[index - start] = np.arange(len(index))
        return merged.take(pa.array(order))


def _write(
    batches: Iterator[pa.RecordBatch],
    results: Sequence[Path],
    view: FeatureView,
    out: Path,
    fmt: str,
    progress: Progress,
    total: int,
    budget: int | None,
) -> pa.Schema:
    """Pass three: the spine's columns and the features, in spine order, to ``out``.

    Written under a temporary name and renamed when complete; past ``budget`` bytes, stopped
    and deleted. Returns the schema written.
    """
    merge = _Merge(results)
    fd, tmp = private_temp(out)
    parquet: pq.ParquetWriter | None = None
    csv_writer: pcsv.CSVWriter | None = None
    schema: pa.Schema | None = None
    try:
        # The writers close before the file, when it fails too: one left open would write
        # to the closed file when collected.
        with os.fdopen(fd, "wb") as handle, contextlib.ExitStack() as writers:
            expected = 0
            for batch in batches:
                features = merge.take(expected, expected + batch.num_rows)
                # Every spine row comes back exactly once, in order: labels must never meet
                # another row's features.
                index = features.column("index").to_numpy()
                if not np.array_equal(index, np.arange(expected, expected + batch.num_rows)):
                    raise FabricError("internal error: exported rows out of spine order")
                expected += batch.num_rows
                table = pa.Table.from_batches([batch])
                for name in features.column_names[1:]:
                    table = table.append_column(name, features.column(name))
                if schema is None:
                    schema = table.schema
                    if fmt == "parquet":
                        # zstd without dictionary pages: features and times rarely repeat,
                        # and trying dictionaries first made the file larger and the write
                        # slower (benchmarks/README.md, "Parquet dictionaries").
                        parquet = writers.enter_context(
                            pq.ParquetWriter(
                                handle, schema, compression="zstd", use_dictionary=False
                            )
                        )
                    elif fmt == "csv":
                        csv_writer = writers.enter_context(pcsv.CSVWriter(handle, schema))
                table = table.cast(schema)
                if parquet is not None:
                    parquet.write_table(table, row_group_size=_BATCH)
                elif csv_writer is not None:
                    csv_writer.write_table(table)
                else:
                    lines = (
                        json.dumps(r, ensure_ascii=False, default=str) for r in table.to_pylist()
                    )
                    handle.write("".join(line + "\n" for line in lines).encode())
                # Each batch is in the file once written (a Parquet row group each): its
                # position is the file's size.
                if budget is not None and handle.tell() > budget:
                    raise BudgetExceededError(out.name, handle.tell(), budget)
                progress("export: writing", batch.num_rows, total)
        if schema is None:
            raise SpineError("the spine has no rows")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return schema
