"""The search: one MLflow parent run, Ray Tune trials under it, the best trial's params out.

A search's state lives in `.lamina/tune/<experiment>/<fingerprint>/`, the fingerprint being a
hash of the resolved config. Started again with the same config (after Ctrl-C or a killed
process), the search is restored from there: finished trials are kept, unfinished ones go on
from their last epoch's checkpoint, and the MLflow runs are the same ones as before. A changed
config starts a new search; the stage deletes the state once its outputs are written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from ray.tune import Callback

from lamina.cluster.ray_runtime import check_resources, init_ray
from lamina.config.compose import dump_config
from lamina.config.paths import ExperimentPaths
from lamina.config.schema import ExperimentConfig, TuneConfig
from lamina.errors import SearchError
from lamina.training.early_stopping import best_row
from lamina.tuning.space import make_scheduler, make_searcher, search_domains
from lamina.tuning.trial import TrialSetup, find_trial_run, run_trial

logger = logging.getLogger("lamina.tune")

PARENT_RUN_FILE = "mlflow_parent_run_id"
# A trial's own process only waits on its TorchTrainer; the workers hold the CPUs. (Tune
# refuses a request of zero, hence a token share.)
TRIAL_PROCESS_CPUS = 0.01


@dataclass(frozen=True)
class SearchOutcome:
    best_params: dict[str, Any]
    best_value: float
    best_trial: int
    trials: pd.DataFrame  # one row per trial: params, best metric, epochs trained, status
    parent_run_id: str


def search_state_dir(config: ExperimentConfig, paths: ExperimentPaths) -> Path:
    fingerprint = hashlib.sha256(dump_config(config).encode()).hexdigest()[:12]
    return paths.tune_state / fingerprint


def run_search(
    config: ExperimentConfig, paths: ExperimentPaths, vocabulary: list[str] | None
) -> SearchOutcome:
    from mlflow.tracking import MlflowClient
    from ray import tune

    from lamina.tracking.runs import check_tracking_server, tracking_uri
    from lamina.training.driver import checkpoint_storage, load_training_data

    settings = config.tune
    monitor, mode = config.train.early_stopping.monitor, config.train.early_stopping.mode
    root = paths.root.resolve()
    uri = tracking_uri(root)
    # Both services, and room for the trials, before a run is opened or an old search removed.
    check_tracking_server(uri)
    # Tune saves the search's state at most every 10 s by default; trials here are short and
    # the state small, so save often: a killed search then loses at most seconds of it.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
    # Tune's own Ctrl-C handler stops the search and returns as if it had finished; let Ctrl-C
    # interrupt the stage instead (no outputs, exit 130), the saved state resumes it later.
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
    init_ray(config.cluster, state_api=True)  # see init_ray: stopped trials must free CPUs
    check_trial_resources(config)
    state = search_state_dir(config, paths)
    _forget_other_searches(state)
    parent_run_id = _parent_run(config, root, state)
    client = MlflowClient(uri)
    setup = TrialSetup(
        base_config=config,
        root=root,
        tracking_uri=uri,
        parent_run_id=parent_run_id,
        vocabulary=vocabulary,
        train_storage=checkpoint_storage(config.cluster, state / "trials"),
    )
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, setup=setup, data=load_training_data(config, paths)),
        {"CPU": TRIAL_PROCESS_CPUS},
    )
    search_dir = state / "search"
    try:
        if tune.Tuner.can_restore(str(search_dir)):
            logger.info("resuming the interrupted search in %s", search_dir)
            tuner = tune.Tuner.restore(
                str(search_dir), trainable, resume_unfinished=True, resume_errored=True
            )
        else:
            tuner = tune.Tuner(
                trainable,
                param_space=search_domains(settings.space),
                tune_config=tune.TuneConfig(
                    metric=monitor,
                    mode=mode,
                    search_alg=make_searcher(config, monitor, mode),
                    scheduler=make_scheduler(settings),
                    num_samples=settings.num_trials,
                    max_concurrent_trials=settings.max_concurrent_trials,
                    time_budget_s=settings.time_budget_s,
                ),
                run_config=tune.RunConfig(
                    name=search_dir.name,
                    storage_path=str(state),
                    verbose=0,  # TrialProgress below says what happens, a line per event
                    callbacks=[TrialProgress(settings.num_trials, monitor)],
                ),
            )
        results = tuner.fit()
    except KeyboardInterrupt:
        client.set_terminated(parent_run_id, status="KILLED")
        raise
    except BaseException:
        client.set_terminated(parent_run_id, status="FAILED")
        raise

    trials = trials_table(results, settings, monitor, mode)
    _close_trial_runs(client, config.name, parent_run_id, trials)
    finished = trials[trials["status"] != "error"]
    if finished.empty:
        client.set_terminated(parent_run_id, status="FAILED")
        failed = next(r for r in results if r.error is not None)
        last_line = str(failed.error).strip().splitlines()[-1]
        raise SearchError(
            f"every trial of the {config.name} search failed, the first with: {last_line} "
            f"(full trace under {failed.path})"
        )
    best = best_row(finished, monitor, mode)
    outcome = SearchOutcome(
        best_params={key: _plain(best[key]) for key in settings.space},
        best_value=float(best[monitor]),
        best_trial=int(best["trial"]),
        trials=trials,
        parent_run_id=parent_run_id,
    )
    _summarise_parent_run(client, outcome, monitor)
    return outcome


def check_trial_resources(config: ExperimentConfig) -> None:
    """The concurrent trials' workers fit in the Ray cluster (`check_resources`). Tune starts
    up to `max_concurrent_trials` trials on the trial processes' token CPUs alone; every trial
    then waits for its workers, so trials that do not all fit wait on each other for good."""
    settings = config.tune
    concurrent = min(settings.max_concurrent_trials, settings.num_trials)
    workers = concurrent * settings.workers_per_trial
    asked_by = (
        f"tune.max_concurrent_trials={concurrent} x tune.workers_per_trial="
        f"{settings.workers_per_trial}"
    )
    where = f"in conf/experiment/{config.name}.yaml"
    check_resources(
        "CPU",
        workers * settings.cpus_per_worker + concurrent * TRIAL_PROCESS_CPUS,
        f"{asked_by} x tune.cpus_per_worker={settings.cpus_per_worker:g} (+ {TRIAL_PROCESS_CPUS:g}"
        " per trial)",
        f"lower them {where}",
    )
    if config.cluster.use_gpu:
        check_resources(
            "GPU",
            workers,
            f"{asked_by} with cluster.use_gpu (a GPU each)",
            f"lower them or set cluster.use_gpu: false {where}",
        )


def trials_table(results, settings: TuneConfig, monitor: str, mode: str) -> pd.DataFrame:
    """One row per trial, in the order they started: params, best `monitor`, epochs, status."""
    rows = []
    for number, result in enumerate(results, start=1):
        history = result.metrics_dataframe
        scores = (
            history[monitor]
            if history is not None and monitor in history.columns
            else pd.Series(dtype=float)
        )
        best_value = (scores.max() if mode == "max" else scores.min()) if len(scores) else math.nan
        if result.error is not None:
            status = "error"
        elif len(scores) < settings.max_epochs_per_trial:
            status = "stopped"  # by the scheduler (ASHA) or by early stopping
        else:
            status = "completed"
        rows.append(
            {
                "trial": number,
                "trial_id": (result.metrics or {}).get("trial_id", ""),
                **{key: result.config.get(key) for key in settings.space},
                monitor: best_value,
                "epochs": len(scores),
                "status": status,
            }
        )
    return pd.DataFrame(rows)


def _parent_run(config: ExperimentConfig, root: Path, state: Path) -> str:
    """The search's MLflow run: reopened when resuming, else created."""
    from mlflow.tracking import MlflowClient

    from lamina.tracking.runs import tracking_uri
    from lamina.tracking.training_runs import open_training_run

    saved = state / PARENT_RUN_FILE
    if saved.is_file():
        run_id = saved.read_text().strip()
        client = MlflowClient(tracking_uri(root))
        client.update_run(run_id, status="RUNNING")
        return run_id
    run_id, _ = open_training_run(config, root, run_name=f"{config.name}-search", stage="tune")
    state.mkdir(parents=True, exist_ok=True)
    saved.write_text(run_id)
    return run_id


