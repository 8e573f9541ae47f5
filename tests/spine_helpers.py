"""Spines made by tests: a table of keys and labels, and the review's prefix-coded bomb."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq


def spine_table(keys: list[str], **labels: list[object]) -> pa.Table:
    """A spine of these keys, all at one time, with these label columns."""
    return pa.table(
        {"entity_id": keys, "event_timestamp": ["2026-05-01T00:00:00"] * len(keys), **labels}
    )


def prefix_coded_spine(where: Path | BinaryIO, groups: int, rows: int, length: int) -> None:
    """The review's file: one ``length``-byte label repeated over ``groups`` row groups of
    ``rows``, prefix-coded (DELTA_BYTE_ARRAY), without a dictionary: a few kilobytes whose
    size says nothing of what they decode to."""
    table = spine_table(["87df644f1cb5"] * rows, label=["x" * length] * rows)
    with pq.ParquetWriter(
        where,
        table.schema,
        use_dictionary=False,
        column_encoding={"label": "DELTA_BYTE_ARRAY"},
        compression="zstd",
    ) as writer:
        for _ in range(groups):
            writer.write_table(table, row_group_size=rows)
