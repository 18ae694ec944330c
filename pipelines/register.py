"""DVC stage `register`: the trained model, preprocessing inside, into the MLflow registry.

The registered model takes raw input (pixels, text, a series' history, or noise for a GAN;
see lamina/packaging.py). The new version gets the `champion` alias only if it beats the
current champion's primary test metric by the configured margin, else `challenger`.
In:  outputs/<experiment>/model/, preprocessor.json, metrics.json, run.json, splits/test
Out: outputs/<experiment>/registration.json
"""

import json
import logging

from lamina.atomic import atomic_path
from lamina.config import load_resolved_config
from lamina.entrypoint import run_stage
from lamina.models import load_trained_model
from lamina.packaging import log_model_version
from lamina.paths import ExperimentPaths
from lamina.preprocess import vocabulary_size
from lamina.registry import promote_version
from lamina.tracking import RunInfo

logger = logging.getLogger("lamina.register")


def register(experiment: str) -> None:
    paths = ExperimentPaths(experiment)
    config = load_resolved_config(paths.trained_config)
    run = RunInfo.load(paths.run_info)
    metrics = json.loads(paths.metrics.read_text())
    model = load_trained_model(
        config, paths.model_dir / "model.pt", vocabulary_size(config, paths.preprocessor)
    )
    version = log_model_version(config, paths, model, run.run_id)
    registration = promote_version(
        config.name, version, run.run_id, metrics, config.registry, paths.root.resolve()
    )
    with atomic_path(paths.registration) as staging:
        registration.save(staging)
    logger.info(
        "registered %s version %d as @%s (%s %.4f, champion before: %s)",
        registration.model_name,
        registration.version,
        registration.alias,
        registration.primary_metric,
        registration.value,
        registration.champion_value_before,
    )


if __name__ == "__main__":
    run_stage(register)
