"""DVC stage `register`: the trained model, with its preprocessing, into the MLflow registry.

The registered model takes raw pixels (the fitted scaler is inside it). The new version gets
the `champion` alias only if it beats the current champion's primary test metric.
In:  outputs/<experiment>/model/, preprocessor.json, metrics.json, run.json, features/test/
Out: outputs/<experiment>/registration.json
"""

import json
import logging

import numpy as np

from lamina.atomic import atomic_path
from lamina.config import load_resolved_config
from lamina.data.image_parquet import pixels_from_arrow
from lamina.entrypoint import run_stage
from lamina.models import load_trained_model
from lamina.models.raw_input import RawImageClassifier
from lamina.paths import ExperimentPaths
from lamina.preprocess import ImageStandardizer
from lamina.registry import register_model
from lamina.tracking import RunInfo

logger = logging.getLogger("lamina.register")


def register(experiment: str) -> None:
    import pyarrow.parquet as pq

    paths = ExperimentPaths(experiment)
    config = load_resolved_config(paths.config)
    run = RunInfo.load(paths.run_info)
    standardizer = ImageStandardizer.load(paths.preprocessor)
    metrics = json.loads(paths.metrics.read_text())
    network = load_trained_model(config, paths.model_dir / "model.pt")
    model = RawImageClassifier(network, standardizer.pixel_mean, standardizer.pixel_std).eval()

    # The input example is raw test pixels, exactly what a user of the registered model sends.
    raw_test = pq.read_table(paths.splits / "test.parquet").slice(0, 4)
    example = pixels_from_arrow(raw_test.column("image"), config.data.image_shape)
    registration = register_model(
        model,
        example.astype(np.float32),
        model_name=config.name,
        run_id=run.run_id,
        metrics=metrics,
        rule=config.registry,
        root=paths.root.resolve(),
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
