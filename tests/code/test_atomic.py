"""`atomic_path`: outputs appear whole or not at all, and only what the caller owns is removed."""

from __future__ import annotations

from pathlib import Path

import pytest

from lamina.atomic import atomic_path, atomic_write_text
from lamina.errors import LaminaError


def _staging_left(folder: Path) -> list[str]:
    return [path.name for path in folder.iterdir() if ".tmp-" in path.name]


def test_a_file_replaces_a_file(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("old")
    atomic_write_text(target, "new")
    assert target.read_text() == "new" and _staging_left(tmp_path) == []


def test_a_folder_replaces_the_stages_own_folder(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "stale.pt").write_text("old weights")
    with atomic_path(target) as staging:
        staging.mkdir()
        (staging / "model.pt").write_text("new weights")
    assert [path.name for path in target.iterdir()] == ["model.pt"]
    assert _staging_left(tmp_path) == []


def test_a_file_never_replaces_a_folder(tmp_path):
    users = tmp_path / "samples.npy"
    users.mkdir()
    (users / "keep.txt").write_text("the user's")
    refused = r"samples\.npy: is a folder, not replaced by a file"
    with pytest.raises(LaminaError, match=refused), atomic_path(users) as staging:
        staging.write_bytes(b"generated")
    assert (users / "keep.txt").read_text() == "the user's"
    assert _staging_left(tmp_path) == []


def test_a_file_replaces_a_link_not_its_target(tmp_path):
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    (folder / "keep.txt").write_text("the user's")
    link = tmp_path / "out.csv"
    link.symlink_to(folder)
    atomic_write_text(link, "rows")
    assert not link.is_symlink() and link.read_text() == "rows"
    assert (folder / "keep.txt").read_text() == "the user's"


def test_a_failure_leaves_the_old_output_and_no_staging(tmp_path):
    target = tmp_path / "history.csv"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as staging:
        staging.write_text("half")
        raise KeyboardInterrupt
    assert target.read_text() == "old" and _staging_left(tmp_path) == []
