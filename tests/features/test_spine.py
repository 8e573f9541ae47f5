"""Spines: their columns checked before anything is read, and what they may decode to bounded.

Limits apply where spines come from other people (the API); ``fabric export`` reads the
user's own file, so it checks the columns but not the limits.
"""

from __future__ import annotations

import gzip
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from spine_helpers import prefix_coded_spine, spine_table

from fabric.cli import main
from fabric.errors import SpineError, SpineTooLargeError
from fabric.features.spine import SpineLimits, check_spine
from fabric.project import Project
from fabric.services.export import export_view

#: Small limits, so the tests' files stay small.
LIMITS = SpineLimits(rows=1_000, decoded_bytes=1 << 20, value_bytes=1024)


@pytest.fixture(scope="module")
def project(demo_dir: Path) -> Iterator[Project]:
    with Project.open(demo_dir / "fabric.yaml") as opened:
        yield opened


def ids(project: Project, count: int) -> list[str]:
    return sorted(project.catalog.entities("customer"))[:count]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_spine_two_entity_id_columns_are_refused_naming_the_column(
    project: Project, tmp_path: Path, fmt: str
) -> None:
    keys = ids(project, 3)
    spine = tmp_path / f"spine.{fmt}"
    if fmt == "csv":
        spine.write_text(
            "entity_id,event_timestamp,entity_id\n"
            + "".join(f"{k},2026-05-01T00:00:00,{k}\n" for k in keys)
        )
    else:
        table = pa.Table.from_arrays(
            [pa.array(keys), pa.array(["2026-05-01T00:00:00"] * 3), pa.array(keys)],
            names=["entity_id", "event_timestamp", "entity_id"],
        )
        pq.write_table(table, spine)
    with pytest.raises(SpineError, match=r"spine\.\w+: the spine has 2 columns named 'entity_id'"):
        export_view(project, "customer_360", tmp_path / "out.parquet", spine=spine)
    assert not (tmp_path / "out.parquet").exists()


def test_spine_columns_named_like_what_the_export_writes_are_refused(
    project: Project, tmp_path: Path
) -> None:
    spine = tmp_path / "spine.parquet"
    labels = {"country": ["x"] * 3, "churned": [1, 0, 1], "order_count_90d": [1, 2, 3]}
    pq.write_table(spine_table(ids(project, 3), **labels), spine)
    with pytest.raises(SpineError) as raised:
        export_view(project, "customer_360", tmp_path / "out.parquet", spine=spine)
    message = str(raised.value)
    assert "'country', 'order_count_90d'" in message and "rename" in message
    assert "churned" not in message  # a label of its own name passes
    # Values are never quoted: only names.
    assert "'x'" not in message


def test_cli_export_refuses_a_duplicate_column_without_a_traceback(
    demo_dir: Path, tmp_path: Path
) -> None:
    spine = tmp_path / "spine.csv"
    spine.write_text("entity_id,event_timestamp,entity_id\ncrm:1,2026-05-01,crm:2\n")
    result = CliRunner().invoke(
        main,
        [
            "export",
            "customer_360",
            "--spine",
            str(spine),
            "--out",
            str(tmp_path / "out.csv"),
            "-c",
            str(demo_dir / "fabric.yaml"),
        ],
    )
    assert result.exit_code == 1
    assert "2 columns named 'entity_id'" in result.output and "Traceback" not in result.output


def test_parquet_limits_are_checked_from_the_metadata(tmp_path: Path) -> None:
    many = tmp_path / "many.parquet"
    pq.write_table(spine_table(["crm:1"] * 1_001), many, compression="zstd")
    assert many.stat().st_size < 4096  # a tiny file...
    with pytest.raises(
        SpineTooLargeError, match=r"1,001 rows, more than api\.exports\.max_spine_rows \(1,000\)"
    ):
        check_spine(many, LIMITS)
    # One huge value: refused from the column chunk's uncompressed size, never decoded.
    huge = tmp_path / "huge.parquet"
    pq.write_table(spine_table(["crm:1"], label=["x" * (4 << 20)]), huge, compression="zstd")
    with pytest.raises(SpineTooLargeError, match=r"api\.exports\.max_spine_decoded_bytes"):
        check_spine(huge, LIMITS)
    big_value = tmp_path / "value.parquet"
    pq.write_table(spine_table(["crm:1"], label=["x" * 2048]), big_value, compression="zstd")
    with pytest.raises(
        SpineTooLargeError,
        match=r"column 'label' holds a value of 2,048 bytes, more than "
        r"api\.exports\.max_spine_value_bytes \(1,024 bytes\)",
    ):
        check_spine(big_value, LIMITS)
    # A value far past the limit is refused from the footer, unread.
    longer = tmp_path / "longer.parquet"
    pq.write_table(spine_table(["crm:1"], label=["x" * 65_536]), longer, compression="zstd")
    with pytest.raises(SpineTooLargeError, match=r"'label' holds a value of more than api\."):
        check_spine(longer, LIMITS)
    ok = tmp_path / "ok.parquet"
    pq.write_table(spine_table(["crm:1"] * 10, label=list(range(10))), ok)
    info = check_spine(ok, LIMITS)
    assert info.rows == 10 and info.columns == ("entity_id", "event_timestamp", "label")


