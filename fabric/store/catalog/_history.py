"""What happened to entities: the links that hold them together, merges, splits and aliases.

Links carry rule names and similarities only, never values, so explanations can be shown to
any role.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from fabric.store.catalog._records import EntityEvent, StoredLink, utc_now
from fabric.store.catalog._tables import Tables
from fabric.store.catalog._upsert import upsert

__all__ = ["HistoryTables"]


class HistoryTables(Tables):
    """``links``, ``aliases`` and ``events``: why records share an entity, and what changed."""

    def replace_links(
        self,
        entity_type: str,
        links: Mapping[str, Sequence[StoredLink]],
        *,
        everything: bool = False,
    ) -> None:
        """Set the links of each given entity (an entity's previous links are dropped).

        With ``everything``, these are all the links of the entity type (a full sync): every
        other link of the type is dropped too, in one bulk rewrite.
        """
        rows = (
            (
                entity_type,
                entity_id,
                link.record_a,
                link.record_b,
                link.rule,
                link.score,
                json.dumps(link.comparisons, sort_keys=True),
            )
            for entity_id, items in links.items()
            for link in items
        )
        if everything:
            with self.rewrite("links", entity_type) as writer:
                writer.add(rows)
            return
        with self._conn:
            self._conn.executemany(
                "DELETE FROM links WHERE entity_type = ? AND entity_id = ?",
                [(entity_type, e) for e in links],
            )
            self._conn.executemany(upsert("links"), rows)

    def links(self, entity_type: str, entity_id: str) -> list[StoredLink]:
        """The links of one entity."""
        return [
            StoredLink(a, b, rule, score, json.loads(comparisons))
            for a, b, rule, score, comparisons in self._conn.execute(
                "SELECT record_a, record_b, rule, score, comparisons FROM links "
                "WHERE entity_type = ? AND entity_id = ? ORDER BY record_a, record_b",
                (entity_type, entity_id),
            )
        ]

    def record_history(
        self,
        entity_type: str,
        events: Iterable[EntityEvent],
        aliases: Mapping[str, str],
        run_id: int,
        current: Iterable[str] = (),
    ) -> None:
        """Record merge/split events and new aliases (alias id -> surviving id).

        ``current`` are the entity ids this run keeps: none of them can stay an alias.
        """
        now = utc_now()
        with self._conn:
            self._conn.executemany(
                "INSERT INTO events (entity_type, kind, entity_id, others, reason, at, sync_run)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        entity_type,
                        e.kind,
                        e.entity_id,
                        json.dumps(e.others),
                        e.reason,
                        e.at,
                        e.sync_run,
                    )
                    for e in events
                ],
            )
            for alias, survivor in aliases.items():
                # Older aliases of the merged entity now point at the survivor too.
                self._conn.execute(
                    "UPDATE aliases SET entity_id = ? WHERE entity_type = ? AND entity_id = ?",
                    (survivor, entity_type, alias),
                )
                self._conn.execute(
                    upsert("aliases"),
                    (entity_type, alias, survivor, now, run_id),
                )
            # An id that is an entity again (a split gave it back) is no alias.
            self._conn.executemany(
                "DELETE FROM aliases WHERE entity_type = ? AND alias_id = ?",
                [(entity_type, entity_id) for entity_id in current],
            )

    def alias_target(self, entity_type: str, entity_id: str) -> str | None:
        """The surviving id of a merged-away id, or None."""
        row = self._conn.execute(
            "SELECT entity_id FROM aliases WHERE entity_type = ? AND alias_id = ?",
            (entity_type, entity_id),
        ).fetchone()
        return None if row is None else str(row[0])

    def events(self, entity_type: str, entity_id: str) -> list[EntityEvent]:
        """Merges and splits an entity took part in, oldest first."""
        rows: list[Any] = self._conn.execute(
            "SELECT kind, entity_id, others, reason, at, sync_run FROM events "
            "WHERE entity_type = ? AND (entity_id = ? OR others LIKE ?) ORDER BY id",
            (entity_type, entity_id, f'%"{entity_id}"%'),
        ).fetchall()
        return [EntityEvent(k, e, json.loads(o), r, at, run) for k, e, o, r, at, run in rows]
