"""Benchmark the entity store: writes, reads and bytes on disk, each against plain SQLite.

Usage: ``python benchmarks/store_bench.py [--customers N] [--repeat R] [--reads K]``

Set-up (not timed): a demo project of N customers (default 10,000) is generated and synced, so
the entities are real ones: every table, lineage and ``_meta``, compressed with the type's
dictionary and encrypted. Then, with a baseline measured in the same run (the machine is
shared and noisy: compare ratios, quote medians):

  store_write      put_many of the prebuilt entities into a fresh store, a batch of
                   ``store.batch_size`` per call, against the same rows (every table of every
                   entity, without lineage) inserted into one plain SQLite file with an
                   ``entity_id`` column and index, the same number of entities per
                   transaction, the same WAL settings. Target: at least 0.5x the plain rate.
  store_read       one entity: get + decrypt + decompress + deserialize + read every row, K
                   random entities, p50 and p99 (targets: p50 <= 200 us, p99 <= 1 ms), against
                   reading the same entity's rows from the plain file (one read transaction,
                   one query per table). Also the whole lookup as the API runs it (masking for
                   the clear policy), cold and from the read cache.
  store_threads    reads/s with 1 and with 2 threads (each its own connections and reader).
  store_bytes      shard files at rest per entity against the plain file at rest per entity.
                   Target: at most 1.5x.

Prints one JSON object per line on stdout; progress on stderr.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Timings, emit, log, rate, sqlite_bytes, synced_demo

from fabric.project import Project
from fabric.services.entities import EntityService
from fabric.store.base import StoredBlob
from fabric.store.codec import BlobCodec
from fabric.store.local import LocalShardStore
from fabric.store.microdb import EntitySchema, MicroDbReader
from fabric.store.sqlite import apsw, open_database, quote_ident

ENTITY_TYPE = "customer"


@dataclass(frozen=True)
class Entity:
    """One prebuilt entity: its stored blob and its rows per table (for the baseline)."""

    blob: StoredBlob
    rows: dict[str, list[tuple[Any, ...]]]


def prebuilt(project: Project) -> tuple[list[Entity], EntitySchema]:
    """Every stored entity of the synced project, with its decoded rows."""
    schema = project.schema(ENTITY_TYPE)
    layout = {t.name: list(t.column_names) for t in schema.tables}
    reader = MicroDbReader()
    found = []
    for stored in project.store.scan(ENTITY_TYPE):
        image = project.codec.decode(stored.blob, ENTITY_TYPE, stored.entity_id, stored.version)
        rows, _ = reader.contents(image, layout)
        found.append(
            Entity(StoredBlob(ENTITY_TYPE, stored.entity_id, stored.version, stored.blob), rows)
        )
    return found, schema


def at_rest(files: Sequence[Path]) -> int:
    """Bytes of SQLite files after their connections closed (WAL checkpointed away)."""
    return sum(sum(sqlite_bytes(f)) for f in files)


# -- writes ----------------------------------------------------------------------------------


def write_store(entities: Sequence[Entity], directory: Path, shards: int, batch: int) -> float:
    """Seconds to put every blob into a fresh store, ``batch`` entities per call."""
    store = LocalShardStore(directory, shards)
    try:
        started = time.perf_counter()
        for start in range(0, len(entities), batch):
            store.put_many([e.blob for e in entities[start : start + batch]])
        return time.perf_counter() - started
    finally:
        store.close()


def plain_schema(conn: apsw.Connection, schema: EntitySchema) -> dict[str, str]:
    """Create the baseline's tables (an ``entity_id`` column and index each); their INSERTs."""
    inserts = {}
    for table in schema.tables:
        name = quote_ident(table.name)
        cols = ", ".join(f"{quote_ident(c.name)} {c.sql_type}" for c in table.columns)
        conn.execute(f"CREATE TABLE {name} (entity_id TEXT NOT NULL, {cols})")
        conn.execute(f"CREATE INDEX {quote_ident(table.name + '_entity')} ON {name} (entity_id)")
        inserts[table.name] = (
            f"INSERT INTO {name} VALUES (?, {', '.join('?' * len(table.columns))})"
        )
    return inserts


