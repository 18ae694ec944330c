"""Training that survives a killed worker, Ctrl-C and an interrupted `dvc repro`, and repeats
itself.

A copy of the shared clone after its `dvc repro` (features, configs, DVC state) with an MLflow
store of its own, so nothing here changes what the other modules read. The `train` stage runs
as DVC runs it (`python pipelines/train.py NAME`); a watcher kills a Ray Train worker process
once the run has logged its second epoch (so a checkpoint exists), and Ray restarts the worker
group from the last checkpoint (`cluster.max_failures`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
import yaml

from tests.conftest import process_group, run

pytestmark = pytest.mark.slow

# name -> (epochs, the metric compared between runs). Enough epochs that training is still
# going on when the watcher sees the second one logged (an mlp epoch takes under a second).
EXPERIMENTS = {"mlp-mnist": (12, "val/accuracy"), "gan-mnist": (4, "train/g_loss")}
EPOCH_KEY = "epoch_seconds"  # logged every epoch by both loops
TIMEOUT_S = 420


@pytest.fixture(scope="module")
def workspace(clone, first_repro, tmp_path_factory) -> Path:
    copy = tmp_path_factory.mktemp("reliability") / "lamina"
    shutil.copytree(clone, copy, symlinks=True)
    for name, (epochs, _) in EXPERIMENTS.items():
        # The resolved config the stage reads: more epochs, and one restart allowed.
        path = copy / "outputs" / name / "config.yaml"
        config = yaml.safe_load(path.read_text())
        config["train"]["epochs"] = epochs
        config["cluster"]["max_failures"] = 1
        path.write_text(yaml.safe_dump(config, sort_keys=False))
    return copy


@pytest.fixture(scope="module")
def store(workspace) -> dict[str, str]:
    """The copy's own MLflow store (the name `tracking` is the shared clone's, in conftest)."""
    return {"MLFLOW_TRACKING_URI": f"sqlite:///{workspace.parent / 'mlflow.db'}"}


def _client(tracking):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking["MLFLOW_TRACKING_URI"])


def _train_runs(tracking, name: str) -> list:
    client = _client(tracking)
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return []
    return client.search_runs(
        [experiment.experiment_id], filter_string="tags.`lamina.stage` = 'train'"
    )


def _steps(tracking, run_id: str) -> list[int]:
    """The epochs a run holds, sorted, a repeated one as often as it was logged."""
    history = _client(tracking).get_metric_history(run_id, EPOCH_KEY)
    return sorted(point.step for point in history)


def _final(tracking, run_id: str, metric: str) -> float:
    history = _client(tracking).get_metric_history(run_id, metric)
    return max(history, key=lambda point: point.step).value


def _train(workspace, tracking, name: str) -> str:
    result = run([sys.executable, "pipelines/train.py", name], workspace, **tracking)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((workspace / "outputs" / name / "run.json").read_text())["run_id"]


def _history(workspace, name: str) -> pd.DataFrame:
    table = pd.read_csv(workspace / "outputs" / name / "history.csv")
    return table.drop(columns=[EPOCH_KEY])  # wall time: the one column that may differ


def _train_workers(root_pid: int) -> set[int]:
    """PIDs of the Ray Train worker processes under a stage's process."""
    try:
        children = psutil.Process(root_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return set()
    workers = set()
    for child in children:
        try:
            if "RayTrainWorker" in " ".join(child.cmdline()):
                workers.add(child.pid)
        except psutil.Error:
            continue
    return workers


def _wait_for_logged_epochs(tracking, name, stage, log_path, known: set[str], count: int):
    """The new run's id once it holds `count` epochs; fails if the stage ends first."""
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        assert stage.poll() is None, log_path.read_text()[-3000:]
        assert time.monotonic() < deadline, log_path.read_text()[-3000:]
        new = [r for r in _train_runs(tracking, name) if r.info.run_id not in known]
        if new and len(_steps(tracking, new[0].info.run_id)) >= count:
            return new[0].info.run_id
        time.sleep(0.5)


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_a_killed_worker_resumes_from_its_checkpoint_into_the_same_run(workspace, store, name):
    _, metric = EXPERIMENTS[name]
    undisturbed = _train(workspace, store, name)
    epochs = len(_steps(store, undisturbed))  # early stopping may end it before the last
    known = {r.info.run_id for r in _train_runs(store, name)}

    log_path = workspace.parent / f"killed-worker-{name}.log"
    command = [sys.executable, "pipelines/train.py", name]
    with process_group(command, workspace, log_path, **store) as stage:
        run_id = _wait_for_logged_epochs(store, name, stage, log_path, known, 2)
        before = _train_workers(stage.pid)
        assert before, "no Ray Train worker process found under the stage"
        victim = min(before)
        os.kill(victim, signal.SIGKILL)
        restarted = set()
        deadline = time.monotonic() + TIMEOUT_S
        while stage.poll() is None and time.monotonic() < deadline:
            restarted |= _train_workers(stage.pid) - before
            time.sleep(0.5)
        assert stage.wait(timeout=60) == 0, log_path.read_text()[-3000:]
    output = log_path.read_text()
    assert restarted, f"Ray started no new worker after the kill:\n{output[-3000:]}"

    runs = _train_runs(store, name)
    assert len(runs) == len(known) + 1  # the restart logged into the run it had, no second one
    assert json.loads((workspace / "outputs" / name / "run.json").read_text())["run_id"] == run_id
    assert _client(store).get_run(run_id).info.status == "FINISHED"
    assert _steps(store, run_id) == list(range(epochs))  # each epoch once, none skewed
    disturbed_final = _final(store, run_id, metric)
    undisturbed_final = _final(store, undisturbed, metric)
    assert disturbed_final == pytest.approx(undisturbed_final, rel=0.005)


def test_same_seed_data_and_config_give_identical_metrics(workspace, store):
    name = "mlp-mnist"
    first = _train(workspace, store, name)
    first_history = _history(workspace, name)
    second = _train(workspace, store, name)
    assert second != first
    pd.testing.assert_frame_equal(_history(workspace, name), first_history, check_exact=True)


def test_an_interrupted_repro_resumes_training_from_its_last_checkpoint(workspace, store):
    name = "mlp-mnist"
    preset = workspace / "conf" / "experiment" / f"{name}.yaml"
    body = yaml.safe_load(preset.read_text())
    body["train"]["epochs"] = EXPERIMENTS[name][0] + 1  # a config of its own: a fit of its own
    preset.write_text(yaml.safe_dump(body, sort_keys=False))
    known = {r.info.run_id for r in _train_runs(store, name)}
    model = workspace / "outputs" / name / "model"

    log_path = workspace.parent / "killed-repro.log"
    # Leaving the block kills the whole group: DVC, the stage and its Ray, mid-training.
    with process_group(["dvc", "repro", f"train@{name}"], workspace, log_path, **store) as repro:
        run_id = _wait_for_logged_epochs(store, name, repro, log_path, known, 2)
    # DVC removed the stage's outputs before running it, and nothing put them back.
    assert not model.exists() and not (workspace / "outputs" / name / "run.json").exists()
    leftovers = [p.name for p in (workspace / "outputs" / name).iterdir()]
    assert not any(".tmp" in leftover for leftover in leftovers), leftovers
    assert f"train@{name}" in run(["dvc", "status", f"train@{name}"], workspace).stdout

    resumed = run(["dvc", "repro", f"train@{name}"], workspace, **store)
    output = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, output[-3000:]
    assert f"resuming MLflow run {run_id}" in output
    assert len(_train_runs(store, name)) == len(known) + 1
    assert json.loads((workspace / "outputs" / name / "run.json").read_text())["run_id"] == run_id
    epochs = len(pd.read_csv(workspace / "outputs" / name / "history.csv"))
    assert _steps(store, run_id) == list(range(epochs))
    # Resumed, not restarted: the epochs before the kill were not trained again.
    trained_again = [line for line in output.splitlines() if "epoch 1/" in line]
    assert not trained_again, trained_again
    assert (model / "model.pt").is_file()
    assert not list((workspace / ".lamina" / "ray").glob(f"{name}-*")), "fit state left behind"


def test_ctrl_c_stops_training_in_seconds_and_the_next_run_resumes_it(workspace, store):
    name = "mlp-mnist"
    known = {r.info.run_id for r in _train_runs(store, name)}
    model = workspace / "outputs" / name / "model" / "model.pt"
    model_before = model.read_bytes() if model.exists() else None
    log_path = workspace.parent / "ctrl-c.log"
    command = [sys.executable, "pipelines/train.py", name]
    with process_group(command, workspace, log_path, **store) as stage:
        run_id = _wait_for_logged_epochs(store, name, stage, log_path, known, 1)
        os.killpg(stage.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        interrupted = time.monotonic()
        status = stage.wait(timeout=60)
        took = time.monotonic() - interrupted
    output = log_path.read_text()
    assert status == 130, output[-3000:]
    assert took < 15, f"{took:.1f} s from Ctrl-C to exit"
    # (Ray's own processes may log tracebacks of theirs; an unhandled Ctrl-C would end in this.)
    assert "lamina train: interrupted" in output and "KeyboardInterrupt" not in output
    assert _client(store).get_run(run_id).info.status == "KILLED"
    assert (model.read_bytes() if model.exists() else None) == model_before  # not written

    # The checkpoints and the marker stay on purpose: the next run resumes the killed run.
    resumed = run(command, workspace, **store)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming MLflow run {run_id}" in resumed.stderr
    assert json.loads((workspace / "outputs" / name / "run.json").read_text())["run_id"] == run_id
    assert _client(store).get_run(run_id).info.status == "FINISHED"
    epochs = len(pd.read_csv(workspace / "outputs" / name / "history.csv"))
    assert _steps(store, run_id) == list(range(epochs))
    assert not list((workspace / ".lamina" / "ray").glob(f"{name}-*")), "fit state left behind"


def test_register_reads_the_registry_settings_its_params_name(workspace, store):
    """`registry` is a param of `register` in outputs/<name>/config.yaml, not in the config
    that `train` saved with the model: a change there must be what `register` uses."""
    name = "mlp-mnist"
    _train(workspace, store, name)
    resolved = workspace / "outputs" / name / "config.yaml"
    config = yaml.safe_load(resolved.read_text())
    config["registry"] = {"primary_metric": "test/loss", "greater_is_better": False}
    resolved.write_text(yaml.safe_dump(config, sort_keys=False))

    result = run([sys.executable, "pipelines/register.py", name], workspace, **store)
    assert result.returncode == 0, result.stderr[-3000:]
    registration = json.loads((workspace / "outputs" / name / "registration.json").read_text())
    assert registration["primary_metric"] == "test/loss"
    trained = yaml.safe_load((workspace / "outputs" / name / "model" / "config.yaml").read_text())
    assert trained["registry"]["primary_metric"] != "test/loss"  # what register used to read
