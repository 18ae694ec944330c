"""Jobs on a real two-node Ray cluster (two `ray start` nodes on 127.0.0.1, non-default ports),
logging to the real PostgreSQL-backed MLflow server: `lamina submit` runs a shrunk experiment
through `dvc repro` on the cluster, its DDP workers on both nodes; a failing job fails here.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from lamina.cluster.local_ray import LocalCluster
from lamina.cluster.ray_runtime import free_local_port
from tests.conftest import clone_worktree, git, run

pytestmark = pytest.mark.slow

EXPERIMENT = "mlp-mnist"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with LocalCluster(tmp_path_factory.mktemp("ray-cluster"), nodes=(2, 2)) as started:
        yield started


@pytest.fixture(scope="module")
def job_repo(tmp_path_factory) -> Path:
    """A commit of this tree whose `mlp-mnist` runs small, on the `cpu-cluster` settings."""
    repo = tmp_path_factory.mktemp("job-repo") / "lamina"
    clone_worktree(repo)
    preset_path = repo / "conf" / "experiment" / f"{EXPERIMENT}.yaml"
    preset = yaml.safe_load(preset_path.read_text())
    preset["defaults"]["cluster"] = "cpu-cluster"
    preset.setdefault("data", {})["max_samples"] = 600
    preset["train"] = {**preset.get("train", {}), "epochs": 2}
    preset_path.write_text(yaml.safe_dump(preset, sort_keys=False))
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "job repo")
    return repo


def submit(cluster, repo: Path, *command: str, tracking_uri: str | None = None, wait=True):
    env = dict(cluster.client_env)
    if tracking_uri:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    options = ["--address", cluster.dashboard_url] + ([] if wait else ["--no-wait"])
    return run(["lamina", "submit", *options, "--", *command], repo, **env)


@pytest.fixture(scope="module")
def pipeline_job(cluster, job_repo, mlflow_server):
    """`dvc repro` of one experiment, data to registered model, as one job on the cluster."""
    steps = f"lamina data ensure && dvc repro register@{EXPERIMENT}"
    result = submit(cluster, job_repo, "sh", "-c", steps, tracking_uri=mlflow_server.uri)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    return result


def test_the_job_runs_the_stages_and_reports_success(pipeline_job):
    for stage in ("configure", "prepare", "preprocess", "train", "evaluate", "register"):
        assert f"Running stage '{stage}@{EXPERIMENT}'" in pipeline_job.stdout
    assert re.search(r"job raysubmit_\w+ SUCCEEDED in \d+ s", pipeline_job.stderr)


def test_training_workers_ran_on_both_nodes(cluster, pipeline_job):
    actors = cluster.get_json(
        "/api/v0/actors?limit=1000&detail=1"
        "&filter_keys=class_name&filter_predicates=%3D&filter_values=RayTrainWorker"
    )["data"]["result"]["result"]
    nodes = {actor["node_id"] for actor in actors}
    all_nodes = cluster.get_json("/api/v0/nodes?limit=100")["data"]["result"]["result"]
    assert len(actors) == 2
    assert nodes == {node["node_id"] for node in all_nodes}, "both workers on one node"


def test_the_run_and_the_model_are_in_the_tracking_server(pipeline_job, mlflow_server):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_server.uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None
    (training_run,) = client.search_runs(
        [experiment.experiment_id], filter_string="tags.`lamina.stage` = 'train'"
    )
    assert training_run.info.status == "FINISHED"
    assert training_run.data.params["cluster.placement_strategy"] == "SPREAD"
    assert len(client.get_metric_history(training_run.info.run_id, "val/accuracy")) == 2
    assert "test/accuracy" in training_run.data.metrics  # evaluate logged onto the same run
    champion = client.get_model_version_by_alias(EXPERIMENT, "champion")
    assert champion.run_id == training_run.info.run_id


def test_a_failing_job_fails_here_with_its_error_line(cluster, job_repo):
    script = "import sys; print('working...'); sys.exit('lamina-test: the input is bad')"
    result = submit(cluster, job_repo, "python", "-c", script)
    assert result.returncode == 1
    last_line = result.stderr.strip().splitlines()[-1]
    assert "FAILED" in last_line and "lamina-test: the input is bad" in last_line


def test_no_wait_then_jobs_logs_and_stop(cluster, job_repo):
    started = submit(cluster, job_repo, "sh", "-c", "echo started; sleep 300", wait=False)
    assert started.returncode == 0, started.stderr
    job_id = started.stdout.strip()
    address = ["--address", cluster.dashboard_url]

    listed = run(["lamina", "jobs", *address], job_repo, **cluster.client_env)
    assert listed.returncode == 0 and job_id in listed.stdout
    row = next(line for line in listed.stdout.splitlines() if job_id in line)
    assert re.search(r"\b(PENDING|RUNNING)\b", row)

    stopped = run(["lamina", "stop", job_id, *address], job_repo, **cluster.client_env)
    assert stopped.returncode == 0 and stopped.stdout.strip() == f"{job_id}: STOPPED"
    logs = run(["lamina", "logs", job_id, *address], job_repo, **cluster.client_env)
    assert logs.returncode == 0 and "sleep 300" in logs.stdout


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["submit", "--address", "http://127.0.0.1:{port}", "--", "true"], "127.0.0.1:{port}"),
        (["jobs", "--address", "127.0.0.1:{port}"], "give the dashboard's URL"),
        (["submit", "--address", "http://127.0.0.1:{port}"], "nothing to run"),
    ],
)
def test_bad_addresses_and_commands_are_one_line_errors(tmp_path, arguments, expected):
    port = free_local_port()
    arguments = [argument.format(port=port) for argument in arguments]
    result = run(["lamina", *arguments], tmp_path)
    assert result.returncode == 2, shlex.join(arguments)
    assert result.stderr.count("\n") == 1 and expected.format(port=port) in result.stderr
