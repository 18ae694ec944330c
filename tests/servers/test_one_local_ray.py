"""`lamina with-local-ray -- COMMAND`, which `make run` wraps `dvc repro` in: a real local Ray
that COMMAND's stages join, stopped when COMMAND ends, COMMAND's exit status passed on."""

from __future__ import annotations

import os
import re
import socket
import sys

import pytest

from tests.conftest import run

pytestmark = pytest.mark.slow

# What a stage does: `ray.init()` joins the Ray that RAY_ADDRESS names. A task on it reports
# what Ray Train's controller would read: whether preemption watching is on.
JOIN_AND_FAIL = (
    "import os, sys, ray; ray.init(); "
    "print('CPUS', ray.cluster_resources()['CPU']); "
    "watcher = ray.remote(lambda: os.environ.get('RAY_TRAIN_ENABLE_PREEMPTION_WATCHER')); "
    "print('WATCHER', ray.get(watcher.remote())); "
    "print('ADDRESS', os.environ['RAY_ADDRESS']); sys.exit(3)"
)


def test_the_command_joins_one_ray_that_is_stopped_when_it_ends(tmp_path):
    command = [sys.executable, "-c", JOIN_AND_FAIL]
    result = run(["lamina", "--root", str(tmp_path), "with-local-ray", "--", *command], tmp_path)

    assert result.returncode == 3, result.stderr[-2000:]
    assert f"CPUS {float(max(2, os.cpu_count() or 1))}" in result.stdout
    assert "WATCHER 0" in result.stdout  # no node of a one-machine Ray can be preempted
    assert re.search(r"Ray dashboard, while this runs: http://127\.0\.0\.1:\d+", result.stdout)
    assert (tmp_path / ".lamina" / "local-ray" / "node-0.log").is_file()
    host, port = re.search(r"ADDRESS (\S+)", result.stdout)[1].rsplit(":", 1)
    with pytest.raises(ConnectionRefusedError):  # the cluster's GCS is gone
        socket.create_connection((host, int(port)), timeout=5).close()


def test_with_ray_address_set_the_command_runs_on_that_cluster(tmp_path):
    command = [sys.executable, "-c", "import os; print('ADDRESS', os.environ['RAY_ADDRESS'])"]
    result = run(
        ["lamina", "--root", str(tmp_path), "with-local-ray", "--", *command],
        tmp_path,
        RAY_ADDRESS="127.0.0.1:6379",
    )

    assert result.returncode == 0, result.stderr[-2000:]
    assert "ADDRESS 127.0.0.1:6379" in result.stdout
    assert "starting one local Ray" not in result.stdout
    assert not (tmp_path / ".lamina").exists()


def test_no_command_is_a_one_line_error(tmp_path):
    result = run(["lamina", "with-local-ray"], tmp_path)

    assert result.returncode == 2
    assert result.stderr.strip() == (
        "lamina: error: no command to run: give one after --, e.g. -- dvc repro"
    )
