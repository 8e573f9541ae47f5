"""The identity index: what incremental resolution needs, with no plaintext at rest.

For every identity record it keeps the entity it belongs to and keyed hashes (HMAC with a key
derived from the master key) of every match and blocking key it has. A changed record finds
its candidates by looking up the hashes of its own keys; the values to compare are then read
back from the candidates' encrypted entity images, so the index itself holds no values.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from fabric.crypto import KeyedHasher, derive_key
from fabric.resolve.rules import CompiledMatchRules
from fabric.store.catalog import Catalog

__all__ = [
    "KEY_HASH_BYTES",
    "Hashed",
    "IdentityIndex",
    "hashed",
    "hashed_keys",
    "index_hasher",
    "index_key",
    "match_keys",
    "values_hash",
]

Values = Mapping[str, str | None]


def match_keys(rules: CompiledMatchRules, values: Values) -> list[str]:
    """Every key under which a record can meet a candidate: one per rule key spec."""
    keys: list[str] = []
    for prefix, spec in rules.key_specs:
        parts = [values.get(name) for name in spec]
        if None not in parts:
            keys.append(prefix + "\x1f".join(parts))  # type: ignore[arg-type]
    return keys


def index_key(master_key: bytes) -> bytes:
    """The key of the index's keyed hashes, derived from the master key."""
    return derive_key(master_key, "identity-index-keys")


#: Bytes of each keyed hash the index keeps (a record's list of them is their concatenation).
KEY_HASH_BYTES = 16


def index_hasher(key: bytes) -> KeyedHasher:
    """The keyed hash of the index, given :func:`index_key`."""
    return KeyedHasher(key, KEY_HASH_BYTES)


def hashed_keys(rules: CompiledMatchRules, hasher: KeyedHasher, values: Values) -> list[bytes]:
    """The keyed hashes under which the index files a record with these values."""
    return [hasher(key) for key in match_keys(rules, values)]


def values_hash(hasher: KeyedHasher, values: Values) -> bytes:
    """A keyed hash of all of a record's match values: equal exactly when they all are.

    A changed row whose match values hash the same as before cannot change how records link
    (nothing resolution compares changed), so an incremental sync patches it into its entity
    without resolving again.
    """
    # repr of the sorted (name, value) pairs tells a missing value (None) from any text,
    # "None" included, and is several times cheaper than JSON, per identity record.
    return hasher(repr(sorted(values.items())))


#: What the index keeps of a record: the keyed hashes of its match keys and of its values.
Hashed = tuple[list[bytes], bytes]


def hashed(rules: CompiledMatchRules, hasher: KeyedHasher, values: Values) -> Hashed:
    """Everything the index files a record under (computed in worker processes, too)."""
    return hashed_keys(rules, hasher, values), values_hash(hasher, values)


class IdentityIndex:
    """Identity records of one entity type, kept in the catalog."""

    def __init__(
        self, catalog: Catalog, entity_type: str, master_key: bytes, rules: CompiledMatchRules
    ) -> None:
        self._catalog = catalog
        self._conn = catalog.connection
        self.entity_type = entity_type
        self.rules = rules
        self._hash = index_hasher(index_key(master_key))

    def replace(
        self, records: Iterable[tuple[str, str, Values | Hashed]], *, everything: bool
    ) -> None:
        """Index ``(ref, entity id, values or what they hash to)`` records.

        Hashes (from :func:`hashed`) let worker processes do the hashing of a full sync. With
        ``everything``, the index of this entity type is rebuilt from these records only (a
        full sync); otherwise only the given records change.
        """
        rows: list[tuple[Any, ...]] = []
        keys: list[tuple[Any, ...]] = []
        refs: list[str] = []
        for ref, entity_id, given in records:
            refs.append(ref)
            key_hashes, of_values = (
                given if isinstance(given, tuple) else hashed(self.rules, self._hash, given)
            )
            rows.append((self.entity_type, ref, entity_id, of_values, b"".join(key_hashes)))
            keys.extend((self.entity_type, key_hash, ref) for key_hash in key_hashes)
        if everything:
            with self._catalog.rewrite("identity_records", self.entity_type) as writer:
                writer.add(rows)
            with self._catalog.rewrite("identity_keys", self.entity_type) as writer:
                writer.add(keys)
            return
        with self._conn:
            self.forget(refs, in_transaction=True)
            self._conn.executemany(
                "INSERT OR REPLACE INTO identity_records VALUES (?, ?, ?, ?, ?)", rows
            )
            self._conn.executemany("INSERT OR IGNORE INTO identity_keys VALUES (?, ?, ?)", keys)

    def has_records(self) -> bool:
        """Whether a full sync has filled the index for this entity type."""
        return (
            self._conn.execute(
                "SELECT 1 FROM identity_records WHERE entity_type = ? LIMIT 1", (self.entity_type,)
            ).fetchone()
            is not None
        )

    def forget(self, refs: Sequence[str], *, in_transaction: bool = False) -> None:
        """Remove records (gone from their source) from the index."""

        def run() -> None:
            conn, entity_type = self._conn, self.entity_type
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

        if in_transaction:
            run()
        else:
            with self._conn:
                run()

    def candidates(self, values: Iterable[Values]) -> set[str]:
        """Refs of indexed records sharing any match or blocking key with the given values."""
        found: set[str] = set()
        for record in values:
            for key in match_keys(self.rules, record):
                found.update(
                    str(r[0])
                    for r in self._conn.execute(
                        "SELECT ref FROM identity_keys WHERE entity_type = ? AND key_hash = ?",
                        (self.entity_type, self._hash(key)),
                    )
                )
        return found

    def unchanged(self, records: Iterable[tuple[str, Values]]) -> dict[str, str]:
        """ref -> entity id of the given records whose match values are those indexed."""
        out: dict[str, str] = {}
        for ref, values in records:
            row = self._conn.execute(
                "SELECT entity_id, values_hash FROM identity_records "
                "WHERE entity_type = ? AND ref = ?",
                (self.entity_type, ref),
            ).fetchone()
            if row is not None and row[1] == values_hash(self._hash, values):
                out[ref] = str(row[0])
        return out

    def entity_of(self, refs: Iterable[str]) -> dict[str, str]:
        """ref -> entity id for indexed records."""
        out: dict[str, str] = {}
        for ref in refs:
            row = self._conn.execute(
                "SELECT entity_id FROM identity_records WHERE entity_type = ? AND ref = ?",
                (self.entity_type, ref),
            ).fetchone()
            if row is not None:
                out[ref] = str(row[0])
        return out
