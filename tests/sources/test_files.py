"""File sources: CSV and Parquet read in batches, typed, checked, and equal to a database sync."""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import gzip
import re
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fabric.config import load_config
from fabric.config.models import CsvConfig, SourceConfig, SourceTableConfig
from fabric.demo import create_demo_project
from fabric.errors import ConfigError, SourceError, SourceUnavailableError
from fabric.project import Project
from fabric.services.entities import EntityService
from fabric.sources import files
from fabric.sources.database import DatabaseSourceReader
from fabric.sources.files import FileSourceReader, infer_csv_type
from fabric.sync import sync_project


def reader_for(directory: Path, **tables: dict[str, Any]) -> FileSourceReader:
    config = SourceConfig.model_validate({"path": str(directory), "tables": tables or {"t": {}}})
    return FileSourceReader("files", config, directory.parent)


def read_all(reader: FileSourceReader, table: str, batch_rows: int = 1000) -> list[tuple[Any, ...]]:
    columns = [c.name for c in reader.describe(table)]
    return [row for batch in reader.read(table, columns, batch_rows) for row in batch]


def write_csv(path: Path, rows: list[list[str]], **fmt: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding=fmt.pop("encoding", "utf-8")) as handle:
        csv.writer(handle, **fmt).writerows(rows)
    return path


def source_error(reader: FileSourceReader, table: str = "t") -> str:
    with pytest.raises(SourceError) as info:
        read_all(reader, table)
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    return message


# -- Parquet ----------------------------------------------------------------------------------


def test_files_parquet_maps_arrow_types_and_converts_values(tmp_path: Path) -> None:
    table = pa.table(
        {
            "id": pa.array([1, 2], pa.int64()),
            "small": pa.array([7, None], pa.int8()),
            "flag": pa.array([True, False]),
            "score": pa.array([0.5, None], pa.float32()),
            "amount": pa.array([decimal.Decimal("799.66"), None], pa.decimal128(12, 2)),
            "name": pa.array(["Ann", None]),
            "seen_at": pa.array(
                [dt.datetime(2026, 2, 1, 5, 25, 44), dt.datetime(2026, 2, 1, 5, 25, 44, 120000)],
                pa.timestamp("us"),
            ),
            "seen_ns": pa.array([1_000_000_000, None], pa.timestamp("ns")),
            "born": pa.array([dt.date(1968, 6, 9), None], pa.date32()),
            "raw": pa.array([b"\x00\x01", None], pa.binary()),
            "tags": pa.array([["a", "b"], None], pa.list_(pa.string())),
            "channel": pa.array(["web", "web"]).dictionary_encode(),
        }
    )
    pq.write_table(table, tmp_path / "t.parquet")
    reader = reader_for(tmp_path)
    described = {c.name: c.sql_type for c in reader.describe("t")}
    assert described == {
        "id": "INTEGER",
        "small": "INTEGER",
        "flag": "INTEGER",
        "score": "REAL",
        "amount": "REAL",
        "name": "TEXT",
        "seen_at": "TEXT",
        "seen_ns": "TEXT",
        "born": "TEXT",
        "raw": "BLOB",
        "tags": "TEXT",
        "channel": "TEXT",
    }
    assert read_all(reader, "t") == [
        (
            1, 7, 1, 0.5, 799.66, "Ann", "2026-02-01T05:25:44", "1970-01-01T00:00:01",
            "1968-06-09", b"\x00\x01", '["a","b"]', "web",
        ),
        (
            2, None, 0, None, None, None, "2026-02-01T05:25:44.120000", None,
            None, None, None, "web",
        ),
    ]  # fmt: skip
    flag = read_all(reader, "t")[0][2]
    assert type(flag) is int  # not bool: SQLite has no booleans


def test_files_parquet_reads_only_the_columns_asked_in_that_order(tmp_path: Path) -> None:
    pq.write_table(pa.table({"a": [1, 2], "id": [10, 20], "b": ["x", "y"]}), tmp_path / "t.parquet")
    reader = reader_for(tmp_path, t={"columns": ["b", "a"]})
    assert [c.name for c in reader.describe("t")] == ["id", "b", "a"]
    batches = list(reader.read("t", ["b", "id"]))
    assert batches == [[("x", 10), ("y", 20)]]


