"""Write stage outputs so that an interrupted stage leaves nothing DVC could take as complete.

Everything is written under a temporary sibling and moved into place with one `os.replace`
once it is whole.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path next to `final`; on success it replaces `final`, else vanishes."""
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    _remove(staging)
    try:
        yield staging
        if not staging.exists():
            raise RuntimeError(f"stage wrote nothing to {final}")
        _remove(final)
        os.replace(staging, final)
    finally:
        _remove(staging)


def atomic_write_text(final: Path, text: str) -> None:
    with atomic_path(final) as staging:
        staging.write_text(text)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
