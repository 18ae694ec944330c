"""The local multi-node Ray cluster's set-up, without starting Ray: what its nodes are given,
and the watchdog that ends them with the process that started them."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from itertools import chain

import psutil
import pytest

import lamina.cluster.local_ray as local_ray
from lamina.cluster.group_watchdog import GroupWatchdog
from lamina.cluster.local_ray import LocalCluster
from lamina.errors import LaminaError


def test_every_port_of_every_node_differs_even_when_the_os_offers_one_twice(tmp_path, monkeypatch):
    # The OS hands out a released port again at will; Ray then refuses to start (CI saw
    # runtime_env_agent and metrics_export both given 41629).
    offered = chain([41629, 41629, 41629, 50000], range(50001, 50100))
    monkeypatch.setattr(local_ray, "free_local_port", lambda: next(offered))
    commands = []
    monkeypatch.setattr(subprocess, "Popen", lambda command, **_: commands.append(command))
    cluster = LocalCluster(tmp_path, nodes=(2, 2))
    for index, cpus in enumerate(cluster.nodes):
        cluster._start_node(index, cpus)
    ports = [int(port) for port in re.findall(r"port=(\d+)", " ".join(chain(*commands)))]
    given = [port for port in ports if port != cluster.gcs_port]  # workers join at the GCS
    assert len(given) == len(set(given)) == 2 * 6 + 3 - 1, ports
    assert cluster.gcs_port != cluster.dashboard_port


def test_a_node_that_exits_at_start_says_why_in_the_error(tmp_path):
    cluster = LocalCluster(tmp_path, nodes=(1,))
    (tmp_path / "node-0.log").write_text("starting\nValueError: port 41629 is used twice\n")
    cluster.processes.append(subprocess.Popen(["false"]))
    cluster.processes[0].wait()
    with pytest.raises(LaminaError) as error:
        cluster._wait_for_nodes(1, timeout_s=5)
    assert "ValueError: port 41629 is used twice" in str(error.value)
    assert str(tmp_path / "node-0.log") in str(error.value)


# A process that watches `sleep 600` in a process group of its own, as `with-local-ray` watches
# its command, and prints the group's id.
WATCHER = (
    "import signal, subprocess, time\n"
    "from lamina.cluster.group_watchdog import GroupWatchdog\n"
    "watchdog = GroupWatchdog()\n"
    "child = subprocess.Popen(['sleep', '600'], process_group=0)\n"
    "watchdog.watch(child.pid, signal.SIGTERM)\n"
    "print(child.pid, flush=True)\n"
    "time.sleep(600)\n"
)


def _group_alive(process_group: int) -> bool:
    """Any process of the group left that is not a zombie waiting for its reaper."""
    return any(
        process.info["status"] != psutil.STATUS_ZOMBIE
        for process in psutil.process_iter(["status"])
        if _group_of(process) == process_group
    )


def _group_of(process: psutil.Process) -> int | None:
    try:
        return os.getpgid(process.pid)
    except OSError:
        return None


def test_the_watchdog_ends_the_groups_of_a_process_killed_with_sigkill():
    watcher = subprocess.Popen([sys.executable, "-c", WATCHER], stdout=subprocess.PIPE, text=True)
    process_group = int(watcher.stdout.readline())
    try:
        assert _group_alive(process_group)
        watcher.kill()  # SIGKILL: the watcher itself cleans up nothing
        watcher.wait()
        deadline = time.monotonic() + 15
        while _group_alive(process_group):
            assert time.monotonic() < deadline, "the watched group outlived its watcher"
            time.sleep(0.1)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process_group, signal.SIGKILL)


def test_a_released_watchdog_leaves_the_groups_alone():
    watchdog = GroupWatchdog()
    child = subprocess.Popen(["sleep", "600"], process_group=0)
    try:
        watchdog.watch(child.pid, signal.SIGTERM)
        watchdog.release()
        assert child.poll() is None
    finally:
        child.kill()
        child.wait()