def test_files_parquet_streams_in_batches(tmp_path: Path) -> None:
    pq.write_table(pa.table({"id": list(range(10))}), tmp_path / "t.parquet", row_group_size=4)
    reader = reader_for(tmp_path)
    reader.describe("t")
    batches = list(reader.read("t", ["id"], batch_rows=3))
    assert all(0 < len(b) <= 3 for b in batches) and len(batches) >= 4
    assert [row[0] for b in batches for row in b] == list(range(10))


def test_files_not_parquet_is_one_line_source_error(tmp_path: Path) -> None:
    (tmp_path / "t.parquet").write_text("id,name\n1,Ann\n")
    message = source_error(reader_for(tmp_path))
    assert "table 't' (t.parquet): not a readable Parquet file" in message


def test_files_parquet_missing_columns_named_with_what_is_there(tmp_path: Path) -> None:
    pq.write_table(pa.table({"id": [1], "name": ["Ann"]}), tmp_path / "t.parquet")
    reader = reader_for(tmp_path, t={"columns": ["name", "email"], "watermark": "updated_at"})
    message = source_error(reader)
    assert message.endswith(
        "table 't' (t.parquet) has no column 'email', 'updated_at' (columns: id, name)"
    )
    keyless = reader_for(tmp_path, t={"primary_key": "key"})
    assert "has no column 'key' (columns: id, name)" in source_error(keyless)


# -- CSV --------------------------------------------------------------------------------------


def test_files_csv_infers_types_and_converts_values(tmp_path: Path) -> None:
    header = ["id", "qty", "price", "zip", "phone", "card", "note", "empty", "when"]
    first = ["1", "3", "10", "01234", "+33612345678", "99999999999999999999", 'a, "b"', ""]
    write_csv(
        tmp_path / "t.csv",
        [
            header,
            [*first, "2026-02-01T05:25:44"],
            ["2", "", "2.5", "92930", "0612345678", "4111111111111111", "line\nbreak", "", ""],
            ["3", "-4", "1e3", "", "", "", "", "", "2026-02-02T00:00:00"],
        ],
    )
    reader = reader_for(tmp_path)
    assert {c.name: c.sql_type for c in reader.describe("t")} == {
        "id": "INTEGER",
        "qty": "INTEGER",
        "price": "REAL",
        "zip": "TEXT",  # a leading zero is kept: identifiers are not numbers
        "phone": "TEXT",
        "card": "TEXT",  # beyond 64 bits
        "note": "TEXT",
        "empty": "TEXT",  # nothing to infer from
        "when": "TEXT",  # kept as written: CSV dates are not parsed
    }
    assert read_all(reader, "t") == [
        (1, 3, 10.0, "01234", "+33612345678", "99999999999999999999", 'a, "b"', None,
         "2026-02-01T05:25:44"),
        (2, None, 2.5, "92930", "0612345678", "4111111111111111", "line\nbreak", None, None),
        (3, -4, 1000.0, None, None, None, None, None, "2026-02-02T00:00:00"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([], "TEXT"),
        (["", ""], "TEXT"),
        (["1", "", "-2", "0"], "INTEGER"),
        (["9223372036854775807", "-9223372036854775808"], "INTEGER"),
        (["9223372036854775808"], "TEXT"),  # too wide for SQLite: an identifier
        (["1", "2.5"], "REAL"),
        (["1.0"], "REAL"),
        (["1e3", "-2E-2"], "REAL"),
        (["007"], "TEXT"),
        (["+5"], "TEXT"),
        (["-0.5", "0.25"], "REAL"),
        ([" 5"], "TEXT"),
        (["1_000"], "TEXT"),  # Python's int() accepts it; a CSV reader should not
        (["nan"], "TEXT"),
        (["inf", "-Infinity"], "TEXT"),
        (["1e999"], "TEXT"),  # overflows to infinity
        (["1."], "TEXT"),
        (["٣"], "TEXT"),  # a non-ASCII digit int() would take
        (["1", "x"], "TEXT"),
    ],
)
def test_files_csv_type_inference(values: list[str], expected: str) -> None:
    assert infer_csv_type(values) == expected


