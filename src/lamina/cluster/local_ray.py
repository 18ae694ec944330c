"""A multi-node Ray cluster on this one machine: a head and worker nodes, each a `ray start`.

For the tests and benchmarks that need real nodes (jobs, workers spread over nodes) and for
trying `lamina submit` before a real cluster exists. Every port is chosen free; each node runs
`ray start --block` in its own process group, so `stop` ends exactly these processes (never
`ray stop`, which would end every Ray on the machine). A watchdog process ends them too if the
process that started them dies without stopping them, even by SIGKILL (group_watchdog.py).

The dashboard (Jobs and State APIs) listens on 127.0.0.1 only. Ray's own node services do
not: Ray replaces a loopback node address with the machine's network address (`ray start`
resolves 127.0.0.1 away, so that other nodes could join), which is why the cluster gets a
token of its own and Ray's token auth.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from lamina.cluster.group_watchdog import GroupWatchdog
from lamina.cluster.ray_runtime import ONE_MACHINE_RAY_ENV, free_local_port
from lamina.errors import LaminaError

HOST = "127.0.0.1"


@dataclass
class LocalCluster:
    """`nodes` CPU counts: the first is the head's. Logs go to `log_dir`."""

    log_dir: Path
    nodes: tuple[int, ...] = (2, 2)
    object_store_mb: int = 256
    gcs_port: int = 0
    dashboard_port: int = 0
    processes: list[subprocess.Popen] = field(default_factory=list)
    _ports_taken: set[int] = field(default_factory=set, repr=False)
    watchdog: GroupWatchdog | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.gcs_port = self.gcs_port or self._new_port()
        self.dashboard_port = self.dashboard_port or self._new_port()
        self._ports_taken |= {self.gcs_port, self.dashboard_port}

    def _new_port(self) -> int:
        """A free port that no node of this cluster has been given yet. A port probed free
        is released again until Ray binds it, so two probes in a row can return the same
        one; Ray refuses to start when two of its components share a port."""
        while (port := free_local_port()) in self._ports_taken:
            pass
        self._ports_taken.add(port)
        return port

    @property
    def address(self) -> str:
        """What `ray.init(address=...)` and RAY_ADDRESS take."""
        return f"{HOST}:{self.gcs_port}"

    @property
    def dashboard_url(self) -> str:
        """What the Jobs API (`lamina submit --address`) and the State API take."""
        return f"http://{HOST}:{self.dashboard_port}"

    def start(self, timeout_s: float = 120.0) -> LocalCluster:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        # Ray's token auth, with a token of this cluster's own: anyone who can reach a Ray
        # cluster can run code on it, so even a local one does not go without.
        self._token_path.write_text(secrets.token_hex(32))
        self._token_path.chmod(0o600)
        self.watchdog = GroupWatchdog()
        try:
            for index, num_cpus in enumerate(self.nodes):
                self.processes.append(self._start_node(index, num_cpus))
                # SIGTERM: `ray start --block` then stops the processes of its node itself.
                self.watchdog.watch(self.processes[-1].pid, signal.SIGTERM)
                self._wait_for_nodes(index + 1, timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        """End each node's process group, workers first, the head last."""
        for process in reversed(self.processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
        self.processes.clear()
        if self.watchdog is not None:
            self.watchdog.release()
            self.watchdog = None
        self._forget_bootstrap_address()

    def _forget_bootstrap_address(self) -> None:
        """`ray start --head` names itself the machine's default cluster (a file that a plain
        `ray.init()` connects to); `ray stop` would remove it, killing the nodes does not."""
        current = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
        try:
            if current.read_text().strip().endswith(f":{self.gcs_port}"):
                current.unlink()
        except OSError:
            pass

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def _start_node(self, index: int, num_cpus: int) -> subprocess.Popen:
        ray = str(Path(sys.executable).parent / "ray")
        command = [
            ray, "start", "--block", "--disable-usage-stats",
            f"--num-cpus={num_cpus}",
            "--num-gpus=0",
            f"--object-store-memory={self.object_store_mb * 1024**2}",
            # Two nodes on one machine: every per-node port must differ, not only the head's.
            f"--node-manager-port={self._new_port()}",
            f"--object-manager-port={self._new_port()}",
            f"--dashboard-agent-listen-port={self._new_port()}",
            f"--dashboard-agent-grpc-port={self._new_port()}",
            f"--runtime-env-agent-port={self._new_port()}",
            f"--metrics-export-port={self._new_port()}",
        ]  # fmt: skip
        if index == 0:
            command += [
                "--head",
                f"--port={self.gcs_port}",
                "--include-dashboard=true",
                f"--dashboard-host={HOST}",
                f"--dashboard-port={self.dashboard_port}",
                f"--ray-client-server-port={self._new_port()}",
            ]
        else:
            command.append(f"--address={self.address}")
        env = dict(os.environ)
        env.pop("RAY_ADDRESS", None)
        # The cluster's processes find the State API by scanning for local clusters, which
        # fails when another Ray runs on the machine: name this one (see ray_runtime.init_ray).
        env["RAY_API_SERVER_ADDRESS"] = self.dashboard_url
        env.update(self.client_env)
        # On SIGTERM a node waits up to 30 s for its work to drain; nothing here needs that.
        env["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"] = "2"
        for name, value in ONE_MACHINE_RAY_ENV.items():
            env.setdefault(name, value)
        env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
        log = open(self.log_dir / f"node-{index}.log", "wb")  # noqa: SIM115 (the node keeps it)
        return subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )

    @property
    def client_env(self) -> dict[str, str]:
        """The variables a client (`lamina submit`, `ray job ...`) needs to be let in."""
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self._token_path)}

    @property
    def _token_path(self) -> Path:
        return self.log_dir / "auth_token"

    def get_json(self, path: str, timeout_s: float = 10.0):
        """GET a dashboard endpoint (e.g. Ray's State API under `/api/v0/`) with the token."""
        request = urllib.request.Request(
            self.dashboard_url + path,
            headers={"Authorization": f"Bearer {self._token_path.read_text().strip()}"},
        )
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return json.load(response)

    def _wait_for_nodes(self, count: int, timeout_s: float) -> None:
        """Until the dashboard answers and `count` nodes are alive."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for index, process in enumerate(self.processes):
                if process.poll() is not None:
                    log = self.log_dir / f"node-{index}.log"
                    raise LaminaError(
                        f"Ray node {index} exited ({process.returncode}): "
                        f"{_last_line(log)} (whole log: {log})"
                    )
            try:
                nodes = self.get_json("/api/v0/nodes?limit=100")["data"]["result"]["result"]
                if sum(node["state"] == "ALIVE" for node in nodes) >= count:
                    return
            except (OSError, ValueError, KeyError):  # not up yet
                pass
            time.sleep(1.0)
        raise LaminaError(
            f"the local Ray cluster did not reach {count} nodes in {timeout_s:.0f} s; "
            f"see the logs in {self.log_dir}"
        )


def _last_line(log: Path) -> str:
    """The line that says why a node ended: the last one Ray wrote."""
    try:
        lines = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    return lines[-1] if lines else "empty log"


def run_on_one_local_ray(command: list[str], log_dir: Path) -> int:
    """Run `command` (`dvc repro`) with one local Ray that all its stages join, and stop that
    Ray when the command ends, however it ends. Returns the command's exit status.

    A stage on its own starts a Ray of its own and stops it again: 5 to 9 s of its start-up
    and 1.5 s of its end, paid by each of the 14 stages of the default pipeline that run Ray.
    Joining a Ray already up takes under a second. `RAY_ADDRESS` already set: the stages join
    that cluster, and nothing is started here.
    """
    if not command:
        raise LaminaError("no command to run: give one after --, e.g. -- dvc repro")
    if os.environ.get("RAY_ADDRESS"):
        return subprocess.call(command)
    cluster = LocalCluster(log_dir, nodes=(max(2, os.cpu_count() or 1),), object_store_mb=512)
    print(f"starting one local Ray for every stage (logs: {log_dir})", flush=True)
    with cluster:
        print(f"Ray dashboard, while this runs: {cluster.dashboard_url}", flush=True)
        env = {**os.environ, "RAY_ADDRESS": cluster.address, **cluster.client_env}
        # A process group of its own, so that the command and everything it starts (DVC's
        # stages) can be ended as a whole: the cluster's watchdog does, with the Ctrl-C the
        # command expects, if this process is killed. (The command is then not in the
        # terminal's foreground group: it cannot read from the terminal.)
        process = subprocess.Popen(command, env=env, process_group=0)
        cluster.watchdog.watch(process.pid, signal.SIGINT)
        while True:
            try:
                return process.wait()
            except KeyboardInterrupt:
                # Passed on; wait for the command's own clean-up before the cluster goes.
                with contextlib.suppress(ProcessLookupError):  # the command just ended
                    os.killpg(process.pid, signal.SIGINT)
