"""`lamina with-local-ray -- COMMAND`, which `make run` wraps `dvc repro` in: a real local Ray
that COMMAND's stages join, stopped when COMMAND ends, COMMAND's exit status passed on."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time

import psutil
import pytest

from tests.conftest import run, venv_env

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


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _alive(process: psutil.Process) -> bool:
    """Running, and not a zombie that nobody reaped (its parent, the wrapper, was killed)."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _runs_sleep(process: psutil.Process) -> bool:
    try:
        return process.name() == "sleep"
    except psutil.NoSuchProcess:
        return False


def test_a_sigkilled_wrapper_takes_its_ray_and_command_with_it(tmp_path):
    wrapper = subprocess.Popen(
        ["lamina", "--root", str(tmp_path), "with-local-ray", "--", "sleep", "600"],
        cwd=tmp_path,
        env=venv_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    started: list[psutil.Process] = []
    try:
        output = ""
        for line in wrapper.stdout:  # the command starts right after this line
            output += line
            if line.startswith("Ray dashboard, while this runs"):
                break
        assert wrapper.poll() is None, output[-2000:]
        deadline = time.monotonic() + 30
        while not any(_runs_sleep(p) for p in _descendants(wrapper.pid)):
            assert time.monotonic() < deadline, "the command did not start"
            time.sleep(0.2)
        # The Ray node and its processes, the command, the watchdog.
        started = _descendants(wrapper.pid)
        assert len(started) > 3, started
        wrapper.kill()
        wrapper.wait()
        deadline = time.monotonic() + 30
        while (left := [p for p in started if _alive(p)]) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not left, [(p.pid, p.name()) for p in left]
    finally:
        wrapper.kill()
        for process in filter(_alive, started):
            process.kill()