def test_files_csv_value_past_the_sample_that_does_not_fit_stops_with_line_and_column(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(files, "INFER_ROWS", 3)
    rows = [["id", "qty"]] + [[str(i), str(i * 2)] for i in range(1, 6)] + [["6", "secret-7"]]
    write_csv(tmp_path / "t.csv", rows)
    reader = reader_for(tmp_path)
    assert [c.sql_type for c in reader.describe("t")] == ["INTEGER", "INTEGER"]
    message = source_error(reader)
    assert "table 't' (t.csv line 7): column 'qty' holds a value that is not an integer" in message
    assert "the first 3 records made it INTEGER" in message
    assert "sources.files.tables.t.csv.types.qty: TEXT" in message
    assert "secret" not in message  # values may be personal data: never in messages


def test_files_csv_types_pin_a_column(tmp_path: Path) -> None:
    write_csv(tmp_path / "t.csv", [["id", "zip", "qty"], ["1", "92930", "3"], ["2", "10115", "x"]])
    reader = reader_for(tmp_path, t={"csv": {"types": {"zip": "TEXT", "qty": "INTEGER"}}})
    assert [c.sql_type for c in reader.describe("t")] == ["INTEGER", "TEXT", "INTEGER"]
    message = source_error(reader)
    assert "(t.csv line 3): column 'qty'" in message and "csv.types declares it INTEGER" in message
    unknown = reader_for(tmp_path, t={"csv": {"types": {"zipp": "TEXT"}}})
    assert "csv.types names no column 'zipp' (columns: id, zip, qty)" in source_error(unknown)


def test_files_csv_delimiter_encoding_gzip_and_bom(tmp_path: Path) -> None:
    write_csv(
        tmp_path / "semi.csv", [["id", "city"], ["1", "Zürich"]], delimiter=";", encoding="latin-1"
    )
    with gzip.open(tmp_path / "g.csv.gz", "wt", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows([["id", "v"], ["1", "2.5"]])
    (tmp_path / "bom.csv").write_bytes("id,name\r\n1,Åsa\r\n".encode("utf-8-sig"))
    reader = reader_for(
        tmp_path,
        semi={"file": "semi.csv", "csv": {"delimiter": ";", "encoding": "latin-1"}},
        g={},
        bom={},
    )
    assert read_all(reader, "semi") == [(1, "Zürich")]
    assert read_all(reader, "g") == [(1, 2.5)]
    assert [c.name for c in reader.describe("bom")] == ["id", "name"]
    assert read_all(reader, "bom") == [(1, "Åsa")]


def test_files_csv_streams_in_batches_before_reaching_a_bad_line(tmp_path: Path) -> None:
    rows = [["id", "name"]] + [[str(i), f"n{i}"] for i in range(10)]
    path = write_csv(tmp_path / "t.csv", rows)
    reader = reader_for(tmp_path)
    reader.describe("t")
    assert [len(b) for b in reader.read("t", ["id", "name"], batch_rows=3)] == [3, 3, 3, 1]
    with path.open("a") as handle:
        handle.write('10,"unterminated\n')
    batches = reader.read("t", ["id", "name"], batch_rows=3)
    assert next(batches) == [(0, "n0"), (1, "n1"), (2, "n2")]  # rows arrive before the end
    with pytest.raises(SourceError, match=r"t\.csv line 12\): malformed CSV"):
        list(batches)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('id,name\n1,Ann\n2,"Bo"b\n', r"\(t\.csv line 3\): malformed CSV: ',' expected after '\"'"),
        ("id,name\n1,Ann\n2,Bob,extra\n", r"\(t\.csv line 3\): 3 fields, but the header has 2"),
        ('id,name\n1,"multi\nline"\n2\n', r"\(t\.csv line 4\): 1 fields, but the header has 2"),
        ("", r"\(t\.csv\): the file is empty; a CSV source needs a header row"),
        ("id,name,id\n1,a,1\n", r"\(t\.csv line 1\): the header names column 'id' twice"),
        ("id,,x\n1,a,1\n", r"\(t\.csv line 1\): header field 2 is empty"),
    ],
)
def test_files_malformed_csv_is_one_line_error_naming_the_line(
    tmp_path: Path, text: str, expected: str
) -> None:
    (tmp_path / "t.csv").write_text(text, newline="")
    assert re.search(expected, source_error(reader_for(tmp_path)))


