"""A training run's life in MLflow: opened with its params and lineage tags, reopened when an
interrupted fit resumes, filled in epoch by epoch from the Ray workers, read back as a history.

The `train` stage and every Tune trial (and a search's parent run) go through here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from lamina.config.compose import flatten_config
from lamina.config.paths import ExperimentPaths
from lamina.config.schema import ExperimentConfig
from lamina.redaction import redacted
from lamina.tracking.runs import (
    RunInfo,
    check_tracking_server,
    dvc_data_hash,
    get_or_create_experiment,
    git_commit,
    tracking_uri,
)

# Logged every epoch by every training loop: the metric whose steps say which epochs a run holds.
EPOCH_SECONDS = "epoch_seconds"


@dataclass(frozen=True)
class TrackedRun:
    """An MLflow run as the Ray workers reach it (plain strings, so it pickles): the driver
    opens it, rank 0 logs each epoch into it."""

    tracking_uri: str
    run_id: str

    def log_epoch(self, metrics: dict[str, float], epoch: int) -> None:
        from mlflow.entities import Metric
        from mlflow.tracking import MlflowClient

        timestamp = int(time.time() * 1000)
        MlflowClient(self.tracking_uri).log_batch(
            self.run_id,
            metrics=[Metric(key, value, timestamp, epoch) for key, value in metrics.items()],
        )

    def log_artifact(self, path: Path, folder: str) -> None:
        from mlflow.tracking import MlflowClient

        MlflowClient(self.tracking_uri).log_artifact(self.run_id, str(path), folder)

    def logged_epochs(self) -> set[int]:
        """The epochs the run already holds. Rank 0 logs an epoch before reporting its
        checkpoint (a trial that Tune stops at that report keeps it), so after a restart the
        epochs between the restored checkpoint and the failure are trained again but must not
        be logged again."""
        from mlflow.tracking import MlflowClient

        history = MlflowClient(self.tracking_uri).get_metric_history(self.run_id, EPOCH_SECONDS)
        return {point.step for point in history}


def open_training_run(
    config: ExperimentConfig,
    root: Path,
    *,
    run_name: str | None = None,
    parent_run_id: str | None = None,
    stage: str = "train",
) -> tuple[str, str]:
    """Create the MLflow run (experiment = preset name) with params and lineage tags; return
    its id and its experiment's.

    A Tune trial's run names its search's run as parent, so the UI nests it there. A student
    names the MLflow run of the teacher it learns from (`train.distillation`).
    """
    from mlflow.tracking import MlflowClient

    uri = tracking_uri(root)
    check_tracking_server(uri)
    client = MlflowClient(uri)
    experiment_id = get_or_create_experiment(client, config.name, root)
    tags = {
        "lamina.experiment": config.name,
        "lamina.stage": stage,
        "mlflow.source.git.commit": git_commit(root),
        "lamina.dvc_data_hash": dvc_data_hash(root),
    }
    if parent_run_id is not None:
        tags["mlflow.parentRunId"] = parent_run_id
    if config.train.distillation is not None:
        teacher = ExperimentPaths(config.train.distillation.teacher, root)
        if teacher.run_info.is_file():  # else loading the data names the stage to run
            tags["lamina.teacher_run_id"] = RunInfo.load(teacher.run_info).run_id
    run = client.create_run(experiment_id, run_name=run_name or f"{config.name}-{stage}", tags=tags)
    log_params(client, run.info.run_id, flatten_config(config))
    return run.info.run_id, experiment_id


def log_params(client, run_id: str, params: dict[str, str]) -> None:
    """Every param, with any password in a URI value (`cluster.address`,
    `cluster.storage_path`) masked: the UI shows params to everyone who can read the run."""
    from mlflow.entities import Param

    batch = [Param(key, redacted(value)) for key, value in params.items()]
    for start in range(0, len(batch), 100):  # log_batch takes at most 100 params a call
        client.log_batch(run_id, params=batch[start : start + 100])


def reopen_run(uri: str, run_id: str) -> str | None:
    """Set an interrupted run running again and return its experiment's id; None when the run
    is gone (deleted meanwhile, or from another store)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    try:
        run = client.get_run(run_id)
    except MlflowException:
        return None
    if run.info.lifecycle_stage != "active":
        return None
    client.update_run(run_id, status="RUNNING")
    return run.info.experiment_id


def epoch_history(client, run_id: str) -> pd.DataFrame:
    """One row per epoch (`epoch` from 0) and one column per metric logged at step = epoch."""
    columns = {
        key: {point.step: point.value for point in client.get_metric_history(run_id, key)}
        for key in sorted(client.get_run(run_id).data.metrics)
    }
    table = pd.DataFrame(columns).sort_index()
    table.index.name = "epoch"
    return table.reset_index()
