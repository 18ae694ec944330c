"""Start a local Ray, or connect to a cluster, in the one way every stage does it."""

from __future__ import annotations

import logging
import os
import socket
import sys
from pathlib import Path

from lamina.config.schema import ClusterConfig
from lamina.errors import ClusterError

logger = logging.getLogger(__name__)

TRAIN_POLL_INTERVAL_S = 0.25

# For a Ray whose nodes all run on this machine, where no node can be preempted (a cloud
# reclaiming a spot instance): Ray Train's preemption watcher is then one more actor process
# per fit with nothing to watch, which slows every fit (docs/benchmarks.md). Processes inherit
# these from their node (`ray start` or a stage's own `ray.init`).
ONE_MACHINE_RAY_ENV = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}


def ray_address(cluster: ClusterConfig) -> str | None:
    """`RAY_ADDRESS` wins over the config, so one preset runs locally and on a cluster."""
    return os.environ.get("RAY_ADDRESS") or cluster.address


def init_ray(cluster: ClusterConfig, state_api: bool = False) -> None:
    """Connect to `RAY_ADDRESS` / `cluster.address`, or start a local Ray for this stage.

    `state_api`: a local Ray also starts its dashboard (on 127.0.0.1), which serves Ray's
    State API. Every stage that runs Ray Train needs it: Train's placement-group cleaner asks
    the State API once a second whether the training controller is still alive. Without an
    answer it logs a warning each time (four lines in five of a training log), and in a search
    a trial stopped by ASHA keeps its workers' CPUs until later trials cannot start.
    """
    import ray
    import ray.data

    if ray.is_initialized():
        return
    address = ray_address(cluster)
    quiet = {
        "logging_level": logging.WARNING,
        "log_to_driver": True,
        # Ray's actors and tasks (Ray Data's among them) log at INFO by default; keep warnings.
        "logging_config": ray.LoggingConfig(log_level="WARNING"),
        "runtime_env": {
            "env_vars": {
                # Ray Data's progress bars, redrawn by every task and worker, flood a
                # non-terminal log.
                "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
                # Ray Train's controller takes a worker's report off its one-slot queue once
                # per poll (default 2 s), so no epoch could finish faster than that; a faster
                # poll of the local workers costs nothing measurable (docs/benchmarks.md).
                "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": str(TRAIN_POLL_INTERVAL_S),
            }
        },
    }
    # `logging_config` sets the level of every process in the job, this driver's root logger
    # included: without the restore below, the stage's own INFO lines would vanish.
    root = logging.getLogger()
    root_level, root_handlers = root.level, list(root.handlers)
    if address:
        # Run a cluster's tasks and workers on this driver's Lamina code, whatever version
        # the nodes have installed (Ray caches the package by content hash).
        quiet["runtime_env"]["py_modules"] = [str(Path(__file__).resolve().parent)]
        # Inside a Ray job (`lamina submit`), Ray would make this stage's driver share the
        # job's working_dir package, and delete that package's files when the stage ends,
        # under the job's feet: the next stage's command finds its directory empty (Ray
        # 2.60). Connect as a driver of our own instead; the job's command goes on.
        os.environ.pop("RAY_JOB_CONFIG_JSON_ENV_VAR", None)
        check_ray_address(address)
        try:
            ray.init(address=address, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ClusterError(
                f"cannot connect to the Ray cluster at {address} ({exc}); check that it is up "
                "(`ray status --address ...`) or unset RAY_ADDRESS to run locally"
            ) from None
    else:
        for name, value in ONE_MACHINE_RAY_ENV.items():
            os.environ.setdefault(name, value)
        # Ray notes on every start of a local Ray that token auth is on (as it should be):
        # a line on the stderr of every stage, which must carry only what went wrong.
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(
            logging.ERROR
        )
        dashboard_port = free_local_port() if state_api else None
        if state_api:
            # Ray's processes find the State API by scanning for local clusters, which fails
            # when another Ray runs on the machine (a second stage, a test); name ours.
            api_server = f"http://127.0.0.1:{dashboard_port}"
            os.environ["RAY_API_SERVER_ADDRESS"] = api_server
            quiet["runtime_env"]["env_vars"]["RAY_API_SERVER_ADDRESS"] = api_server
        ray.init(
            # A Ray of this stage's own, even where a `ray start` cluster runs on the machine
            # (a plain `ray.init()` would join that one).
            address="local",
            num_cpus=cluster.local_num_cpus or max(2, os.cpu_count() or 1),
            object_store_memory=cluster.local_object_store_mb * 1024**2,
            include_dashboard=state_api,
            dashboard_host="127.0.0.1",
            dashboard_port=dashboard_port,
            **quiet,
        )
    root.setLevel(root_level)
    root.handlers = root_handlers
    configure_ray_data(progress_bars=sys.stderr.isatty())


def check_resources(resource: str, needed: float, asked_by: str, remedy: str) -> None:
    """Refuse, before anything starts, a run that asks for more of `resource` ("CPU", "GPU")
    than the Ray cluster this process is connected to can ever give: Ray Train would wait for
    it, retrying the start of its workers for many minutes. `asked_by` names the config keys
    and values that ask; `remedy` says what to change.

    An autoscaling cluster counts at the most it may grow to, as far as its autoscaler reports
    that (KubeRay, Ray's autoscaler v2; Ray Train checks the same figure), so a run may still
    wait for nodes to be added; any other cluster counts at its present size.
    """
    has = _most_resources().get(resource, 0)
    if needed > has:
        raise ClusterError(
            f"{asked_by} ask for {needed:g} {resource}s, but the Ray cluster has {has:g}: "
            f"{remedy}, or run on a bigger cluster (RAY_ADDRESS)"
        )


def _most_resources() -> dict[str, float]:
    """The resources the connected cluster has, or may grow to if it autoscales."""
    import ray
    from ray._private.state import state  # the figure Ray Train's own check reads

    most = dict(ray.cluster_resources())
    for resource, limit in (state.get_max_resources_from_cluster_config() or {}).items():
        most[resource] = max(most.get(resource, 0), limit)
    return most


def check_ray_address(address: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds, naming the address, when nothing listens there: `ray.init` would
    retry a dead GCS address for minutes, printing warnings all the while."""
    host_port = address.removeprefix("ray://")
    if address == "auto" or ":" not in host_port:
        return  # "auto" finds a local cluster itself, and says so when there is none
    host, _, port = host_port.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return
    except ValueError:
        problem = f"the port {port!r} is not a number"
    except OSError as exc:
        problem = exc.strerror or type(exc).__name__
    raise ClusterError(
        f"cannot connect to the Ray cluster at {address} ({problem}); check that it is up "
        "(`ray status --address ...`) or unset RAY_ADDRESS to run locally"
    )


def free_local_port() -> int:
    """A port nothing listens on now: two local Rays (tests, two stages) must not collide."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def configure_ray_data(progress_bars: bool) -> None:
    """Ray Data settings for this process: the stage's driver, or a Tune trial's process."""
    import ray.data

    # Ray Data's own log lines (plans, "execution finished") say nothing a user needs.
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    data_context = ray.data.DataContext.get_current()
    data_context.enable_progress_bars = progress_bars
    # Stage output must be reproducible: keep rows in the order they were read.
    data_context.execution_options.preserve_order = True


def write_parquet(dataset, folder: Path) -> None:
    """`dataset.write_parquet` with file names that do not change from run to run.

    Ray names files after a random write id by default, so identical content would hash
    differently and make DVC rerun every downstream stage after a harmless rerun.
    """
    from ray.data import SaveMode
    from ray.data.datasource import FilenameProvider

    class _StableNames(FilenameProvider):
        def get_filename_for_task(self, write_uuid: str, task_index: int) -> str:
            return f"part-{task_index:05d}.parquet"

    # OVERWRITE: stable names carry no write id, and stages always write into a fresh folder.
    dataset.write_parquet(str(folder), filename_provider=_StableNames(), mode=SaveMode.OVERWRITE)