def test_files_csv_wrong_encoding_names_the_setting(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_bytes("id,city\n1,Bern\n2,Zürich\n".encode("latin-1"))
    message = source_error(reader_for(tmp_path))
    assert "(t.csv line 3): not valid utf-8 text" in message
    assert "sources.files.tables.t.csv.encoding" in message


def test_files_corrupt_gzip_is_source_error(tmp_path: Path) -> None:
    (tmp_path / "t.csv.gz").write_bytes(b"not gzip at all")
    assert "(t.csv.gz): cannot read: Not a gzipped file" in source_error(reader_for(tmp_path))


def test_files_csv_options_on_parquet_file_are_refused(tmp_path: Path) -> None:
    pq.write_table(pa.table({"id": [1]}), tmp_path / "t.parquet")
    reader = reader_for(tmp_path, t={"csv": {"delimiter": ";"}})
    assert "CSV options given for a Parquet file" in source_error(reader)


# -- finding files ----------------------------------------------------------------------------


def test_files_default_file_prefers_parquet_then_csv(tmp_path: Path) -> None:
    write_csv(tmp_path / "t.csv", [["id", "src"], ["1", "csv"]])
    reader = reader_for(tmp_path)
    assert read_all(reader, "t") == [(1, "csv")]
    pq.write_table(pa.table({"id": [1], "src": ["parquet"]}), tmp_path / "t.parquet")
    reader = reader_for(tmp_path)
    assert reader.table_file("t") == tmp_path / "t.parquet"
    assert read_all(reader, "t") == [(1, "parquet")]


def test_files_file_may_be_a_path_inside_the_directory(tmp_path: Path) -> None:
    write_csv(tmp_path / "exports" / "2026" / "people.csv", [["id"], ["5"]])
    reader = reader_for(tmp_path, t={"file": "exports/2026/people.csv"})
    assert read_all(reader, "t") == [(5,)]


def test_files_missing_file_names_it_and_what_is_there(tmp_path: Path) -> None:
    write_csv(tmp_path / "customers.csv", [["id"]])
    write_csv(tmp_path / "orders.csv", [["id"]])
    with pytest.raises(SourceUnavailableError) as info:
        reader_for(tmp_path, custmers={}).describe("custmers")
    assert str(info.value) == (
        f"source 'files' ({tmp_path}): table 'custmers': no file custmers.parquet, "
        "custmers.csv, custmers.csv.gz (files there: customers.csv, orders.csv; name another "
        "with sources.files.tables.custmers.file)"
    )
    with pytest.raises(SourceUnavailableError, match=r"file people\.csv does not exist \(files "):
        reader_for(tmp_path, t={"file": "people.csv"}).describe("t")


def test_files_missing_directory_is_unavailable(tmp_path: Path) -> None:
    reader = reader_for(tmp_path / "nowhere")
    with pytest.raises(SourceUnavailableError, match=r"directory .*nowhere does not exist"):
        reader.describe("t")


def test_files_are_only_read(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", [["id", "v"], ["1", "2"]])
    pq.write_table(pa.table({"id": [1]}), tmp_path / "p.parquet")
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.iterdir()}
    path.chmod(0o444)
    (tmp_path / "p.parquet").chmod(0o444)
    reader = reader_for(tmp_path, t={}, p={})
    assert read_all(reader, "t") == [(1, 2)] and read_all(reader, "p") == [(1,)]
    reader.close()
    after = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.iterdir()}
    assert after == before


# -- config -----------------------------------------------------------------------------------

CONFIG = """\
sources:
  files:
{source}
entities:
  customer:
    match: match.yaml
    tables:
      people: {{source: files, table: people}}
rules:
  masking: masking.yaml
"""


def config_error(tmp_path: Path, source: str) -> str:
    path = tmp_path / "fabric.yaml"
    path.write_text(CONFIG.format(source=source))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return str(info.value)


