"""Per-table watermarks: how far incremental syncs have read each source table.

Values are kept as JSON so an integer stays an integer and a time stays ISO 8601 text (the
form rows give). They move forward only in the run's last catalog transaction, so a run that
fails leaves them where they were and the next run reads the same rows again.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from fabric.store.catalog import Catalog

__all__ = ["Watermarks"]


class Watermarks:
    """Watermarks of one catalog."""

    def __init__(self, catalog: Catalog) -> None:
        self._conn = catalog.connection

    def get(self, source: str, table: str, column: str) -> Any | None:
        """The stored value, or None if the table was never read by this column."""
        row = self._conn.execute(
            "SELECT column_name, value FROM watermarks WHERE source = ? AND source_table = ?",
            (source, table),
        ).fetchone()
        if row is None or row[0] != column:
            return None  # never read, or the watermark column changed: read everything
        return json.loads(str(row[1]))

    def set_many(self, values: Mapping[tuple[str, str, str], Any], run_id: int) -> None:
        """Store ``(source, table, column) -> value`` in one transaction."""
        with self._conn:
            self._conn.executemany(
                "INSERT OR REPLACE INTO watermarks VALUES (?, ?, ?, ?, ?)",
                [(s, t, c, json.dumps(v), run_id) for (s, t, c), v in values.items()],
            )
