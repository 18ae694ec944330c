"""The driver: open the MLflow run, build the `TorchTrainer`, fit, keep the best checkpoint.

Tune (when an experiment searches) calls this same driver per trial, as Ray's Train V2 docs
prescribe, instead of wrapping a trainer in `Tuner`.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import torch

from lamina.cluster.ray_runtime import check_resources, init_ray
from lamina.config.compose import dump_config
from lamina.config.paths import ExperimentPaths
from lamina.config.schema import ClusterConfig, ExperimentConfig
from lamina.data.parquet_files import read_parquet
from lamina.errors import DataError
from lamina.redaction import redacted
from lamina.tracking.runs import RunInfo, check_tracking_server, tracking_uri
from lamina.tracking.training_runs import (
    TrackedRun,
    epoch_history,
    open_training_run,
    reopen_run,
)
from lamina.training.context import TrainingRunContext
from lamina.training.distillation import with_teacher_logits
from lamina.training.early_stopping import best_row
from lamina.training.loop import train_fn_per_worker
from lamina.training.resume import (
    ResumableFit,
    discard_other_fits,
    discard_unmarked_checkpoints,
    resumable_fit,
)
from lamina.training.scaffold import CHECKPOINT_FILE, train_dataset_name
from lamina.training.tasks import supervised_task

if TYPE_CHECKING:
    import pyarrow as pa
    import ray.data

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingOutcome:
    run: RunInfo
    history: pd.DataFrame
    best_weights: dict  # the model's state_dict at the best epoch


@dataclass(frozen=True)
class TrainingData:
    """The `train` and `val` features of a fit, loaded once: a search shares them with every
    trial, whatever its number of workers.

    Every worker reads all of `val` every epoch, so it is always held in memory. `train` is
    too unless `cluster.materialize_train` is off. Held in memory, it is cut by the driver
    into one dataset per worker (`for_workers`). Streamed from Parquet, it is shared out by
    Ray Train's streaming split, whose coordinator actor starts every fit's first epoch
    seconds late (bench/train_sharding.py; docs/benchmarks.md).
    """

    val: ray.data.Dataset  # materialized
    train_rows: pa.Table | None = None  # held in memory
    train_stream: ray.data.Dataset | None = None  # read from Parquet as it is consumed

    def for_workers(self, num_workers: int) -> tuple[dict, list[str]]:
        """The `datasets` for a `TorchTrainer` of `num_workers` workers, and those that Ray
        Train must split across them."""
        import ray.data

        if self.train_stream is not None:
            return {"train": self.train_stream, "val": self.val}, ["train"]
        datasets = {"val": self.val}
        # Rows rank, rank + n, ...: each worker sees rows from the whole split (a split in time
        # order stays spread over time), and every worker the same number (the last
        # len % n rows are left out, as Ray's equal split does), so the ranks take the same
        # number of steps and none waits in a collective for a step that never comes.
        rows_per_worker = len(self.train_rows) // num_workers
        for rank in range(num_workers):
            rows = range(rank, rows_per_worker * num_workers, num_workers)
            datasets[train_dataset_name(rank)] = ray.data.from_arrow(
                self.train_rows.take(list(rows))
            )
        return datasets, []


def load_training_data(config: ExperimentConfig, paths: ExperimentPaths) -> TrainingData:
    """The features a fit trains and validates on. A search loads them once for all its
    trials: reads started inside a trial would compete with the other trials' workers for
    CPUs and could wait forever."""
    import pyarrow as pa
    import ray.data

    folders = {split: paths.features / split for split in ("train", "val")}
    for folder in folders.values():
        if not folder.is_dir():
            raise DataError(f"{folder}: features not found; run the `preprocess` stage first")
    val = ray.data.from_arrow(read_feature_files(folders["val"]))
    if not config.cluster.materialize_train:
        stream = ray.data.read_parquet(str(folders["train"].resolve()))
        return TrainingData(val, train_stream=stream)
    train_rows = pa.concat_tables(read_feature_files(folders["train"]))
    if config.train.distillation is not None:
        train_rows = with_teacher_logits(
            train_rows, config, paths, supervised_task(config).input_key
        )
    return TrainingData(val, train_rows=train_rows)


def read_feature_files(folder: Path) -> list:
    """A features folder as Arrow tables, one per Parquet file (one block each, as Ray Data's
    reader makes them), read in this process.

    A split held in memory anyway is read here rather than by
    `ray.data.read_parquet` and `materialize()`: their metadata and read tasks each start a
    worker process, seconds before every fit for splits of under a megabyte. And on a
    cluster the features are on this machine only, where a read task on another node would
    not find them.
    """
    files = sorted(folder.glob("*.parquet"))
    if not files:
        raise DataError(f"{folder}: no Parquet files; run the `preprocess` stage again")
    return [read_parquet(file, written_by="preprocess") for file in files]


def build_trainer(
    context: TrainingRunContext,
    data: TrainingData,
    *,
    run_name: str,
    storage_path: str,
    callbacks: list | None = None,
):
    """The `TorchTrainer` for one training run; `run_name` under `storage_path` is where its
    checkpoints go, and a second fit with the same name resumes from them."""
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    config = context.experiment
    cluster, stopping = config.cluster, config.train.early_stopping
    resources = {"CPU": cluster.cpus_per_worker}
    if cluster.use_gpu:
        resources["GPU"] = 1
    if config.task == "generation":
        from lamina.training.adversarial import train_gan_per_worker as train_fn
    else:
        train_fn = train_fn_per_worker
    datasets, split_by_ray = data.for_workers(cluster.num_workers)
    return TorchTrainer(
        train_fn,
        train_loop_config=replace(context, train_split_by_ray=bool(split_by_ray)).as_loop_config(),
        # With GPUs Ray gives each worker its own (CUDA_VISIBLE_DEVICES) and DDP runs on NCCL.
        torch_config=TorchConfig(backend=cluster.ddp_backend),
        scaling_config=ray.train.ScalingConfig(
            num_workers=cluster.num_workers,
            use_gpu=cluster.use_gpu,
            resources_per_worker=resources,
            placement_strategy=cluster.placement_strategy,
        ),
        run_config=ray.train.RunConfig(
            name=run_name,
            storage_path=storage_path,
            callbacks=callbacks,
            # Ray keeps the `num_to_keep` best by the monitored metric plus always the latest,
            # which is what a restart after a worker failure resumes from.
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=1,
                checkpoint_score_attribute=stopping.monitor,
                checkpoint_score_order=stopping.mode,
            ),
            failure_config=ray.train.FailureConfig(max_failures=cluster.max_failures),
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),
        ),
        datasets=datasets,
        dataset_config=ray.train.DataConfig(datasets_to_split=split_by_ray),
    )


def checkpoint_storage(cluster: ClusterConfig, local: Path) -> str:
    """Where Ray Train writes checkpoints: `cluster.storage_path`, which every node of a
    cluster reaches, when set; else `local`, which only a one-machine Ray can use."""
    return cluster.storage_path or str(local)


def run_training(
    config: ExperimentConfig, paths: ExperimentPaths, vocabulary: list[str] | None = None
) -> TrainingOutcome:
    """Fit, or resume the fit an interrupted stage left for the same inputs (resume.py)."""
    from mlflow.tracking import MlflowClient

    root = paths.root.resolve()
    uri = tracking_uri(root)
    storage = checkpoint_storage(config.cluster, paths.ray_storage)
    inputs = [paths.features, paths.preprocessor]
    vocab_size = None if vocabulary is None else len(vocabulary)
    fit = resumable_fit(config, inputs, vocab_size, paths.ray_storage)
    discard_other_fits(config.name, fit.run_name, paths.ray_storage, storage)
    # Both services before a run is opened: a server or cluster that is down leaves no run.
    check_tracking_server(uri)
    init_ray(config.cluster, state_api=True)  # see init_ray: Ray Train's cleaner asks it
    check_worker_resources(config)
    run_id, experiment_id = _reattach_run(fit, uri)
    if run_id is None:
        discard_unmarked_checkpoints(fit, storage)
        run_id, experiment_id = open_training_run(config, root)
        fit.save_run_id(run_id)
        logger.info("MLflow run %s in experiment %s", run_id, config.name)
    client = MlflowClient(uri)
    try:
        trainer = build_trainer(
            TrainingRunContext(config, TrackedRun(uri, run_id), vocabulary=vocabulary),
            load_training_data(config, paths),
            # Same inputs, same name: Ray Train resumes a name whose folder holds checkpoints.
            run_name=fit.run_name,
            storage_path=storage,
        )
        result = fit_interruptibly(trainer)
    except KeyboardInterrupt:
        # The marker stays with the checkpoints: the next run of the stage resumes this run.
        client.set_terminated(run_id, status="KILLED")
        logger.warning(
            "interrupted: checkpoints kept; the next `dvc repro` resumes MLflow run %s", run_id
        )
        raise
    except BaseException:
        client.set_terminated(run_id, status="FAILED")
        raise

    stopping = config.train.early_stopping
    best = result.get_best_checkpoint(metric=stopping.monitor, mode=stopping.mode)
    # Ray's `metrics_dataframe` holds only the epochs whose checkpoints it kept; the MLflow run
    # holds every epoch (rank 0 logged each one), including those before a restart.
    history = epoch_history(client, run_id)
    best_epoch_row = best_row(history, stopping.monitor, stopping.mode)
    run = RunInfo(
        run_id=run_id,
        experiment_id=experiment_id,
        best_epoch=int(best_epoch_row["epoch"]),
        best_value=float(best_epoch_row[stopping.monitor]),
        monitor=stopping.monitor,
    )
    # Passwords masked: everyone who can read the run can read its artifacts.
    client.log_text(run_id, redacted(dump_config(config)), "config.yaml")
    # The MLflow step of the best epoch (steps count from 0; progress lines from 1).
    client.set_tag(run_id, "lamina.best_epoch", str(run.best_epoch))
    client.set_terminated(run_id, status="FINISHED")
    with best.as_directory() as folder:
        state = torch.load(Path(folder) / CHECKPOINT_FILE, weights_only=True)
    # The best weights now travel with the stage's outputs and the MLflow run; Ray's run folder
    # (best and latest checkpoints) is only needed while the fit is in progress.
    result.filesystem.delete_dir(result.path)
    fit.forget()
    return TrainingOutcome(run, history, state["model"])


def check_worker_resources(config: ExperimentConfig) -> None:
    """The training workers' CPUs (and GPUs) fit in the Ray cluster (`check_resources`)."""
    cluster = config.cluster
    where = f"in conf/experiment/{config.name}.yaml"
    check_resources(
        "CPU",
        cluster.num_workers * cluster.cpus_per_worker,
        f"cluster.num_workers={cluster.num_workers} x "
        f"cluster.cpus_per_worker={cluster.cpus_per_worker:g}",
        f"lower them {where}",
    )
    if cluster.use_gpu:
        check_resources(
            "GPU",
            cluster.num_workers,
            f"cluster.num_workers={cluster.num_workers} with cluster.use_gpu (a GPU each)",
            f"lower cluster.num_workers or set cluster.use_gpu: false {where}",
        )