def test_a_dictionary_encoded_bomb_is_refused_without_decoding_it(tmp_path: Path) -> None:
    # One 900-byte value, repeated 5,000 times through a dictionary: 4.5 MB once decoded,
    # a few kilobytes in the file and in its column chunks' sizes. Written without the Arrow
    # schema, so a reader would decode it to plain strings.
    rows = 5_000
    value = pa.DictionaryArray.from_arrays(pa.array([0] * rows, pa.int32()), pa.array(["y" * 900]))
    bomb = tmp_path / "bomb.parquet"
    pq.write_table(
        pa.table(
            {"entity_id": ["crm:1"] * rows, "event_timestamp": ["2026"] * rows, "label": value}
        ),
        bomb,
        compression="zstd",
        store_schema=False,
    )
    chunks = pq.ParquetFile(bomb).metadata.row_group(0)
    assert sum(chunks.column(i).total_uncompressed_size for i in range(3)) < LIMITS.decoded_bytes
    limits = SpineLimits(rows=10_000, decoded_bytes=1 << 20, value_bytes=1024)
    with pytest.raises(SpineTooLargeError, match=r"max_spine_decoded_bytes \(1,048,576\)"):
        check_spine(bomb, limits)


def test_csv_limits_file_size_and_rows(tmp_path: Path) -> None:
    big = tmp_path / "big.csv"
    big.write_text("entity_id,event_timestamp\n" + "crm:1,2026-05-01\n" * 70_000)
    with pytest.raises(SpineTooLargeError, match=r"max_spine_decoded_bytes"):
        check_spine(big, SpineLimits(rows=100_000, decoded_bytes=1 << 20, value_bytes=1024))
    rows = tmp_path / "rows.csv"
    rows.write_text("entity_id,event_timestamp\n" + "crm:1,2026-05-01\n" * 1_001)
    with pytest.raises(SpineTooLargeError, match=r"more than api\.exports\.max_spine_rows"):
        check_spine(rows, LIMITS)
    # Lines are not rows: a quoted value may hold line breaks. Counted exactly when it matters.
    quoted = tmp_path / "quoted.csv"
    quoted.write_text("entity_id,event_timestamp,note\n" + 'crm:1,2026-05-01,"a\nb\nc"\n' * 600)
    assert check_spine(quoted, LIMITS).rows == 600


def test_a_compressed_csv_spine_is_counted_as_it_streams(project: Project, tmp_path: Path) -> None:
    spine = tmp_path / "spine.csv.gz"
    spine.write_bytes(gzip.compress(b"entity_id,event_timestamp\n" + b"crm:1,2026-05-01\n" * 1_001))
    with pytest.raises(SpineTooLargeError, match=r"more than api\.exports\.max_spine_rows"):
        export_view(project, "customer_360", tmp_path / "out.parquet", spine=spine, limits=LIMITS)
    assert not (tmp_path / "out.parquet").exists()