def test_files_config_accepts_path_file_and_csv_options(tmp_path: Path) -> None:
    path = tmp_path / "fabric.yaml"
    path.write_text(
        CONFIG.format(
            source="    path: exports\n    tables:\n"
            "      people: {file: people.csv, csv: {delimiter: ';', types: {zip: TEXT}}}"
        )
    )
    config = load_config(path)
    source = config.sources["files"]
    assert source.is_files and config.resolve(source.path or Path()) == tmp_path / "exports"
    table = source.tables["people"]
    assert table.csv == CsvConfig(delimiter=";", encoding="utf-8", types={"zip": "TEXT"})
    assert SourceTableConfig.file_format(Path("a.CSV.gz")) == "csv"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            "    path: exports\n    url: sqlite:///x.db\n    tables: {people: {}}",
            "fabric.yaml:2 sources.files: give exactly one of 'url', 'url_env' or 'path'",
        ),
        (
            "    path: exports\n    tables:\n      people: {name: persons}",
            "fabric.yaml:5 sources.files.tables.people.name: a file source has no database "
            "tables or schemas; name the table's file with 'file' (default: people.parquet, "
            "else people.csv)",
        ),
        (
            "    path: exports\n    tables:\n      people: {schema: crm}",
            "fabric.yaml:5 sources.files.tables.people.schema: a file source has no database",
        ),
        (
            "    url: sqlite:///x.db\n    tables:\n      people: {file: people.csv}",
            "sources.files.tables.people.file: only for file sources (sources with 'path')",
        ),
        (
            "    path: exports\n    tables:\n      people: {file: people.xlsx}",
            "sources.files.tables.people.file: unsupported file type (use .csv, .csv.gz, .parquet)",
        ),
        (
            "    path: exports\n    tables:\n      people: {file: ../people.csv}",
            "sources.files.tables.people.file: must be a path inside the source's directory",
        ),
        (
            "    path: exports\n    tables:\n      people: {file: p.parquet, csv: {delimiter: x}}",
            "sources.files.tables.people.csv: CSV options for a file that is not CSV",
        ),
        (
            "    path: exports\n    tables:\n      people: {csv: {delimiter: ';;'}}",
            "sources.files.tables.people.csv.delimiter: string should have at most 1 character",
        ),
        (
            "    path: exports\n    tables:\n      people: {csv: {encoding: klingon}}",
            "sources.files.tables.people.csv.encoding: unknown text encoding",
        ),
    ],
)
def test_files_config_problems_name_the_path(tmp_path: Path, source: str, expected: str) -> None:
    assert expected in config_error(tmp_path, source)


def test_files_project_picks_the_reader_by_source_kind(tmp_path: Path) -> None:
    path = tmp_path / "fabric.yaml"
    text = CONFIG.format(source="    path: exports\n    tables: {people: {}}")
    text = text.replace(
        "sources:\n", "sources:\n  db:\n    url: sqlite:///x.db\n    tables: {t: {}}\n"
    )
    path.write_text(text)
    with Project.open(path) as project:
        assert isinstance(project.source("files"), FileSourceReader)
        assert project.source("files").shown_url == str(tmp_path / "exports")
        assert project.source("files") is project.source("files")
        with pytest.raises(SourceUnavailableError):  # the SQLite file does not exist
            project.source("db")


# -- end to end -------------------------------------------------------------------------------

#: Demo systems exported to Parquet (typed) and to CSV (text, inferred).
PARQUET_SYSTEMS = ("crm", "billing")
CSV_SYSTEMS = ("shop", "support")


def _arrow_type(declared: str) -> Any:
    declared = declared.upper()
    if declared.startswith("INT"):
        return pa.int64()
    if declared.startswith("NUMERIC"):
        return pa.decimal128(12, 2)
    if declared == "DATETIME":
        return pa.timestamp("us")
    if declared == "DATE":
        return pa.date32()
    return pa.string()


def _parquet_value(value: Any, arrow_type: Any) -> Any:
    if value is None:
        return None
    if pa.types.is_timestamp(arrow_type):
        return dt.datetime.fromisoformat(value)
    if pa.types.is_date32(arrow_type):
        return dt.date.fromisoformat(value)
    if pa.types.is_decimal(arrow_type):
        return decimal.Decimal(str(value)).quantize(decimal.Decimal("0.01"))
    return value