def write_plain(entities: Sequence[Entity], schema: EntitySchema, path: Path, batch: int) -> float:
    """Seconds to insert the same rows into one plain SQLite file, ``batch`` entities per
    transaction."""
    conn = open_database(path)
    try:
        with conn:
            inserts = plain_schema(conn, schema)
        started = time.perf_counter()
        for start in range(0, len(entities), batch):
            with conn:
                for entity in entities[start : start + batch]:
                    eid = entity.blob.entity_id
                    for table, rows in entity.rows.items():
                        if rows:
                            conn.executemany(inserts[table], [(eid, *row) for row in rows])
        return time.perf_counter() - started
    finally:
        conn.close()


# -- reads -----------------------------------------------------------------------------------


def percentiles(samples: Sequence[float]) -> dict[str, float]:
    """p50 and p99 in microseconds."""
    ordered = sorted(samples)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e6

    return {"p50_us": at(0.50), "p99_us": at(0.99), "mean_us": statistics.mean(ordered) * 1e6}


def store_reader(project: Project, directory: Path, shards: int) -> Callable[[str], int]:
    """get + decode + read every row of one entity; returns the rows read."""
    store = LocalShardStore(directory, shards)
    codec: BlobCodec = project.codec
    reader = MicroDbReader()

    def read(entity_id: str) -> int:
        stored = store.get(ENTITY_TYPE, entity_id)
        assert stored is not None
        image = codec.decode(stored.blob, ENTITY_TYPE, entity_id, stored.version)
        _, tables = reader.read_tables(image)
        return sum(len(rows) for rows in tables.values())

    return read


def plain_reader(path: Path, schema: EntitySchema) -> Callable[[str], int]:
    """The same entity's rows from the plain file, in one read transaction."""
    conn = open_database(path, readonly=True)
    queries = [
        (t.name, list(t.column_names), f"SELECT * FROM {quote_ident(t.name)} WHERE entity_id = ?")
        for t in schema.tables
    ]

    def read(entity_id: str) -> int:
        count = 0
        conn.execute("BEGIN")
        try:
            for _, columns, sql in queries:
                rows = [
                    dict(zip(["entity_id", *columns], r, strict=True))
                    for r in conn.execute(sql, (entity_id,))
                ]
                count += len(rows)
        finally:
            conn.execute("COMMIT")
        return count

    return read


def latencies(read: Callable[[str], int], ids: Sequence[str]) -> list[float]:
    out = []
    for entity_id in ids:
        started = time.perf_counter()
        read(entity_id)
        out.append(time.perf_counter() - started)
    return out


def threaded_rate(
    make: Callable[[], Callable[[str], int]], ids: Sequence[str], threads: int
) -> float:
    """Reads per second of ``threads`` threads, each reading ``ids`` with its own reader."""
    readers = [make() for _ in range(threads)]
    barrier = threading.Barrier(threads + 1)

    def work(read: Callable[[str], int]) -> None:
        barrier.wait()
        for entity_id in ids:
            read(entity_id)

    workers = [threading.Thread(target=work, args=(r,)) for r in readers]
    for worker in workers:
        worker.start()
    barrier.wait()
    started = time.perf_counter()
    for worker in workers:
        worker.join()
    return rate(len(ids) * threads, time.perf_counter() - started)


# -- the run ---------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeat", type=int, default=3, help="write runs of each kind")
    parser.add_argument("--reads", type=int, default=5000, help="entities read per latency run")
    parser.add_argument("--workdir", type=Path, default=None, help="keep files here")
    args = parser.parse_args()

    with synced_demo("store", args.customers, args.seed, args.workdir) as (project, root):
        entities, schema = prebuilt(project)
        shards, batch = project.config.store.shards, project.config.store.batch_size
        run(project, entities, schema, shards, batch, root, args)


