"""Write outputs so that an interrupted stage or command leaves nothing DVC could take as complete.

Everything is written under a temporary sibling and moved into place with one `os.replace`
once it is whole. Only a stage's own output folder is ever removed: a file never replaces a
folder, which would take the folder's files with it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from lamina.errors import LaminaError


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path next to `final`; on success it replaces `final`, else vanishes.

    What the caller writes there says what it owns: a folder replaces whatever is at `final`
    (a stage's declared output folder); a file replaces a file or a link, in one rename, and
    refuses a folder.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    _remove(staging)
    try:
        yield staging
        if not staging.exists():
            raise RuntimeError(f"stage wrote nothing to {final}")
        if staging.is_dir():
            _remove(final)  # a rename cannot replace a folder that holds files
        elif is_folder(final):
            raise LaminaError(f"{final}: is a folder, not replaced by a file; move it away")
        os.replace(staging, final)
    finally:
        _remove(staging)


def atomic_write_text(final: Path, text: str) -> None:
    with atomic_path(final) as staging:
        staging.write_text(text)


def check_output_target(path: Path, *, overwrite: bool) -> None:
    """A command's output, named by its user: never a folder, and an existing file only when
    the user asked to replace it (`--overwrite`). Checked before any work starts."""
    if is_folder(path):
        raise LaminaError(f"{path}: is a folder; name a file to write")
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise LaminaError(f"{path}: exists; pass --overwrite to replace it, or name another file")


def is_folder(path: Path) -> bool:
    """A real folder, not a link to one (replacing a link leaves its target alone)."""
    return path.is_dir() and not path.is_symlink()


def _remove(path: Path) -> None:
    if is_folder(path):
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
