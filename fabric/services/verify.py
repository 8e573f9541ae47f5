"""Check every stored entity: it opens, it is a sound SQLite database, it is what the catalog says.

`fabric store verify` runs this. A fault is something a reader would trip over (a blob that does
not decrypt, a damaged image, an image that is not the entity or version it is stored as, an
entity the catalog lists and the store lacks). A notice is a state an interrupted sync leaves
and the next sync settles: the store commits an image before the catalog records it, so after a
crash the store may be one version ahead of the catalog, or hold an image the catalog has
already deleted. Readers serve the store's image in both cases, which is whole.

Messages name entity types, ids, versions and key ids, never stored values.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from fabric.errors import StoreError
from fabric.project import Project
from fabric.store.codec import key_id_of
from fabric.store.microdb import MicroDbReader
from fabric.store.sqlite import apsw

__all__ = ["Fault", "VerifyReport", "verify_store"]

Progress = Callable[[str, int, int | None], None]


@dataclass(frozen=True)
class Fault:
    """One entity that does not pass."""

    entity_type: str
    entity_id: str
    problem: str

    def __str__(self) -> str:
        return f"{self.entity_type} {self.entity_id}: {self.problem}"


@dataclass
class VerifyReport:
    """What a verification found."""

    checked: int = 0
    faults: list[Fault] = field(default_factory=list)
    #: states an interrupted sync leaves (see the module docstring), counted per kind
    notices: Counter[str] = field(default_factory=Counter)
    #: blobs per store key id ("none": not encrypted)
    key_ids: Counter[str] = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        """No faults."""
        return not self.faults


def _check_image(reader: MicroDbReader, image: bytes) -> tuple[str | None, dict[str, object]]:
    """SQLite's own integrity check, and the image's ``_meta``."""
    try:
        conn = reader.load(image)
        result = [str(row[0]) for row in conn.execute("PRAGMA integrity_check")]
        meta = {str(k): v for k, v in conn.execute("SELECT key, value FROM _meta")}
    except apsw.Error as exc:
        return f"the image is not a readable SQLite database ({type(exc).__name__})", {}
    if result != ["ok"]:
        return f"SQLite integrity check failed: {'; '.join(result[:3])}", meta
    return None, meta


def verify_store(project: Project, progress: Progress | None = None) -> VerifyReport:
    """Decrypt, decompress and check every stored entity of every entity type."""
    progress = progress or (lambda stage, n, total: None)
    store, catalog, codec = project.store, project.catalog, project.codec
    reader = MicroDbReader()
    report = VerifyReport()
    for dictionary in catalog.dictionaries():
        try:
            codec.open_dictionary(dictionary.dict_id, dictionary.sealed)
        except StoreError as exc:
            report.faults.append(
                Fault(dictionary.entity_type, f"(dictionary {dictionary.dict_id})", str(exc))
            )
    for entity_type in project.config.entities:
        known = catalog.entities(entity_type)
        seen: set[str] = set()
        stage = f"verify {entity_type}"
        for partition in range(store.partitions):
            for stored in store.scan(entity_type, partition):
                report.checked += 1
                entity_id, version = stored.entity_id, stored.version
                seen.add(entity_id)
                report.key_ids[key_id_of(stored.blob) or "none"] += 1
                progress(stage, 1, len(known) or None)

                def fault(
                    problem: str, entity_type: str = entity_type, entity_id: str = entity_id
                ) -> None:
                    report.faults.append(Fault(entity_type, entity_id, problem))

                try:
                    image = codec.decode(stored.blob, entity_type, entity_id, version)
                except StoreError as exc:
                    fault(str(exc).removeprefix(f"stored image of {entity_type} {entity_id} "))
                    continue
                problem, meta = _check_image(reader, image)
                if problem is not None:
                    fault(problem)
                    continue
                expected = {"entity_type": entity_type, "entity_id": entity_id, "version": version}
                wrong = [k for k, v in expected.items() if meta.get(k) != v]
                if wrong:
                    fault(f"_meta {', '.join(wrong)} differ from the stored entity (v{version})")
                    continue
                record = known.get(entity_id)
                if record is None:
                    report.notices["stored, not in the catalog (an interrupted sync)"] += 1
                elif record.version > version:
                    fault(f"the catalog records version {record.version}, the store has {version}")
                elif record.version < version:
                    report.notices["stored ahead of the catalog (an interrupted sync)"] += 1
                elif meta.get("schema_version") != record.schema_version:
                    fault("_meta schema_version differs from the catalog's")
        for entity_id in sorted(set(known) - seen):
            report.faults.append(
                Fault(entity_type, entity_id, "in the catalog but not in the store")
            )
    return report
