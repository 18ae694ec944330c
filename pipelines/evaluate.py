"""DVC stage `evaluate`: the trained model on the held-back test split, never seen before.

In:  outputs/<experiment>/model/, features/test/, history.csv, run.json
Out: metrics.json (DVC metrics), predictions.csv and plots/*.png (DVC plots); all also logged
     to the experiment's MLflow run.
"""

import json
import logging

from lamina.atomic import atomic_path, atomic_write_text
from lamina.config import load_resolved_config
from lamina.entrypoint import run_stage
from lamina.evaluate import classification_metrics, predict_logits, prediction_table
from lamina.models import load_trained_model
from lamina.paths import ExperimentPaths
from lamina.plots import plot_confusion_matrix, plot_training_curves
from lamina.preprocess import read_feature_split
from lamina.tracking import RunInfo, log_evaluation

logger = logging.getLogger("lamina.evaluate")


def evaluate(experiment: str) -> None:
    import pandas as pd

    paths = ExperimentPaths(experiment)
    config = load_resolved_config(paths.config)
    run = RunInfo.load(paths.run_info)
    model = load_trained_model(config, paths.model_dir / "model.pt")
    images, labels = read_feature_split(paths.features / "test")

    class_names = config.data.class_names
    logits = predict_logits(model, images)
    metrics = classification_metrics(logits, labels, class_names)
    predictions = prediction_table(logits, labels, class_names)

    with atomic_path(paths.plots) as staging:
        staging.mkdir()
        plot_confusion_matrix(predictions, class_names, staging / "confusion_matrix.png")
        plot_training_curves(pd.read_csv(paths.history), staging / "training_curves.png")
    atomic_write_text(paths.predictions, predictions.to_csv(index=False))
    atomic_write_text(paths.metrics, json.dumps(metrics, indent=2) + "\n")
    log_evaluation(run.run_id, metrics, [paths.plots, paths.predictions, paths.history])
    logger.info(
        "test accuracy %.4f, loss %.4f on %d examples",
        metrics["test/accuracy"],
        metrics["test/loss"],
        len(labels),
    )


if __name__ == "__main__":
    run_stage(evaluate)
