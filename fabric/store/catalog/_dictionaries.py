"""Compression dictionaries: the zstd dictionaries entity images are compressed with, sealed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fabric.store.catalog._records import DictionaryRecord, utc_now
from fabric.store.catalog._tables import Tables

__all__ = ["DictionaryTables"]

_COLUMNS = "dict_id, entity_type, schema_version, samples, created_at, sealed"


def _dictionary(row: Sequence[Any]) -> DictionaryRecord:
    """A ``dictionaries`` row as a record."""
    dict_id, entity_type, version, samples, created, sealed = row
    return DictionaryRecord(
        str(dict_id), str(entity_type), str(version), int(samples), str(created), bytes(sealed)
    )


class DictionaryTables(Tables):
    """``dictionaries``: kept sealed (they hold fragments of the images they were trained on)."""

    def put_dictionary(
        self, dict_id: str, entity_type: str, schema_version: str, samples: int, sealed: bytes
    ) -> None:
        """Keep a sealed dictionary (joins a transaction the caller has open)."""
        with self._conn:
            self._conn.execute(
                f"INSERT INTO dictionaries ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                (dict_id, entity_type, schema_version, samples, utc_now(), sealed),
            )

    def reseal_dictionary(self, dict_id: str, sealed: bytes) -> None:
        """Replace a dictionary's sealed bytes (a key rotation)."""
        with self._conn:
            self._conn.execute(
                "UPDATE dictionaries SET sealed = ? WHERE dict_id = ?", (sealed, dict_id)
            )

    def dictionaries(self) -> list[DictionaryRecord]:
        """Every dictionary, oldest first."""
        return [
            _dictionary(row)
            for row in self._conn.execute(
                f"SELECT {_COLUMNS} FROM dictionaries "
                f"ORDER BY created_at, {self._conn.insertion_order}"
            )
        ]

    def latest_dictionary(self, entity_type: str, schema_version: str) -> DictionaryRecord | None:
        """The newest dictionary of one entity type and schema."""
        row = self._conn.execute(
            f"SELECT {_COLUMNS} FROM dictionaries WHERE entity_type = ? AND schema_version = ? "
            f"ORDER BY created_at DESC, {self._conn.insertion_order} DESC LIMIT 1",
            (entity_type, schema_version),
        ).fetchone()
        return None if row is None else _dictionary(row)

    def dictionary(self, dict_id: str) -> bytes | None:
        """One dictionary's sealed bytes."""
        row = self._conn.execute(
            "SELECT sealed FROM dictionaries WHERE dict_id = ?", (dict_id,)
        ).fetchone()
        return None if row is None else bytes(row[0])
