"""The identity index's hashes: keyed, and telling apart exactly what resolution compares."""

from __future__ import annotations

from contextlib import closing
from pathlib import Path

from fabric.crypto import KeyedHasher
from fabric.demo import create_demo_project
from fabric.project import Project
from fabric.resolve.index import IdentityIndex, values_hash
from fabric.store.sqlite import open_database


def test_values_hash_is_keyed_order_free_and_tells_missing_from_text() -> None:
    hasher = KeyedHasher(b"k" * 32)
    values = {"email": "ada@example.com", "phone": None}
    assert values_hash(hasher, values) == values_hash(hasher, dict(reversed(values.items())))
    assert values_hash(hasher, values) != values_hash(hasher, {**values, "phone": "None"})
    assert values_hash(hasher, values) != values_hash(hasher, {"email": "ada@example.com"})
    assert values_hash(hasher, values) != values_hash(KeyedHasher(b"o" * 32), values)
    assert b"ada" not in values_hash(hasher, values)


def test_forgetting_records_removes_them_and_every_key_they_were_filed_under(
    tmp_path: Path,
) -> None:
    created = create_demo_project(tmp_path / "demo", customers=5, seed=3)
    with Project.open(created.config_path) as project:
        master = project.secrets.master_key
        assert master is not None
        index = IdentityIndex(project.catalog, "customer", master, project.match_rules("customer"))
        ada = {"email": "ada@example.com", "phone": "+15550001", "first_name": "ada"}
        bob = {"email": "bob@example.com", "phone": "+15550002", "first_name": "bob"}
        index.replace(
            [("crm.customers:1", "C1", ada), ("crm.customers:2", "C2", bob)], everything=True
        )

        def filed() -> dict[str, int]:
            # The catalog lends its connection to no one: look at the file from another.
            with closing(open_database(project.catalog.path, readonly=True)) as conn:
                return {
                    str(ref): int(n)
                    for ref, n in conn.execute(
                        "SELECT ref, count(*) FROM identity_keys GROUP BY ref"
                    )
                }

        assert set(filed()) == {"crm.customers:1", "crm.customers:2"}
        assert index.candidates([ada]) == {"crm.customers:1"}
        index.forget(["crm.customers:1"])
        assert set(filed()) == {"crm.customers:2"}
        assert index.entity_of(["crm.customers:1", "crm.customers:2"]) == {"crm.customers:2": "C2"}
        assert index.candidates([ada]) == set()
        # Re-indexing a record under new values files it under the new keys only.
        index.replace(
            [("crm.customers:2", "C2", {**bob, "email": "robert@example.com"})], everything=False
        )
        assert index.candidates([{"email": "bob@example.com"}]) == set()
        assert index.candidates([{"email": "robert@example.com"}]) == {"crm.customers:2"}