def test_cli_export_files_are_owner_only_from_their_creation(
    demo_dir: Path, tmp_path: Path
) -> None:
    spine = tmp_path / "spine.csv"
    spine.write_text("entity_id,event_timestamp\ncrm:1,2026-06-01T00:00:00\n")
    out = tmp_path / "new" / "deeper" / "train.parquet"
    seen: list[int] = []

    def progress(stage: str, advance: int, total: int | None) -> None:
        # While the data is being written, the temporary file is already private.
        if stage == "export: writing":
            seen.extend(stat.S_IMODE(p.stat().st_mode) for p in out.parent.glob(".train*"))

    old = os.umask(0o022)
    try:
        with Project.open(demo_dir / "fabric.yaml") as project:
            report = export_view(project, "customer_360", out, spine=spine, progress=progress)
    finally:
        os.umask(old)
    assert seen and set(seen) == {0o600}
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert stat.S_IMODE(report.manifest.stat().st_mode) == 0o600
    # Directories fabric made for the file are owner-only too.
    assert stat.S_IMODE(out.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(out.parent.parent.stat().st_mode) == 0o700


# -- Parquet encodings: only those whose size bounds what they decode to -------------------

#: Roomy limits: the files below are small, so only an encoding can make them refused.
ROOMY = SpineLimits(rows=100_000, decoded_bytes=1 << 20, value_bytes=1024)

#: Label columns of each physical type Parquet has, and the encodings pyarrow writes them
#: with (``column_encoding``, beside ``use_dictionary`` alone).
LABELS: dict[str, tuple[pa.Array, tuple[str, ...]]] = {
    "text": (
        pa.array([f"label-{i % 7}" for i in range(200)]),
        ("PLAIN", "DELTA_BYTE_ARRAY", "DELTA_LENGTH_BYTE_ARRAY"),
    ),
    "fixed": (
        pa.array([bytes([i % 7]) * 16 for i in range(200)], pa.binary(16)),
        ("PLAIN", "DELTA_BYTE_ARRAY", "BYTE_STREAM_SPLIT"),
    ),
    "int": (
        pa.array(range(200), pa.int64()),
        ("PLAIN", "DELTA_BINARY_PACKED", "BYTE_STREAM_SPLIT"),
    ),
    "float": (pa.array([i / 7 for i in range(200)]), ("PLAIN", "BYTE_STREAM_SPLIT")),
    "bool": (pa.array([i % 3 == 0 for i in range(200)]), ("PLAIN", "RLE")),
}


def writer_options() -> Iterator[tuple[str, str | None, bool, str]]:
    for kind, (_, encodings) in LABELS.items():
        for version in ("1.0", "2.0"):
            for dictionary in (True, False):
                yield kind, None, dictionary, version
            for encoding in encodings:
                yield kind, encoding, False, version


@pytest.mark.parametrize(("kind", "encoding", "dictionary", "version"), list(writer_options()))
def test_parquet_encodings_whose_size_does_not_bound_the_decoded_size_are_refused(
    tmp_path: Path, kind: str, encoding: str | None, dictionary: bool, version: str
) -> None:
    values, _ = LABELS[kind]
    path = tmp_path / "spine.parquet"
    options: dict[str, object] = {"use_dictionary": dictionary, "data_page_version": version}
    if encoding is not None:
        options["column_encoding"] = {"label": encoding}
    pq.write_table(spine_table(["crm:1"] * len(values), label=values), path, **options)
    # What the footer says (it may lie: the pages' own headers decide, see below).
    footer = pq.ParquetFile(path).metadata.row_group(0).column(2).encodings
    if encoding is not None:
        assert encoding in footer
    elif dictionary and kind != "bool":  # booleans are never dictionary-encoded
        assert "RLE_DICTIONARY" in footer
    else:
        assert ("RLE" if kind == "bool" and version == "2.0" else "PLAIN") in footer
    if encoding != "DELTA_BYTE_ARRAY":
        info = check_spine(path, ROOMY)
        assert info.rows == len(values) and info.decoded_bytes is not None
        return
    # Prefixes shared with the value before: a few bytes can stand for any number of long
    # values, and nothing but decoding tells how many bytes they make.
    with pytest.raises(SpineError) as raised:
        check_spine(path, ROOMY)
    assert not isinstance(raised.value, SpineTooLargeError)  # a 400: the file, not its size
    message = str(raised.value)
    assert "column 'label'" in message and "DELTA_BYTE_ARRAY" in message
    assert "PLAIN" in message and "dictionary" in message
    assert "label-" not in message  # never a value


@pytest.mark.parametrize("version", ["1.0", "2.0"])
def test_a_dictionary_falling_back_to_plain_pages_is_counted_exactly(
    tmp_path: Path, version: str
) -> None:
    # Too many distinct values for the dictionary page: the writer goes on with PLAIN pages.
    path = tmp_path / "spine.parquet"
    labels = [f"value-{i}" for i in range(5_000)]
    table = spine_table(["crm:1"] * len(labels), label=labels)
    pq.write_table(table, path, dictionary_pagesize_limit=1024, data_page_version=version)
    assert set(pq.ParquetFile(path).metadata.row_group(0).column(2).encodings) == {
        "PLAIN",
        "RLE",
        "RLE_DICTIONARY",
    }
    info = check_spine(path, ROOMY)
    assert info.decoded_bytes == pytest.approx(pq.read_table(path).nbytes, rel=0.01)


def test_the_reviewers_prefix_coded_bomb_is_refused_before_it_is_decoded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bomb = tmp_path / "bomb.parquet"
    prefix_coded_spine(bomb, groups=12, rows=1_000, length=900)  # 10.8 MB once decoded
    meta = pq.ParquetFile(bomb).metadata
    footer = sum(meta.row_group(g).total_byte_size for g in range(meta.num_row_groups))
    assert bomb.stat().st_size < 65_536 and footer < ROOMY.decoded_bytes
    # Refused from the pages' headers alone: nothing is decoded.
    monkeypatch.setattr(pq.ParquetFile, "iter_batches", None)
    monkeypatch.setattr(pq.ParquetFile, "read", None)
    with pytest.raises(SpineError, match=r"column 'label' .*DELTA_BYTE_ARRAY"):
        check_spine(bomb, ROOMY)


def rewrite_footer(path: Path, old: bytes, new: bytes) -> None:
    """Replace bytes in a Parquet file's footer (each time they occur), as someone crafting a
    file would."""
    data = path.read_bytes()
    length = int.from_bytes(data[-8:-4], "little")
    start = len(data) - 8 - length
    footer = data[start:-8]
    assert old in footer
    footer = footer.replace(old, new)
    path.write_bytes(data[:start] + footer + len(footer).to_bytes(4, "little") + b"PAR1")


def varint(number: int) -> bytes:
    """Thrift's compact encoding of an integer field's value (zigzag, then LEB128)."""
    number = (number << 1) ^ (number >> 63)
    out = bytearray()
    while number > 0x7F:
        out.append(number & 0x7F | 0x80)
        number >>= 7
    return bytes([*out, number])


def test_a_footer_that_lies_about_encodings_or_sizes_is_not_believed(tmp_path: Path) -> None:
    # Prefix-coded pages, the footer saying PLAIN: the reader decodes what the pages say.
    lying = tmp_path / "encodings.parquet"
    prefix_coded_spine(lying, groups=2, rows=1_000, length=900)
    # ColumnMetaData.encodings: a list of two i32 (RLE = 3, DELTA_BYTE_ARRAY = 7).
    rewrite_footer(lying, b"\x19\x25\x06\x0e", b"\x19\x25\x06\x00")
    chunk = pq.ParquetFile(lying).metadata.row_group(0).column(2)
    assert chunk.encodings == ("RLE", "PLAIN")
    assert pq.read_table(lying).column("label")[999].as_py() == "x" * 900  # read as it is
    with pytest.raises(SpineError, match=r"column 'label' .*DELTA_BYTE_ARRAY"):
        check_spine(lying, ROOMY)
    # One 4 MiB value, compressed to a few kilobytes, the footer saying it is 100 bytes.
    small = tmp_path / "sizes.parquet"
    pq.write_table(spine_table(["crm:1"], label=["x" * (4 << 20)]), small, compression="zstd")
    chunk = pq.ParquetFile(small).metadata.row_group(0).column(2)
    rewrite_footer(
        small,
        b"\x16" + varint(chunk.total_uncompressed_size) + b"\x16",
        b"\x16" + varint(100) + b"\x16",
    )
    assert pq.ParquetFile(small).metadata.row_group(0).column(2).total_uncompressed_size == 100
    with pytest.raises(SpineTooLargeError, match=r"api\.exports\.max_spine_decoded_bytes"):
        check_spine(small, ROOMY)
    # 1,001 rows, the file saying 10: the reader makes its row groups' rows.
    rows = tmp_path / "rows.parquet"
    pq.write_table(spine_table(["crm:1"] * 1_001), rows)
    # FileMetaData.num_rows, between the schema and the row groups (two lists).
    rewrite_footer(rows, b"\x16" + varint(1_001) + b"\x19", b"\x16" + varint(10) + b"\x19")
    assert pq.ParquetFile(rows).metadata.num_rows == 10
    assert pq.read_table(rows).num_rows == 1_001
    with pytest.raises(
        SpineTooLargeError, match=r"1,001 rows, more than api\.exports\.max_spine_rows"
    ):
        check_spine(rows, LIMITS)


@pytest.mark.parametrize(
    "label",
    [
        pa.array([["a", "b"]]),
        pa.array([{"a": 1, "b": "x"}]),
        pa.array([[("k", 1)]], pa.map_(pa.string(), pa.int64())),
    ],
    ids=["list", "struct", "map"],
)
@pytest.mark.parametrize("store_schema", [True, False])
def test_nested_parquet_columns_are_refused(
    tmp_path: Path, label: pa.Array, store_schema: bool
) -> None:
    path = tmp_path / "nested.parquet"
    pq.write_table(spine_table(["crm:1"], label=label), path, store_schema=store_schema)
    with pytest.raises(SpineError, match=r"'label' are lists, maps or structs"):
        check_spine(path, ROOMY)


# -- CSV: the longest value -----------------------------------------------------------------


def test_csv_values_over_the_value_limit_are_refused(project: Project, tmp_path: Path) -> None:
    long = tmp_path / "long.csv"
    long.write_text("entity_id,event_timestamp,note\ncrm:1,2026-05-01," + "x" * 2048 + "\n")
    with pytest.raises(
        SpineTooLargeError,
        match=r"column 'note' holds a value of 2,048 bytes, more than "
        r"api\.exports\.max_spine_value_bytes \(1,024 bytes\)",
    ):
        check_spine(long, LIMITS)
    # Short lines, one long value: a quoted value holds line breaks.
    quoted = tmp_path / "quoted.csv"
    quoted.write_text(
        'entity_id,event_timestamp,note\ncrm:1,2026-05-01,"' + "x\n" * 600 + '"\ncrm:2,2026,y\n'
    )
    with pytest.raises(SpineTooLargeError, match=r"column 'note' holds a value of 1,200 bytes"):
        check_spine(quoted, LIMITS)
    # Keys are values too.
    key = tmp_path / "key.csv"
    key.write_text("entity_id,event_timestamp\n" + "k" * 1025 + ",2026-05-01\n")
    with pytest.raises(SpineTooLargeError, match=r"column 'entity_id' holds a value of 1,025"):
        check_spine(key, LIMITS)
    # A compressed CSV is checked as it streams.
    packed = tmp_path / "long.csv.gz"
    packed.write_bytes(gzip.compress(long.read_bytes()))
    with pytest.raises(SpineTooLargeError, match=r"'note' holds a value of 2,048 bytes"):
        export_view(project, "customer_360", tmp_path / "out.parquet", spine=packed, limits=LIMITS)
    assert not (tmp_path / "out.parquet").exists()
    fine = tmp_path / "fine.csv"
    fine.write_text("entity_id,event_timestamp,note\ncrm:1,2026-05-01," + "x" * 1024 + "\n")
    assert check_spine(fine, LIMITS).rows == 1


# -- Column names: compared as case-insensitive tools compare them ------------------------


@pytest.mark.parametrize(
    "column",
    [
        "Found",
        "FOUND",
        " found",
        "existed\t",
        "Order_Count_90d",
        "order_count_90d ",
        "Entity_ID",
        " event_timestamp",
    ],
)
def test_spine_columns_differing_from_a_written_name_only_by_case_or_spaces_are_refused(
    project: Project, tmp_path: Path, column: str
) -> None:
    spine = tmp_path / "spine.parquet"
    pq.write_table(spine_table(ids(project, 2), **{column: ["v", "w"]}), spine)
    with pytest.raises(SpineError) as raised:
        export_view(project, "customer_360", tmp_path / "out.parquet", spine=spine)
    message = str(raised.value)
    assert repr(column) in message and "rename" in message and "case" in message
    assert "'v'" not in message
    assert not (tmp_path / "out.parquet").exists()


def test_spine_labels_differing_only_by_case_or_spaces_are_refused(tmp_path: Path) -> None:
    spine = tmp_path / "spine.csv"
    spine.write_text("entity_id,event_timestamp,Label,label \ncrm:1,2026-05-01,1,0\n")
    with pytest.raises(SpineError, match=r"columns 'Label' and 'label ' differ only by case"):
        check_spine(spine)
    # Distinct names pass, whatever their case.
    spine.write_text("entity_id,event_timestamp,Label,Churned\ncrm:1,2026-05-01,1,0\n")
    assert check_spine(spine).columns == ("entity_id", "event_timestamp", "Label", "Churned")