def _forget_other_searches(state: Path) -> None:
    """Searches of this experiment's earlier configs cannot be resumed any more."""
    if state.parent.is_dir():
        for other in state.parent.iterdir():
            if other != state:
                shutil.rmtree(other, ignore_errors=True)


def forget_search(config: ExperimentConfig, paths: ExperimentPaths) -> None:
    """Once the stage's outputs are written, the search state has served its purpose."""
    shutil.rmtree(search_state_dir(config, paths), ignore_errors=True)


def _close_trial_runs(client, experiment: str, parent_run_id: str, trials: pd.DataFrame) -> None:
    """Trials ASHA stopped were ended from outside, so their runs still say RUNNING."""
    for row in trials.itertuples():
        run_id = find_trial_run(client, experiment, parent_run_id, row.trial_id)
        if run_id is not None:
            client.set_tag(run_id, "lamina.trial_status", row.status)
            client.set_terminated(run_id, status="FAILED" if row.status == "error" else "FINISHED")


def _summarise_parent_run(client, outcome: SearchOutcome, monitor: str) -> None:
    run_id = outcome.parent_run_id
    client.set_tag(run_id, "lamina.best_trial", str(outcome.best_trial))
    client.set_tag(run_id, "lamina.best_params", json.dumps(outcome.best_params))
    client.log_metric(run_id, f"best/{monitor}", outcome.best_value)
    client.log_metric(run_id, "trials", len(outcome.trials))
    client.log_metric(run_id, "epochs_trained", int(outcome.trials["epochs"].sum()))


