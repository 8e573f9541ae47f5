"""I/O faults: a write or sync of a shard file that fails leaves the store consistent and says so.

An apsw VFS over the default one fails the N-th write (or sync) of a shard file or its WAL, the
way a full disk or a dying device would. For several N, a full sync that rewrites every entity
must stop with a clear message (on the CLI: one line, exit 1), `verify` must pass, every entity
must read exactly as before, and the next sync must complete.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apsw
import pytest
from click.testing import CliRunner
from e2e_helpers import clear_tables

import fabric.store.local
from fabric.cli import main
from fabric.errors import StoreError
from fabric.project import Project
from fabric.services.verify import verify_store
from fabric.store.sqlite import open_database
from fabric.sync import sync_project

VFS_NAME = "fabric-faulty"


class _Faults:
    """Which operation to fail: the ``fail_at``-th write (or sync) of a shard file."""

    def __init__(self) -> None:
        self.kind = "write"
        self.fail_at = 0  # 0: never
        self.seen = 0

    def arm(self, kind: str, fail_at: int) -> None:
        self.kind, self.fail_at, self.seen = kind, fail_at, 0

    def hit(self, kind: str, filename: str) -> None:
        if kind != self.kind or "shard-" not in filename or not self.fail_at:
            return
        self.seen += 1
        if self.seen == self.fail_at:
            raise apsw.IOError(f"injected {kind} failure")


FAULTS = _Faults()


class _FaultyFile(apsw.VFSFile):
    def __init__(self, base: str, name: Any, flags: list[int]) -> None:
        super().__init__(base, name, flags)
        self._name = name.filename() if isinstance(name, apsw.URIFilename) else str(name)

    def xWrite(self, data: bytes, offset: int) -> None:
        FAULTS.hit("write", self._name)
        super().xWrite(data, offset)

    def xSync(self, flags: int) -> None:
        FAULTS.hit("sync", self._name)
        super().xSync(flags)


class _FaultyVFS(apsw.VFS):
    def __init__(self) -> None:
        super().__init__(VFS_NAME, "")

    def xOpen(self, name: Any, flags: list[int]) -> apsw.VFSFile:
        return _FaultyFile("", name, flags)


@pytest.fixture(scope="module")
def faulty_vfs() -> Iterator[_FaultyVFS]:
    vfs = _FaultyVFS()
    yield vfs
    vfs.unregister()


@pytest.mark.parametrize(
    ("kind", "fail_at"), [("write", 1), ("write", 7), ("write", 40), ("sync", 1), ("sync", 3)]
)
def test_a_failing_shard_write_leaves_the_store_consistent(
    synced: Path,
    faulty_vfs: _FaultyVFS,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
    fail_at: int,
) -> None:
    before = clear_tables(synced)
    # Small batches: many transactions, so the fault lands between commits as well.
    synced.write_text(synced.read_text().replace("batch_size: 500", "batch_size: 20"))
    monkeypatch.setattr(
        fabric.store.local, "open_database", functools.partial(open_database, vfs=VFS_NAME)
    )
    FAULTS.arm(kind, fail_at)
    with Project.open(synced) as project, pytest.raises(StoreError) as failed:
        sync_project(project, full=True)
    assert FAULTS.seen >= fail_at, "the fault was never reached: nothing was tested"
    message = str(failed.value)
    assert "cannot write to the entity store at" in message
    assert f"injected {kind} failure (IOError)" in message
    FAULTS.arm(kind, 0)
    monkeypatch.undo()

    with Project.open(synced) as project:
        report = verify_store(project)
        assert report.ok, [str(f) for f in report.faults[:5]]
        assert project.catalog.runs(1)[0].status == "failed"
    assert clear_tables(synced) == before
    with Project.open(synced) as project:
        sync_project(project)  # a failed run is followed by a full one
        report = verify_store(project)
        assert report.ok and not report.notices
    assert clear_tables(synced) == before


def test_the_cli_reports_an_io_fault_in_one_line(
    synced: Path, faulty_vfs: _FaultyVFS, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        fabric.store.local, "open_database", functools.partial(open_database, vfs=VFS_NAME)
    )
    FAULTS.arm("write", 3)
    try:
        result = CliRunner().invoke(main, ["sync", "--full", "-c", str(synced)])
    finally:
        FAULTS.arm("write", 0)
    assert result.exit_code == 1
    assert result.output.startswith("error: cannot write to the entity store at ")
    assert "Traceback" not in result.output