def fit_interruptibly(trainer):
    """`trainer.fit()`, which Ctrl-C interrupts at once with `KeyboardInterrupt`.

    Called from the main thread, Ray Train's `fit` replaces Python's Ctrl-C handler with its
    own, which waits for the controller to abort the workers and then exits the process,
    with status 0 or 1 and without the stage's clean-up. From another thread it leaves Ctrl-C
    alone (as inside Tune): the main thread then gets `KeyboardInterrupt` while it waits,
    and the controller and its workers end with this process, the owner of the controller.
    """
    outcome: dict = {}

    def fit() -> None:
        try:
            outcome["result"] = trainer.fit()
        except BaseException as error:  # noqa: BLE001 (raised again in the main thread)
            outcome["error"] = error

    # A daemon: an interrupted fit must not keep the process from exiting.
    thread = threading.Thread(target=fit, name="ray-train-fit", daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def _reattach_run(fit: ResumableFit, uri: str) -> tuple[str | None, str | None]:
    """The MLflow run of an interrupted fit of the same inputs, set running again; None when
    there is none (or it was deleted meanwhile)."""
    run_id = fit.saved_run_id()
    experiment_id = None if run_id is None else reopen_run(uri, run_id)
    if experiment_id is None:
        fit.forget()
        return None, None
    logger.info(
        "resuming MLflow run %s from the last checkpoint of an interrupted fit (%s)",
        run_id,
        fit.run_name,
    )
    return run_id, experiment_id
