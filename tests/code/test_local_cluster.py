"""The local multi-node Ray cluster's set-up, without starting Ray: what its nodes are given."""

from __future__ import annotations

import re
import subprocess
from itertools import chain

import pytest

import lamina.cluster.local_ray as local_ray
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
