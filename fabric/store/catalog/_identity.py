"""The identity index's tables: each identity record's entity, and keyed hashes of its keys.

What the hashes are of, and how they are keyed, is resolution's business
(:mod:`fabric.resolve.index`); the catalog only files and finds them. No personal data is
kept here, in clear or otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from fabric.store.catalog._tables import Tables
from fabric.store.catalog._upsert import upsert

__all__ = ["KEY_HASH_BYTES", "IdentityTables"]

#: Bytes of each key hash the index keeps. A record lists its own key hashes as their
#: concatenation, split at this width to forget them (no index of keys by record is kept).
KEY_HASH_BYTES = 16


class IdentityTables(Tables):
    """``identity_records`` and ``identity_keys``: where incremental resolution looks."""

    def replace_identity_records(
        self,
        entity_type: str,
        records: Iterable[tuple[str, str, Sequence[bytes], bytes]],
        *,
        everything: bool,
    ) -> None:
        """Index ``(ref, entity id, key hashes, values hash)`` records.

        With ``everything``, the index of this entity type is rebuilt from these records only
        (a full sync, in two bulk rewrites); otherwise only the given records change, in one
        transaction.
        """
        rows: list[tuple[Any, ...]] = []
        keys: list[tuple[Any, ...]] = []
        refs: list[str] = []
        for ref, entity_id, key_hashes, of_values in records:
            refs.append(ref)
            rows.append((entity_type, ref, entity_id, of_values, b"".join(key_hashes)))
            keys.extend((entity_type, key_hash, ref) for key_hash in key_hashes)
        if everything:
            with self.rewrite("identity_records", entity_type) as writer:
                writer.add(rows)
            with self.rewrite("identity_keys", entity_type) as writer:
                writer.add(keys)
            return
        with self._conn:
            self._forget_identity_records(entity_type, refs)
            self._conn.executemany(upsert("identity_records"), rows)
            self._conn.executemany(upsert("identity_keys"), keys)

    def has_identity_records(self, entity_type: str) -> bool:
        """Whether a full sync has filled the index for this entity type."""
        return (
            self._conn.execute(
                "SELECT 1 FROM identity_records WHERE entity_type = ? LIMIT 1", (entity_type,)
            ).fetchone()
            is not None
        )

    def forget_identity_records(self, entity_type: str, refs: Sequence[str]) -> None:
        """Remove records, and every key they were filed under, from the index."""
        with self._conn:
            self._forget_identity_records(entity_type, refs)

    def _forget_identity_records(self, entity_type: str, refs: Sequence[str]) -> None:
        """:meth:`forget_identity_records` within the transaction the caller has open."""
        conn = self._conn
        keys: list[tuple[str, bytes, str]] = []
        for ref in refs:
            row = conn.execute(
                "SELECT key_hashes FROM identity_records WHERE entity_type = ? AND ref = ?",
                (entity_type, ref),
            ).fetchone()
            hashes = bytes(row[0] or b"") if row is not None else b""
            keys.extend(
                (entity_type, hashes[at : at + KEY_HASH_BYTES], ref)
                for at in range(0, len(hashes), KEY_HASH_BYTES)
            )
        conn.executemany(
            "DELETE FROM identity_records WHERE entity_type = ? AND ref = ?",
            [(entity_type, ref) for ref in refs],
        )
        conn.executemany(
            "DELETE FROM identity_keys WHERE entity_type = ? AND key_hash = ? AND ref = ?",
            keys,
        )

    def identity_refs_under(self, entity_type: str, key_hashes: Iterable[bytes]) -> set[str]:
        """Refs of the records filed under any of these key hashes."""
        found: set[str] = set()
        for key_hash in key_hashes:
            found.update(
                str(r[0])
                for r in self._conn.execute(
                    "SELECT ref FROM identity_keys WHERE entity_type = ? AND key_hash = ?",
                    (entity_type, key_hash),
                )
            )
        return found

    def identity_records(
        self, entity_type: str, refs: Iterable[str]
    ) -> dict[str, tuple[str, bytes | None]]:
        """ref -> (entity id, hash of its match values) for indexed records."""
        out: dict[str, tuple[str, bytes | None]] = {}
        for ref in refs:
            row = self._conn.execute(
                "SELECT entity_id, values_hash FROM identity_records "
                "WHERE entity_type = ? AND ref = ?",
                (entity_type, ref),
            ).fetchone()
            if row is not None:
                out[ref] = (str(row[0]), None if row[1] is None else bytes(row[1]))
        return out
