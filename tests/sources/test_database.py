"""SQLAlchemy sources: a full read through the driver's cursor gives what SQLAlchemy gives."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fabric.config.models import SourceConfig
from fabric.errors import SourceError
from fabric.project import Project
from fabric.sources.database import DatabaseSourceReader, _sqlite_datetime


def test_full_sqlite_read_equals_the_sqlalchemy_path(demo_project: Project) -> None:
    for table in demo_project.schema("customer").tables:
        reader = demo_project.source(table.source)
        assert isinstance(reader, DatabaseSourceReader)
        reader.describe(table.source_table)
        columns = table.source_columns or table.column_names
        raw = [row for batch in reader.read(table.source_table, columns) for row in batch]
        # A watermark older than every row: the same rows through SQLAlchemy's own results.
        since = ("id", -1)
        typed = [
            row for batch in reader.read(table.source_table, columns, since=since) for row in batch
        ]
        assert raw == typed, table.name
        assert raw, table.name


def test_sqlite_types_convert_like_sqlalchemy(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, at DATETIME, day DATE, amount NUMERIC, "
            "ok BOOLEAN, note TEXT)"
        )
        conn.execute(
            "INSERT INTO t VALUES (1, '2026-01-05 10:00:00.000000', '2026-01-05', 12, 1, 'x'), "
            "(2, '2026-01-05 10:00:00.250000', NULL, 12.5, 0, NULL)"
        )
    config = SourceConfig.model_validate(
        {"url": f"sqlite:///{path}", "tables": {"t": {"primary_key": "id"}}}
    )
    reader = DatabaseSourceReader("s", config, tmp_path)
    columns = [c.name for c in reader.describe("t")]
    raw = [row for batch in reader.read("t", columns) for row in batch]
    typed = [row for batch in reader.read("t", columns, since=("id", 0)) for row in batch]
    assert (
        raw
        == typed
        == [
            (1, "2026-01-05T10:00:00", "2026-01-05", 12.0, 1, "x"),
            (2, "2026-01-05T10:00:00.250000", None, 12.5, 0, None),
        ]
    )
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE t SET at = 'not a time' WHERE id = 2")
    with pytest.raises(SourceError, match="does not fit its declared column type"):
        list(reader.read("t", columns))
    reader.close()


@settings(max_examples=300)
@given(
    moment=st.datetimes(),
    separator=st.sampled_from([" ", "T"]),
    timespec=st.sampled_from(["seconds", "microseconds", "minutes", "milliseconds"]),
)
def test_sqlite_datetime_text_converts_like_python_formats_it(
    moment: dt.datetime, separator: str, timespec: str
) -> None:
    # The shapes SQLAlchemy and people write; the fast path must agree with the long way.
    text = moment.isoformat(sep=separator, timespec=timespec)
    assert _sqlite_datetime(text) == dt.datetime.fromisoformat(text).isoformat(sep="T")