def close_search_run(outcome: SearchOutcome, outputs: Path, root: Path) -> None:
    """Attach the stage's trials table and plot to the search's run, and end it."""
    from mlflow.tracking import MlflowClient

    from lamina.tracking.runs import tracking_uri

    client = MlflowClient(tracking_uri(root))
    client.log_artifacts(outcome.parent_run_id, str(outputs), "search")
    client.set_terminated(outcome.parent_run_id, status="FINISHED")


def _plain(value: Any) -> Any:
    """numpy scalars -> Python ones, so the params write as plain YAML."""
    return value.item() if hasattr(value, "item") else value


class TrialProgress(Callback):
    """One log line when a trial starts, ends, or fails: the stage's progress display."""

    def __init__(self, num_trials: int, monitor: str) -> None:
        self.num_trials = num_trials
        self.monitor = monitor

    def _name(self, trials, trial) -> str:
        # `trials` lists every trial in the order they were created, restored ones included.
        return f"trial {trials.index(trial) + 1}/{self.num_trials} ({trial.trial_id})"

    def on_trial_start(self, iteration, trials, trial, **info):
        sample = ", ".join(f"{key}={_short(value)}" for key, value in trial.config.items())
        logger.info("%s started: %s", self._name(trials, trial), sample)

    def on_trial_complete(self, iteration, trials, trial, **info):
        result = trial.last_result or {}
        logger.info(
            "%s ended after %s epochs: %s %s",
            self._name(trials, trial),
            result.get("training_iteration", 0),
            self.monitor,
            _short(result.get(self.monitor, math.nan)),
        )

    def on_trial_error(self, iteration, trials, trial, **info):
        logger.warning("%s failed; its error is in %s", self._name(trials, trial), trial.error_file)


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
