"""Reading an entity type's source rows: streamed in batches, keys checked, transforms
applied at ingest, each table's newest watermark noted."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from fabric.errors import SourceError
from fabric.store.catalog import SourceRef
from fabric.store.microdb import (
    TableDef,
)
from fabric.sync.context import (
    Item,
    Row,
    TypeState,
)
from fabric.sync.report import key_text

__all__ = ["Reading"]


class Reading(TypeState):
    """Reading source rows: streamed, checked, transformed; watermarks noted."""

    def _watermark_column(self, table: TableDef) -> str | None:
        return self.project.config.sources[table.source].tables[table.source_table].watermark

    def _read(self, table: TableDef, since: Any | None = None) -> list[Row]:
        """Read a table (or its rows at or past ``since``) whole: for incremental runs."""
        return [row for batch in self._stream(table, since) for row in batch]

    def _stream(self, table: TableDef, since: Any | None = None) -> Iterator[list[Row]]:
        """Stream a table's rows (at or past ``since``), checking keys identify rows.

        A NULL or repeated key would silently drop a row or put it into someone else's
        entity, so both stop the run (before anything is written) with counts, never values.
        """
        reader = self.project.source(table.source)
        column = self._watermark_column(table)
        key_at = table.column_names.index(table.key)
        mark_at = table.column_names.index(column) if column else None
        seen: set[str] = set()
        nulls = repeats = count = 0
        newest = since
        filter_ = (column, since) if column is not None and since is not None else None
        transform = self.project.row_transform(self.entity_type, table.name)
        read = table.source_columns or table.column_names
        for batch in reader.read(table.source_table, read, since=filter_):
            if transform is not None:
                # Transforms at ingest: every later step sees the rows as they are stored
                # (keys, foreign keys and watermarks are never transformed).
                batch = [transform(row) for row in batch]
            for row in batch:
                key = row[key_at]
                if key is None:
                    nulls += 1
                    continue
                text = key_text(key)
                if text in seen:
                    repeats += 1
                seen.add(text)
                if (
                    mark_at is not None
                    and row[mark_at] is not None
                    and (newest is None or row[mark_at] > newest)
                ):
                    newest = row[mark_at]
            count += len(batch)
            self.progress(f"extract {table.name}", len(batch), None)
            yield batch
        if nulls or repeats:
            raise SourceError(
                f"source '{table.source}' table '{table.source_table}': {nulls} rows with a "
                f"NULL '{table.key}' and {repeats} repeated '{table.key}' values; the primary "
                f"key must identify every row (fabric.yaml: sources.{table.source}.tables."
                f"{table.source_table}.primary_key)"
            )
        if column is not None and newest is not None:
            self._marks[(table.source, table.source_table, column)] = newest
        self.report.rows_read += count
        self.report.rows_by_table[table.name] = self.report.rows_by_table.get(table.name, 0) + count

    def _identity(
        self,
        table: TableDef,
        rows: Sequence[Row],
        known: Mapping[SourceRef, dict[str, str | None]] | None = None,
    ) -> list[tuple[SourceRef, dict[str, str | None], Item]]:
        """Identity records of some rows with their match values (``known`` ones not redone)."""
        key_at = table.column_names.index(table.key)
        names = table.column_names
        extract = self.rules.extractor(table.name, set(names))
        out = []
        for row in rows:
            key = key_text(row[key_at])
            ref = SourceRef(table.source, table.source_table, key)
            values = known.get(ref) if known is not None else None
            if values is None:
                values = extract(dict(zip(names, row, strict=True))) if extract else {}
            out.append((ref, values, Item(table, row, key)))
        return out

    def watermarks(self) -> dict[tuple[str, str, str], Any]:
        """The newest watermark value read per table in this run."""
        return dict(self._marks)
