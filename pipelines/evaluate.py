"""DVC stage `evaluate`: the trained model on the held-back test split, never seen before.

Classifiers: accuracy, loss, per-class precision/recall/F1 (+ a TF-IDF baseline for text).
Forecasters: MAE/RMSE beside naive, seasonal-naive and linear-AR baselines.
Generators: FID, class coverage and confidence as the trained `cnn-mnist` judges the samples.
In:  outputs/<experiment>/model/, features/test/, splits/, history.csv, run.json
Out: metrics.json (DVC metrics), predictions.csv and plots/*.png (DVC plots); all also logged
     to the experiment's MLflow run.
"""

import json
import logging

from lamina.atomic import atomic_path, atomic_write_text
from lamina.config.paths import ExperimentPaths
from lamina.entrypoint import run_stage
from lamina.evaluation.evaluate import evaluate_generator
from lamina.features import kind_for
from lamina.models import load_trained_model
from lamina.tracking.runs import RunInfo, log_evaluation

logger = logging.getLogger("lamina.evaluation.evaluate")


def evaluate(experiment: str) -> None:
    paths = ExperimentPaths(experiment)
    config, model = load_trained_model(paths)
    run = RunInfo.load(paths.run_info)
    # A GAN's generator is scored by its judge; every other model by its kind of data.
    evaluate_model = (
        evaluate_generator if config.task == "generation" else kind_for(config).evaluate
    )
    with atomic_path(paths.plots) as staging:
        staging.mkdir()
        evaluation = evaluate_model(config, model, paths, staging)
    atomic_write_text(paths.predictions, evaluation.predictions.to_csv(index=False))
    atomic_write_text(paths.metrics, json.dumps(evaluation.metrics, indent=2) + "\n")
    log_evaluation(run.run_id, evaluation.metrics, [paths.plots, paths.predictions, paths.history])
    headline = {k: round(v, 4) for k, v in evaluation.metrics.items() if k.count("/") == 1}
    logger.info("%s on the test split: %s", experiment, headline)


if __name__ == "__main__":
    run_stage(evaluate)
