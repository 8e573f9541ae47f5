"""Re-seal every stored entity under the current store key, then retire the keys left unused.

`fabric store rotate-key` runs this. A new key goes first in the key file; every blob sealed
under another key is opened and sealed again under it, a batch per transaction, at the same
version (its content is unchanged). Until the last blob is re-sealed the old keys stay in the
ring, so every entity keeps opening whatever moment the rotation is stopped at; running it
again (``resume``) carries on where it stopped. The rotation ends with a pass over the blob
headers: only keys no blob names any more are dropped from the key file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from fabric.config.secrets import add_store_key, load_secrets, retire_store_keys
from fabric.crypto import MASTER_KEY_ID
from fabric.errors import ConfigError, StaleWriteError
from fabric.project import Project
from fabric.store.base import StoredBlob
from fabric.store.codec import BlobCodec, key_id_of

__all__ = ["RotationReport", "rotate_store_key"]

Progress = Callable[[str, int, int | None], None]

#: Passes over the store before giving up on blobs a concurrent sync keeps rewriting.
_PASSES = 3


@dataclass
class RotationReport:
    """What a rotation did."""

    key_id: str
    resealed: int = 0
    already: int = 0
    #: key ids dropped from the key file (no blob used them any more)
    retired: list[str] = field(default_factory=list)
    #: key ids no blob uses any more but that live in the environment (the operator drops them)
    unused: list[str] = field(default_factory=list)


def _reseal_pass(
    project: Project, codec: BlobCodec, report: RotationReport, progress: Progress
) -> int:
    """Re-seal every blob not under the current key; return how many were left behind."""
    assert codec.keys is not None
    current = codec.keys.current
    store, batch_size = project.store, project.config.store.batch_size
    left = 0

    def write(batch: list[StoredBlob]) -> None:
        nonlocal left
        try:
            store.put_many(batch)
        except StaleWriteError:
            # A sync wrote some of these meanwhile (under the key it had loaded): one at a
            # time, skipping those; the next pass looks at them again.
            for item in batch:
                try:
                    store.put_many([item])
                except StaleWriteError:
                    left += 1
                    report.resealed -= 1
        report.resealed += len(batch)
        progress("re-seal", len(batch), None)

    for entity_type in project.config.entities:
        for partition in range(store.partitions):
            batch: list[StoredBlob] = []
            for stored in store.scan(entity_type, partition):
                if key_id_of(stored.blob) == current:
                    report.already += 1
                    continue
                # Only the encryption changes: the compressed image stays byte for byte.
                blob = codec.reseal(stored.blob, entity_type, stored.entity_id, stored.version)
                batch.append(
                    StoredBlob(
                        entity_type,
                        stored.entity_id,
                        stored.version,
                        blob,
                        expected_version=stored.version,
                    )
                )
                if len(batch) >= batch_size:
                    write(batch)
                    batch = []
            if batch:
                write(batch)
    return left


def _reseal_dictionaries(project: Project, codec: BlobCodec) -> None:
    """Seal every compression dictionary under the current key (they are few and small)."""
    assert codec.keys is not None
    for record in project.catalog.dictionaries():
        if BlobCodec.dictionary_key_id(record.sealed) != codec.keys.current:
            data = codec.open_dictionary(record.dict_id, record.sealed)
            project.catalog.reseal_dictionary(
                record.dict_id, codec.seal_dictionary(record.dict_id, data)
            )


def _key_ids_in_use(project: Project) -> set[str]:
    found = {
        key_id_of(stored.blob) or ""
        for entity_type in project.config.entities
        for stored in project.store.scan(entity_type)
    }
    for record in project.catalog.dictionaries():
        found.add(BlobCodec.dictionary_key_id(record.sealed) or "")
    return found


def rotate_store_key(
    project: Project, *, new_key: bool = True, progress: Progress | None = None
) -> RotationReport:
    """Put a new store key in the key file (unless ``new_key`` is False) and re-seal under it.

    Raises:
        ConfigError: no key at all, or a new key was asked for while the store keys come
            from the environment (the operator adds it there, then resumes).
    """
    progress = progress or (lambda stage, n, total: None)
    config = project.config
    secrets = load_secrets(config)
    if new_key:
        if secrets.store_keys_from == "env":
            raise ConfigError(
                f"the store keys come from the environment variable "
                f"{config.secrets.store_keys_env}: put the new key first there "
                "(ID:BASE64,...), then run `fabric store rotate-key --resume`"
            )
        if not secrets.master_key and not secrets.store_keys:
            raise ConfigError(
                "the store is not encrypted (no master key): set one before rotating keys"
            )
        add_store_key(config)
        secrets = load_secrets(config)
    ring = secrets.key_ring
    if ring is None:
        raise ConfigError("no store key is configured: nothing to rotate to")
    codec = BlobCodec(ring, project.codec.dictionaries)
    report = RotationReport(ring.current)
    _reseal_dictionaries(project, codec)
    for _ in range(_PASSES):
        if _reseal_pass(project, codec, report, progress) == 0:
            break
    in_use = _key_ids_in_use(project)
    # The master key is never dropped: it keys masking and the identity index too.
    unused = sorted(set(ring.keys) - in_use - {ring.current, MASTER_KEY_ID})
    if any(key_id != ring.current for key_id in in_use):
        return report  # a sync kept rewriting entities under an old key: run again later
    if secrets.store_keys_from == "file":
        report.retired = retire_store_keys(config, in_use)
    report.unused = [k for k in unused if k not in report.retired]
    return report
