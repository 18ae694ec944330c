"""One Tune trial: the experiment's config with the trial's sample applied, trained by Ray Train.

This follows Ray's Train V2 pattern: Tune runs `run_trial` per trial, and it builds and fits a
`TorchTrainer` (the same one the `train` stage uses) whose reports reach Tune through
`TuneReportCallback`. Each trial logs to its own MLflow run, a child of the search's run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lamina.config.compose import with_overrides
from lamina.config.schema import ExperimentConfig, TuneConfig

if TYPE_CHECKING:
    from lamina.training.driver import TrainingData


@dataclass(frozen=True)
class TrialSetup:
    """What every trial needs besides its sample (shipped to trials once, by Tune)."""

    base_config: ExperimentConfig
    root: Path
    tracking_uri: str
    parent_run_id: str
    vocabulary: list[str] | None  # text models' fitted tokens, by id
    train_storage: str  # where trials' Ray Train runs keep their checkpoints


def trial_config(base: ExperimentConfig, params: dict[str, Any]) -> ExperimentConfig:
    """The sampled values, plus the search's per-trial budget and resources."""
    settings: TuneConfig = base.tune
    config = with_overrides(
        base,
        {
            **params,
            "train.epochs": settings.max_epochs_per_trial,
            "cluster.num_workers": settings.workers_per_trial,
            "cluster.cpus_per_worker": settings.cpus_per_worker,
        },
    )
    return config.model_copy(update={"tune": None})  # a trial does not search again


def trial_run_id(config: ExperimentConfig, root: Path, parent_run_id: str, trial_id: str) -> str:
    """The trial's MLflow run: found again when a resumed search continues the trial."""
    from mlflow.tracking import MlflowClient

    from lamina.tracking.runs import tracking_uri
    from lamina.tracking.training_runs import open_training_run

    client = MlflowClient(tracking_uri(root))
    existing = find_trial_run(client, config.name, parent_run_id, trial_id)
    if existing is not None:
        return existing
    run_id, _ = open_training_run(
        config,
        root,
        run_name=f"{config.name}-trial-{trial_id}",
        parent_run_id=parent_run_id,
        stage="tune-trial",
    )
    client.set_tag(run_id, "lamina.trial_id", trial_id)
    return run_id


def find_trial_run(client, experiment: str, parent_run_id: str, trial_id: str) -> str | None:
    """The id of the search's child run for this trial, if there is one yet."""
    runs = client.search_runs(
        [client.get_experiment_by_name(experiment).experiment_id],
        filter_string=(
            f"tags.`mlflow.parentRunId` = '{parent_run_id}' "
            f"and tags.`lamina.trial_id` = '{trial_id}'"
        ),
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def run_trial(params: dict[str, Any], setup: TrialSetup, data: TrainingData) -> None:
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from lamina.cluster.ray_runtime import configure_ray_data
    from lamina.tracking.training_runs import TrackedRun
    from lamina.training.context import TrainingRunContext
    from lamina.training.driver import build_trainer

    configure_ray_data(progress_bars=False)  # many trials share one log
    trial_id = tune.get_context().get_trial_id()
    config = trial_config(setup.base_config, params)
    run_id = trial_run_id(config, setup.root, setup.parent_run_id, trial_id)
    trainer = build_trainer(
        TrainingRunContext(
            config,
            TrackedRun(setup.tracking_uri, run_id),
            vocabulary=setup.vocabulary,
            label=f"trial {trial_id}",
        ),
        data,  # loaded once by the search, shared by every trial
        # Stable per trial: a resumed search continues an interrupted trial from its last
        # epoch's checkpoint instead of starting it over.
        run_name=f"trial-{trial_id}",
        storage_path=setup.train_storage,
        callbacks=[TuneReportCallback()],
    )
    trainer.fit()
