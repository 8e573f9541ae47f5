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

from fabric.cli import main
from fabric.features.export import SpineError, export_view
from fabric.features.spine import SpineLimits, SpineTooLargeError, check_spine
from fabric.project import Project

#: Small limits, so the tests' files stay small.
LIMITS = SpineLimits(rows=1_000, decoded_bytes=1 << 20, value_bytes=1024)


@pytest.fixture(scope="module")
def project(demo_dir: Path) -> Iterator[Project]:
    with Project.open(demo_dir / "fabric.yaml") as opened:
        yield opened


def ids(project: Project, count: int) -> list[str]:
    return sorted(project.catalog.entities("customer"))[:count]


def spine_table(keys: list[str], **labels: list[object]) -> pa.Table:
    return pa.table(
        {"entity_id": keys, "event_timestamp": ["2026-05-01T00:00:00"] * len(keys), **labels}
    )


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