def export_sources(sources: Path, out: Path) -> dict[str, list[str]]:
    """Export the demo's SQLite systems to Parquet and CSV files; return system -> tables.

    Parquet columns get real types (timestamps, dates, decimals) from the SQLite declarations.
    CSV gets what a plain dump writes: SQLite's own text, so date-times are spelt
    ``2024-04-28 23:48:00.000000`` rather than the database reader's ``2024-04-28T23:48:00``.
    """
    tables: dict[str, list[str]] = {}
    for system in (*PARQUET_SYSTEMS, *CSV_SYSTEMS):
        (out / system).mkdir(parents=True)
        with sqlite3.connect(f"file:{sources / (system + '.db')}?mode=ro", uri=True) as conn:
            names = [
                n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            ]
            tables[system] = names
            for name in names:
                info = conn.execute(f"PRAGMA table_info({name})").fetchall()
                columns = [c[1] for c in info]
                rows = conn.execute(f"SELECT * FROM {name} ORDER BY id").fetchall()
                if system in PARQUET_SYSTEMS:
                    types = [_arrow_type(c[2]) for c in info]
                    arrays = [
                        pa.array([_parquet_value(r[i], t) for r in rows], t)
                        for i, t in enumerate(types)
                    ]
                    pq.write_table(
                        pa.table(dict(zip(columns, arrays, strict=True))),
                        out / system / f"{name}.parquet",
                        row_group_size=97,
                    )
                else:
                    # order_items as gzip, under another name, to go through `file:`
                    path = (
                        out / system / (f"{name}.csv" if name != "order_items" else "items.csv.gz")
                    )
                    opener: Any = gzip.open if path.suffix == ".gz" else open
                    with opener(path, "wt", newline="", encoding="utf-8") as handle:
                        writer = csv.writer(handle)
                        writer.writerow(columns)
                        writer.writerows(["" if v is None else v for v in row] for row in rows)
    return tables


def file_sources_block(tables: dict[str, list[str]]) -> str:
    lines = ["sources:"]
    watermarks = {"customers": "updated_at", "accounts": "updated_at"}
    for system, names in tables.items():
        lines += [f"  {system}:", f"    path: files/{system}", "    tables:"]
        for name in names:
            extra = ", file: items.csv.gz" if name == "order_items" else ""
            watermark = watermarks.get(name, "id")
            lines.append(f"      {name}: {{primary_key: id, watermark: {watermark}{extra}}}")
    return "\n".join(lines) + "\n"


def test_files_sync_of_exported_demo_matches_the_database_sync(tmp_path: Path) -> None:
    original = create_demo_project(tmp_path / "db", customers=100, seed=3).directory
    copy = tmp_path / "files"
    shutil.copytree(original, copy)
    tables = export_sources(copy / "sources", copy / "files")
    config = copy / "fabric.yaml"
    text = config.read_text()
    text = re.sub(
        r"(?ms)^sources:\n.*?(?=^\S|^#)", file_sources_block(tables) + "\n", text, count=1
    )
    config.write_text(text)
    shutil.rmtree(copy / "sources")  # nothing may still come from the databases

    with Project.open(original / "fabric.yaml") as db, Project.open(config) as fs:
        assert all(isinstance(fs.source(s), FileSourceReader) for s in tables)
        assert all(isinstance(db.source(s), DatabaseSourceReader) for s in tables)
        db_report = sync_project(db, full=True)
        fs_report = sync_project(fs, full=True)
        assert fs_report.rows_by_table == db_report.rows_by_table
        assert fs_report.created == db_report.created > 50
        assert set(fs.catalog.source_map("customer").items()) == set(
            db.catalog.source_map("customer").items()
        )
        assert fs.catalog.count("customer") == db.catalog.count("customer")
        assert fs.catalog.schemas() == db.catalog.schemas()  # same column names and order

        again = sync_project(fs)
        assert again.created == again.updated == again.deleted == 0

        db_entities, fs_entities = EntityService(db), EntityService(fs)
        rewritten = 0
        for entity_id in sorted(db.catalog.entities("customer"))[:15]:
            expected = db_entities.document("customer", entity_id, role="steward")["tables"]
            got = fs_entities.document("customer", entity_id, role="steward")["tables"]
            # CSV text is kept as written (fabric does not parse dates in CSV): the dump's
            # date-times are SQLite's "2024-04-28 23:48:00.000000", the database reader's
            # "2024-04-28T23:48:00". Parquet timestamps come out exactly like the database's.
            for table in ("shop_orders", "support_tickets"):
                for row in got[table]:
                    for column in ("ordered_at", "opened_at", "closed_at"):
                        if row.get(column) is not None:
                            row[column] = row[column].replace(" ", "T").removesuffix(".000000")
                            rewritten += 1
            assert got == expected
        assert rewritten > 0