def run(
    project: Project,
    entities: list[Entity],
    schema: EntitySchema,
    shards: int,
    batch: int,
    root: Path,
    args: argparse.Namespace,
) -> None:
    count = len(entities)
    rows = sum(len(r) for e in entities for r in e.rows.values())
    log(f"{count} entities, {rows} rows; writing {args.repeat} times each way")
    store_t, plain_t, paired = [], [], []
    store_dir, plain_path = root / "store", root / "plain.db"
    for attempt in range(args.repeat):
        for path in (store_dir, plain_path):
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(
                missing_ok=True
            )
        # Alternate which goes first, so a slow spell of the machine hits both alike.
        if attempt % 2:
            p = write_plain(entities, schema, plain_path, batch)
            s = write_store(entities, store_dir, shards, batch)
        else:
            s = write_store(entities, store_dir, shards, batch)
            p = write_plain(entities, schema, plain_path, batch)
        store_t.append(s)
        plain_t.append(p)
        paired.append(p / s)
        log(f"  write {attempt + 1}: store {s:.2f} s, plain {p:.2f} s")
    st, pt = Timings.of(store_t), Timings.of(plain_t)
    emit(
        {
            "what": "store_write",
            "entities": count,
            "rows": rows,
            "batch": batch,
            **st.fields(),
            "entities_per_s": rate(count, st.median),
            "plain_seconds_median": pt.median,
            "plain_entities_per_s": rate(count, pt.median),
            "store_over_plain": pt.median / st.median,
            "store_over_plain_paired_median": statistics.median(paired),
            "target_store_over_plain": 0.5,
        }
    )

    shard_files = sorted(store_dir.glob("shard-*.db"))
    store_bytes, plain_bytes = at_rest(shard_files), at_rest([plain_path])
    blob_bytes = sum(len(e.blob.blob) for e in entities)
    emit(
        {
            "what": "store_bytes",
            "entities": count,
            "blob_bytes_per_entity": blob_bytes / count,
            "file_bytes_per_entity": store_bytes / count,
            "plain_file_bytes_per_entity": plain_bytes / count,
            "store_over_plain": store_bytes / plain_bytes,
            "target_store_over_plain_at_most": 1.5,
            "note": "the store also holds every row's lineage and each entity's _meta",
        }
    )

    ids = [e.blob.entity_id for e in entities]
    sample = random.Random(args.seed).choices(ids, k=args.reads)
    read_store = store_reader(project, store_dir, shards)
    read_plain = plain_reader(plain_path, schema)
    for read in (read_store, read_plain):  # warm the page caches and prepared statements
        latencies(read, sample[:200])
    store_l, plain_l = [], []
    for chunk in range(0, len(sample), 500):  # interleaved, so noise hits both
        store_l += latencies(read_store, sample[chunk : chunk + 500])
        plain_l += latencies(read_plain, sample[chunk : chunk + 500])
    service = EntityService(project)
    cold: list[float] = []
    for entity_id in sample[: min(2000, len(sample))]:
        service._cache.clear()  # the cold path: decode every time
        started = time.perf_counter()
        service.document(ENTITY_TYPE, entity_id, role="steward")
        cold.append(time.perf_counter() - started)
    hot_ids = sample[:100]
    for entity_id in hot_ids:
        service.document(ENTITY_TYPE, entity_id, role="steward")
    hot = latencies(lambda e: len(service.document(ENTITY_TYPE, e, role="steward")), hot_ids * 10)
    store_p, plain_p = percentiles(store_l), percentiles(plain_l)
    emit(
        {
            "what": "store_read",
            "entities_read": len(store_l),
            **{f"get_decode_read_{k}": v for k, v in store_p.items()},
            **{f"plain_{k}": v for k, v in plain_p.items()},
            "p50_over_plain": store_p["p50_us"] / plain_p["p50_us"],
            **{f"lookup_cold_{k}": v for k, v in percentiles(cold).items()},
            **{f"lookup_cached_{k}": v for k, v in percentiles(hot).items()},
            "target_p50_us": 200,
            "target_p99_us": 1000,
        }
    )

    per_thread = sample[: min(3000, len(sample))]
    figures: dict[str, object] = {"what": "store_threads", "reads_per_thread": len(per_thread)}
    for threads in (1, 2):
        figures[f"store_reads_per_s_{threads}_threads"] = threaded_rate(
            lambda: store_reader(project, store_dir, shards), per_thread, threads
        )
        figures[f"plain_reads_per_s_{threads}_threads"] = threaded_rate(
            lambda: plain_reader(plain_path, schema), per_thread, threads
        )
    emit(figures)


if __name__ == "__main__":
    main()
