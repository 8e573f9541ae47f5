"""Sync runs, and the watermarks that say how far incremental runs have read each table.

Watermark values are kept as JSON so an integer stays an integer and a time stays ISO 8601
text (the form rows give). A run moves them forward only in its last catalog transaction, so a
run that fails leaves them where they were and the next run reads the same rows again.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from fabric.store.catalog._records import SyncRunRecord, utc_now
from fabric.store.catalog._tables import Tables
from fabric.store.catalog._upsert import upsert

__all__ = ["RunTables"]


class RunTables(Tables):
    """``sync_runs`` and ``watermarks``: what each run did, and where the next one starts."""

    def start_run(self, mode: str, rules_version: str | None = None) -> int:
        """Record the start of a sync run (under a rule-set version) and return its id."""
        with self._conn:
            row = self._conn.execute(
                "INSERT INTO sync_runs (started_at, status, mode, rules_version) "
                "VALUES (?, 'running', ?, ?) RETURNING id",
                (utc_now(), mode, rules_version),
            ).fetchone()
            run_id = int(row[0])
        return run_id

    def finish_run(
        self,
        run_id: int,
        *,
        status: str,
        counts: dict[str, int],
        error: str | None = None,
        mode: str | None = None,
    ) -> None:
        """Record the end of a sync run (and the mode it really ran in, when given)."""
        with self._conn:
            if mode is not None:
                self._conn.execute("UPDATE sync_runs SET mode = ? WHERE id = ?", (mode, run_id))
            self._conn.execute(
                "UPDATE sync_runs SET finished_at = ?, status = ?, rows_read = ?, created = ?, "
                "updated = ?, unchanged = ?, deleted = ?, error = ?, merged = ?, split = ? "
                "WHERE id = ?",
                (
                    utc_now(),
                    status,
                    counts.get("rows_read", 0),
                    counts.get("created", 0),
                    counts.get("updated", 0),
                    counts.get("unchanged", 0),
                    counts.get("deleted", 0),
                    error,
                    counts.get("merged", 0),
                    counts.get("split", 0),
                    run_id,
                ),
            )
        self._conn.optimize()  # what apsw's best practice did on every open

    def last_succeeded_run(self) -> SyncRunRecord | None:
        """The latest sync run that succeeded: the state the store is in."""
        row = self._conn.execute(
            "SELECT * FROM sync_runs WHERE status = 'succeeded' ORDER BY id DESC LIMIT 1"
        ).fetchone()
        return None if row is None else SyncRunRecord(*row)

    def runs(self, limit: int = 10) -> list[SyncRunRecord]:
        """The latest sync runs, newest first."""
        return [
            SyncRunRecord(*row)
            for row in self._conn.execute(
                "SELECT * FROM sync_runs ORDER BY id DESC LIMIT ?", (limit,)
            )
        ]

    def runs_by_status(self) -> dict[str, int]:
        """How many sync runs are recorded under each status."""
        return {
            str(status): int(count)
            for status, count in self._conn.execute(
                "SELECT status, count(*) FROM sync_runs GROUP BY status"
            )
        }

    # -- settings ---------------------------------------------------------------------------

    def setting(self, name: str) -> str | None:
        """A small shared value (None: never set)."""
        row = self._conn.execute("SELECT value FROM settings WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def set_setting(self, name: str, value: str) -> None:
        """Set a small shared value."""
        with self._conn:
            self._conn.execute(
                "INSERT INTO settings (name, value) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (name, value),
            )

    def forget_settings(self, prefix: str) -> None:
        """Drop every setting whose name starts with ``prefix``."""
        with self._conn:
            self._conn.execute(
                "DELETE FROM settings WHERE substr(name, 1, ?) = ?", (len(prefix), prefix)
            )

    # -- reloads ----------------------------------------------------------------------------

    def reload_generation(self) -> int:
        """How many times a server of this store was told to reload (0: never)."""
        return int(self.setting("reload_generation") or 0)

    def announce_reload(self) -> int:
        """Count one more reload, for every server of this store to follow; the new count."""
        with self._conn:
            row = self._conn.execute(
                "INSERT INTO settings (name, value) VALUES ('reload_generation', '1') "
                "ON CONFLICT (name) DO UPDATE SET "
                "value = CAST(CAST(settings.value AS INTEGER) + 1 AS TEXT) RETURNING value"
            ).fetchone()
        return int(row[0])

    # -- watermarks -------------------------------------------------------------------------

    def watermark(self, source: str, table: str, column: str) -> Any | None:
        """How far a table was read by ``column``, or None if it never was by this column."""
        row = self._conn.execute(
            "SELECT column_name, value FROM watermarks WHERE source = ? AND source_table = ?",
            (source, table),
        ).fetchone()
        if row is None or row[0] != column:
            return None  # never read, or the watermark column changed: read everything
        return json.loads(str(row[1]))

    def set_watermarks(self, values: Mapping[tuple[str, str, str], Any], run_id: int) -> None:
        """Store ``(source, table, column) -> value`` in one transaction."""
        with self._conn:
            self._conn.executemany(
                upsert("watermarks"),
                [(s, t, c, json.dumps(v), run_id) for (s, t, c), v in values.items()],
            )
