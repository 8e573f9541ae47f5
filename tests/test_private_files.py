"""Files holding entity data are owner-only from their creation, and whole or absent."""

from __future__ import annotations

from pathlib import Path

import pytest

from fabric.files import open_private, private_dir, write_private


def test_written_files_and_made_directories_are_owner_only(tmp_path: Path) -> None:
    target = tmp_path / "new" / "deeper" / "out.csv"
    write_private(target, "a,b\n")
    assert target.read_text() == "a,b\n" and target.stat().st_mode & 0o777 == 0o600
    for directory in (tmp_path / "new", tmp_path / "new" / "deeper"):
        assert directory.stat().st_mode & 0o777 == 0o700
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    private_dir(shared / "x")
    assert shared.stat().st_mode & 0o777 == 0o755  # not ours to change


def test_a_file_being_written_is_owner_only_and_a_failed_one_never_appears(
    tmp_path: Path,
) -> None:
    target = tmp_path / "out.csv"
    with pytest.raises(RuntimeError), open_private(target) as handle:
        handle.write("half")
        (temp,) = [p for p in tmp_path.iterdir() if p.name.startswith(".out.csv.")]
        assert temp.stat().st_mode & 0o777 == 0o600
        raise RuntimeError("stopped")
    assert list(tmp_path.iterdir()) == []
