"""The identity index: what incremental resolution needs, with no plaintext at rest.

For every identity record it keeps the entity it belongs to and keyed hashes (HMAC with a key
derived from the master key) of every match and blocking key it has. A changed record finds
its candidates by looking up the hashes of its own keys; the values to compare are then read
back from the candidates' encrypted entity images, so the index itself holds no values.

The hashing is done here; the catalog only files and finds the hashes, each
:data:`KEY_HASH_BYTES` wide (the width its identity tables keep them at).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence

from fabric.crypto import KeyedHasher, derive_key
from fabric.resolve.rules import CompiledMatchRules
from fabric.store.catalog import KEY_HASH_BYTES, Catalog

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
    """Identity records of one entity type: hashed here, kept by the catalog."""

    def __init__(
        self, catalog: Catalog, entity_type: str, master_key: bytes, rules: CompiledMatchRules
    ) -> None:
        self._catalog = catalog
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
        self._catalog.replace_identity_records(
            self.entity_type, self._hashed(records), everything=everything
        )

    def _hashed(
        self, records: Iterable[tuple[str, str, Values | Hashed]]
    ) -> Iterator[tuple[str, str, list[bytes], bytes]]:
        """``(ref, entity id, key hashes, values hash)``, hashing the values not yet hashed."""
        for ref, entity_id, given in records:
            key_hashes, of_values = (
                given if isinstance(given, tuple) else hashed(self.rules, self._hash, given)
            )
            yield ref, entity_id, key_hashes, of_values

    def has_records(self) -> bool:
        """Whether a full sync has filled the index for this entity type."""
        return self._catalog.has_identity_records(self.entity_type)

    def forget(self, refs: Sequence[str]) -> None:
        """Remove records (gone from their source) from the index."""
        self._catalog.forget_identity_records(self.entity_type, refs)

    def candidates(self, values: Iterable[Values]) -> set[str]:
        """Refs of indexed records sharing any match or blocking key with the given values."""
        return self._catalog.identity_refs_under(
            self.entity_type,
            (self._hash(key) for record in values for key in match_keys(self.rules, record)),
        )

    def unchanged(self, records: Iterable[tuple[str, Values]]) -> dict[str, str]:
        """ref -> entity id of the given records whose match values are those indexed."""
        given = list(records)
        stored = self._catalog.identity_records(self.entity_type, (ref for ref, _ in given))
        out: dict[str, str] = {}
        for ref, values in given:
            found = stored.get(ref)
            if found is not None and found[1] == values_hash(self._hash, values):
                out[ref] = found[0]
        return out

    def entity_of(self, refs: Iterable[str]) -> dict[str, str]:
        """ref -> entity id for indexed records."""
        records = self._catalog.identity_records(self.entity_type, refs)
        return {ref: entity_id for ref, (entity_id, _) in records.items()}
