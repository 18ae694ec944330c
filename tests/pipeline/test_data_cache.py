"""The DVC cache cannot be changed through data/: an edited raw file is a change DVC sees.

Each test builds a small DVC repository with the project's .dvc/config: data/ as data.dvc
tracks it, and a stage that depends on it. Editing a raw file in place must show in
`dvc status`, rerun what depends on it, and leave every cache object hashing to its name.
Workspaces that an older config checked out as links into the cache are repaired by
`lamina data ensure`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, git, run

pytestmark = pytest.mark.slow

SERIES = "data/co2/co2.csv"
EDIT = "2002-01-05,371.0\n"
RECORDED = "date,co2\n2002-01-01,370.0\n"


def _dvc(repo: Path, *args: str) -> str:
    result = run(["dvc", *args], repo)
    assert result.returncode == 0, (args, result.stdout[-2000:], result.stderr[-2000:])
    return result.stdout


def _repository(tmp_path: Path, link_with: str | None = None) -> Path:
    """data/ tracked by data.dvc and a stage `rows` that depends on it, run once; checked out
    with the project's cache type, or linked (`link_with`: hardlink or symlink) as older
    configs did."""
    repo = tmp_path / "repo"
    (repo / "data" / "co2").mkdir(parents=True)
    git(repo, "init", "-q")
    _dvc(repo, "init", "-q")
    shutil.copyfile(REPO_ROOT / ".dvc" / "config", repo / ".dvc" / "config")
    if link_with:
        _dvc(repo, "config", "--local", "cache.type", link_with)
    (repo / SERIES).write_text(RECORDED)
    (repo / "data" / "labels.txt").write_text("0\n1\n")
    (repo / "dvc.yaml").write_text(
        "stages:\n  rows:\n    cmd: wc -l data/co2/co2.csv > rows.txt\n"
        "    deps: [data]\n    outs: [rows.txt]\n"
    )
    _dvc(repo, "add", "-q", "data")
    _dvc(repo, "repro", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "data")
    return repo


def _append_to_series(repo: Path) -> None:
    with (repo / SERIES).open("a") as series:
        series.write(EDIT)


def _cache_objects_hash_to_their_names(repo: Path) -> None:
    objects = [p for p in (repo / ".dvc" / "cache" / "files" / "md5").glob("*/*") if not p.suffix]
    assert objects
    for path in objects:
        assert hashlib.md5(path.read_bytes()).hexdigest() == path.parent.name + path.name, path


def _links_in_data(repo: Path) -> list[Path]:
    files = [path for path in (repo / "data").rglob("*") if not path.is_dir()]
    return [path for path in files if path.is_symlink() or path.stat().st_nlink > 1]


def test_an_edited_raw_file_is_a_change_and_the_cache_keeps_the_recorded_version(tmp_path):
    repo = _repository(tmp_path)
    assert _links_in_data(repo) == []
    _append_to_series(repo)

    status = json.loads(_dvc(repo, "status", "--json"))
    assert status["data.dvc"] == [{"changed outs": {"data": "modified"}}], status
    assert "rows" in status, status
    assert "Running stage 'rows'" in _dvc(repo, "repro", "--dry")
    _cache_objects_hash_to_their_names(repo)
    _dvc(repo, "checkout", "--force", "data.dvc")
    assert (repo / SERIES).read_text() == RECORDED


@pytest.mark.parametrize("link_with", ["hardlink", "symlink"])
def test_ensure_gives_files_linked_into_the_cache_copies_of_their_own(tmp_path, link_with):
    repo = _repository(tmp_path, link_with)
    assert len(_links_in_data(repo)) == 2
    (repo / ".dvc" / "config.local").unlink()  # the project's config from now on

    ensured = run(["lamina", "data", "ensure"], repo)
    assert ensured.returncode == 0, ensured.stderr
    assert "present" in ensured.stdout
    assert _links_in_data(repo) == []
    _append_to_series(repo)
    _cache_objects_hash_to_their_names(repo)
    assert (
        "data"
        in json.loads(_dvc(repo, "status", "--json", "data.dvc"))["data.dvc"][0]["changed outs"]
    )


def test_ensure_removes_a_cache_object_an_edit_changed_and_keeps_the_edit(tmp_path):
    repo = _repository(tmp_path, "hardlink")
    _append_to_series(repo)  # through the link: the cache object changes too
    (repo / ".dvc" / "config.local").unlink()

    ensured = run(["lamina", "data", "ensure"], repo)
    lines = ensured.stderr.strip().splitlines()
    assert ensured.returncode == 2 and len(lines) == 1, ensured.stderr
    assert f"{SERIES}: edited in place through a link into the DVC cache" in lines[0]
    assert "`dvc add data`" in lines[0] and "`lamina data ensure`" in lines[0]
    assert (repo / SERIES).read_text() == RECORDED + EDIT
    assert _links_in_data(repo) == []
    _cache_objects_hash_to_their_names(repo)

    status = json.loads(_dvc(repo, "status", "--json", "data.dvc"))
    assert status["data.dvc"], status
    _dvc(repo, "add", "-q", "data")  # the user keeps the edit
    assert json.loads(_dvc(repo, "status", "--json", "data.dvc")) == {}
    _cache_objects_hash_to_their_names(repo)
