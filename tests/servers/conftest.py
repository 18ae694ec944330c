"""Servers the tests start for real on 127.0.0.1, and stop by PID when the module is done."""

from __future__ import annotations

import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from lamina.tracking.server import ServerStatus, start, stop


def free_ports(count: int) -> list[int]:
    """Ports nothing listens on now, all different (each probe is held until all are found)."""
    with ExitStack() as stack:
        probes = [stack.enter_context(socket.socket()) for _ in range(count)]
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]


@pytest.fixture(scope="module")
def mlflow_server() -> Iterator[ServerStatus]:
    """A PostgreSQL-backed `mlflow server` in a fresh project folder, one per test module.

    `.uri` is its tracking URI, `.files` its state (artifacts, logs), `.files.root` the project
    folder for `lamina.tracking.server.stop`. Not under pytest's tmp_path: as root, PostgreSQL
    runs as the `postgres` user, who cannot enter /tmp/pytest-of-root (mode 0700).
    """
    root = Path(tempfile.mkdtemp(prefix="lamina-mlflow-server-"))
    root.chmod(0o755)
    port, pg_port = free_ports(2)
    try:
        yield start(root, port=port, pg_port=pg_port)
    finally:
        stop(root)
        shutil.rmtree(root, ignore_errors=True)
