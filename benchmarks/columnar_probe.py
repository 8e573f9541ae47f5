"""Probe a columnar full sync's first stages against today's row-at-a-time ones, same rows.

Usage: ``python benchmarks/columnar_probe.py --project DIR [--repeat K] [--partitions P]``

Issue 18 asks for a sync that reads sources as Arrow and places rows without per-row Python.
Before rewriting the pipeline, this measures what that buys where today's syncing process
spends most of its time: reading every source row, finding each row's entity (identity rows
by the resolution's result, child rows by their parent's), and spilling rows to their
entity's partition, which the build workers then read back. ``DIR`` is a synced demo project
with SQLite sources (`fabric demo --no-serve --dir DIR --customers 100000`): its catalog holds
the resolution's result (each identity record's entity), so both ways place rows into the
same entities and partitions. Each way, in the same run, ``--repeat`` times:

  rows       today's code: each table read with the project's source reader (batches of
             tuples, values converted to their column types, as a sync reads them), each
             row's entity found in a dict (identity tables: the catalog's source map;
             child tables: the owners of their parent's rows), and spilled with
             ``fabric.sync.spill.Spill`` (pickled, zstd, sealed) to its entity's partition.
  columnar   each table read as an Arrow table by the ADBC SQLite driver, every row's
             entity found by ``pyarrow.compute.index_in`` and ``take`` against the same
             owners, rows sorted by partition, and each table's slice of a partition
             written as Arrow IPC, one record of the same ``Spill``.
  back       what a build worker then does: every partition read back as Python tuples (the
             spill's chunks, or the IPC tables through ``to_pylist``), in one process.

Source keys for the catalog and match values are not part of either: both ways would write
the same keys, and match values are computed in worker processes. What the columnar way does
not do yet, and a real pipeline must: transforms at ingest, the key and watermark checks, and
the same value types as today's reader (SQLite DATETIME columns come back as text, NUMERIC
as double), so that images stay byte for byte the same.

Prints one JSON object per line on stdout (``probe`` per way and stage, medians; ``ratio``);
progress on stderr.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, log

from fabric.project import Project
from fabric.store.base import entity_key, partition_of
from fabric.sync.context import topological
from fabric.sync.report import key_text
from fabric.sync.spill import Spill, read_stream


@dataclass(frozen=True)
class Table:
    """One table of the entity type, as the probe reads it."""

    name: str
    source: str
    source_table: str
    key: str
    parent: str | None
    foreign_key: str | None
    columns: tuple[str, ...]
    path: Path  # the SQLite file


def _tables(project: Project, entity_type: str) -> list[Table]:
    """The entity type's tables, every parent before its children."""
    entity = project.config.entities[entity_type]
    found = []
    for table in topological(project.schema(entity_type)):
        name, spec = table.name, entity.tables[table.name]
        url = getattr(project.source(spec.source), "engine", None)
        url = None if url is None else url.url
        if url is None or url.get_backend_name() != "sqlite" or not url.database:
            raise SystemExit(f"source '{spec.source}' is not a SQLite file: the probe reads SQLite")
        path = Path(url.database)
        found.append(
            Table(
                name,
                spec.source,
                spec.table,
                table.key,
                spec.parent,
                spec.foreign_key,
                tuple(table.source_columns or table.column_names),
                path,
            )
        )
    return found


def _partition_of(entity_type: str, partitions: int) -> Callable[[str], int]:
    return lambda entity_id: partition_of(entity_key(entity_type, entity_id), partitions)


def _finish_and_read_back(
    spill: Spill, partitions: int, rows_in: Callable[[Any], int]
) -> tuple[float, float, int]:
    """Write the spill's buffers out (seconds), then read every partition back as a build
    worker would (seconds, and rows: ``rows_in`` of each record)."""
    began = time.perf_counter()
    spill.finish()
    finish_s = time.perf_counter() - began
    began = time.perf_counter()
    count = 0
    for number in range(partitions):
        for chunk in read_stream(spill.path(str(number)), spill.key, str(number)):
            count += sum(rows_in(record) for record in chunk)
    return finish_s, time.perf_counter() - began, count


def _ipc_rows(data: bytes) -> int:
    """A record of the columnar way (a table's slice of a partition) as Python tuples."""
    piece = ipc.open_stream(pa.py_buffer(data)).read_all()
    return len(list(zip(*(c.to_pylist() for c in piece.columns), strict=True)))


def row_way(
    project: Project, entity_type: str, tables: list[Table], partitions: int, spill_dir: Path
) -> dict[str, float]:
    """Today's way: seconds reading, placing and spilling, and reading back."""
    owners_by_ref = project.catalog.source_map(
        entity_type, [(t.source, t.source_table) for t in tables if t.parent is None]
    )
    owner: dict[tuple[str, str], str] = {}
    by_source = {(t.source, t.source_table): t.name for t in tables}
    for ref, entity_id in owners_by_ref.items():
        owner[(by_source[(ref.source, ref.table)], ref.key)] = entity_id
    place = _partition_of(entity_type, partitions)
    placed: dict[str, str] = {}
    parents = {t.parent for t in tables if t.parent is not None}
    spill = Spill(spill_dir)
    read_s = place_s = 0.0
    try:
        for table in tables:
            reader = project.source(table.source)
            key_at = table.columns.index(table.key)
            fk_at = table.columns.index(table.foreign_key) if table.foreign_key else key_at
            lookup = table.parent or table.name
            began = time.perf_counter()
            batches = iter(reader.read(table.source_table, list(table.columns)))
            while True:
                batch = next(batches, None)
                read_s += time.perf_counter() - began
                if batch is None:
                    break
                began = time.perf_counter()
                for row in batch:
                    found = owner.get((lookup, key_text(row[fk_at])))
                    if found is None:
                        continue
                    if table.name in parents:
                        owner[(table.name, key_text(row[key_at]))] = found
                    stream = placed.get(found)
                    if stream is None:
                        stream = placed[found] = str(place(found))
                    spill.add(stream, (found, table.name, row))
                place_s += time.perf_counter() - began
                began = time.perf_counter()
        finish_s, back_s, count = _finish_and_read_back(spill, partitions, lambda record: 1)
        place_s += finish_s
    finally:
        spill.remove()
    return {"read": read_s, "place_and_spill": place_s, "back": back_s, "rows": count}


