"""DVC stage `train`: Ray Train (DDP over `cluster.num_workers` workers), one MLflow run.

Supervised models train with one loop (classification or regression); a GAN with the
adversarial loop. Both checkpoint every epoch and keep the best.
In:  outputs/<experiment>/features/{train,val}/, preprocessor.json (vocabulary),
     best_params.yaml (the `tune` stage's pick, applied over the config), config sections
     `data`, `preprocess`, `model`, `train`, `cluster`.
Out: outputs/<experiment>/model/model.pt (best epoch's weights) and model/config.yaml (the
     config it was trained with, tuned values applied), history.csv, run.json
"""

import logging

import torch

from lamina.atomic import atomic_path, atomic_write_text
from lamina.config.compose import (
    dump_config,
    load_best_params,
    load_resolved_config,
    with_overrides,
)
from lamina.config.paths import ExperimentPaths
from lamina.entrypoint import run_stage
from lamina.features import kind_for
from lamina.training.driver import run_training

logger = logging.getLogger("lamina.train")


def train(experiment: str) -> None:
    paths = ExperimentPaths(experiment)
    config = load_resolved_config(paths.config)
    tuned = load_best_params(paths.best_params)
    if tuned:
        logger.info("training with the search's best params: %s", tuned)
        config = with_overrides(config, tuned)
    outcome = run_training(config, paths, kind_for(config).vocabulary(paths.preprocessor))

    with atomic_path(paths.model_dir) as staging:
        staging.mkdir()
        torch.save(outcome.best_weights, staging / paths.model_weights.name)
        (staging / paths.trained_config.name).write_text(dump_config(config))
    atomic_write_text(paths.history, outcome.history.to_csv(index=False))
    with atomic_path(paths.run_info) as staging:
        outcome.run.save(staging)
    logger.info(
        "best %s %.4f at epoch %d; MLflow run %s",
        outcome.run.monitor,
        outcome.run.best_value,
        outcome.run.best_epoch + 1,  # counted from 1, as the per-epoch lines count
        outcome.run.run_id,
    )


if __name__ == "__main__":
    run_stage(train)