def columnar_way(
    project: Project, entity_type: str, tables: list[Table], partitions: int, spill_dir: Path
) -> dict[str, float]:
    """The columnar way: seconds reading, placing and spilling, and reading back."""
    import adbc_driver_sqlite.dbapi as adbc  # the probe's own dependency (see the docstring)

    refs = project.catalog.source_map(
        entity_type, [(t.source, t.source_table) for t in tables if t.parent is None]
    )
    owners: dict[str, pa.Table] = {}
    for table in tables:
        if table.parent is None:
            mine = [
                (r.key, e)
                for r, e in refs.items()
                if (r.source, r.table) == (table.source, table.source_table)
            ]
            owners[table.name] = pa.table(
                {"key": [k for k, _ in mine], "entity": [e for _, e in mine]}
            )
    parents = {t.parent for t in tables if t.parent is not None}
    # The same sealed, compressed partition files as today's way: each record one table's
    # slice of a partition, as Arrow IPC.
    spill = Spill(spill_dir)
    read_s = place_s = 0.0
    try:
        began = time.perf_counter()
        entities = pa.chunked_array([o["entity"] for o in owners.values()]).unique()
        place = _partition_of(entity_type, partitions)
        partition_of_entity = pa.array([place(e) for e in entities.to_pylist()], pa.int32())
        place_s += time.perf_counter() - began
        for table in tables:
            began = time.perf_counter()
            columns = ", ".join(f'"{c}"' for c in table.columns)
            with adbc.connect(str(table.path)) as conn, conn.cursor() as cursor:
                cursor.execute(
                    f'SELECT {columns} FROM "{table.source_table}" ORDER BY "{table.key}"'
                )
                rows = cursor.fetch_arrow_table()
            read_s += time.perf_counter() - began
            began = time.perf_counter()
            lookup = owners[table.parent or table.name]
            joined_on = table.foreign_key or table.key
            found = pc.take(
                lookup["entity"],
                pc.index_in(pc.cast(rows[joined_on], pa.string()), value_set=lookup["key"]),
            )
            rows = rows.append_column("_entity", found).filter(pc.is_valid(found))
            if table.name in parents:
                owners[table.name] = pa.table(
                    {"key": pc.cast(rows[table.key], pa.string()), "entity": rows["_entity"]}
                )
            parts = pc.take(partition_of_entity, pc.index_in(rows["_entity"], value_set=entities))
            order = pc.sort_indices(parts)
            rows, parts = rows.take(order), parts.take(order)
            start = 0
            # Counts come in the order values are first met: partition order, parts sorted.
            for item in pc.value_counts(parts).to_pylist():
                partition, count = int(item["values"]), int(item["counts"])
                piece = rows.slice(start, count)
                start += count
                sink = pa.BufferOutputStream()
                with ipc.new_stream(sink, piece.schema) as writer:
                    writer.write_table(piece)
                spill.add(str(partition), sink.getvalue().to_pybytes())
            place_s += time.perf_counter() - began
        finish_s, back_s, count = _finish_and_read_back(spill, partitions, _ipc_rows)
        place_s += finish_s
    finally:
        spill.remove()
    return {"read": read_s, "place_and_spill": place_s, "back": back_s, "rows": count}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", type=Path, required=True, help="a synced demo project")
    parser.add_argument("--entity-type", default="customer")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--partitions", type=int, default=8)
    args = parser.parse_args(argv)
    config = args.project / "fabric.yaml"
    results: dict[str, list[dict[str, float]]] = {"rows": [], "columnar": []}
    with Project.open(config) as project:
        tables = _tables(project, args.entity_type)
        for round_ in range(args.repeat):
            for way, run in (("rows", row_way), ("columnar", columnar_way)):
                with tempfile.TemporaryDirectory(prefix="fabric-probe-") as spill_dir:
                    found = run(project, args.entity_type, tables, args.partitions, Path(spill_dir))
                results[way].append(found)
                log(f"round {round_ + 1}: {way} {found}")
    medians: dict[str, dict[str, Any]] = {}
    for way, runs in results.items():
        medians[way] = {
            stage: statistics.median(r[stage] for r in runs)
            for stage in ("read", "place_and_spill", "back")
        }
        medians[way]["total"] = sum(medians[way].values())
        emit(
            {
                "what": "probe",
                "way": way,
                "rows": runs[0]["rows"],
                "n": len(runs),
                **{f"{stage}_seconds_median": seconds for stage, seconds in medians[way].items()},
            }
        )
    emit(
        {
            "what": "ratio",
            **{
                f"{stage}_rows_over_columnar": medians["rows"][stage] / medians["columnar"][stage]
                for stage in ("read", "place_and_spill", "back", "total")
            },
        }
    )


if __name__ == "__main__":
    main()
