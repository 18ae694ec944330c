"""DVC stage `tune`: a Ray Tune search whose best trial's params the `train` stage applies.

Each trial is a Ray Train run of the experiment with one sample of `tune.space`, for at most
`tune.max_epochs_per_trial` epochs; ASHA stops the weak ones early. MLflow holds one parent run
per search and a child run per trial. An interrupted search resumes when the stage runs again.
Experiments without a `tune` section write empty params, so `train` uses the config as written.
In:  outputs/<experiment>/features/, preprocessor.json, config sections the trials read
Out: outputs/<experiment>/best_params.yaml (a dependency of `train`),
     outputs/<experiment>/tune/trials.csv (DVC plots) and tune/search.png
"""

import logging

import yaml

from lamina.atomic import atomic_path, atomic_write_text
from lamina.config.compose import load_resolved_config
from lamina.config.paths import ExperimentPaths
from lamina.entrypoint import run_stage

logger = logging.getLogger("lamina.tune")


def tune(experiment: str) -> None:
    paths = ExperimentPaths(experiment)
    config = load_resolved_config(paths.config)
    if config.tune is None:
        with atomic_path(paths.tune_dir) as staging:
            staging.mkdir()
            (staging / "trials.csv").write_text("trial,status\n")
        atomic_write_text(
            paths.best_params, "# no search: no `tune` section in the config\nparams: {}\n"
        )
        logger.info("%s: no search configured; train uses the config as written", experiment)
        return

    # Ray, torch and MLflow load only when there is a search to run.
    from lamina.evaluation.plots import plot_search
    from lamina.features import kind_for
    from lamina.tuning.search import close_search_run, forget_search, run_search

    outcome = run_search(config, paths, kind_for(config).vocabulary(paths.preprocessor))
    monitor = config.train.early_stopping.monitor
    with atomic_path(paths.tune_dir) as staging:
        staging.mkdir()
        outcome.trials.to_csv(staging / "trials.csv", index=False)
        plot_search(outcome.trials, config.tune.space, monitor, staging / "search.png")
    best = {
        "params": outcome.best_params,
        "best_trial": outcome.best_trial,
        monitor: outcome.best_value,
        "mlflow_search_run_id": outcome.parent_run_id,
    }
    atomic_write_text(paths.best_params, yaml.safe_dump(best, sort_keys=False))
    close_search_run(outcome, paths.tune_dir, paths.root.resolve())
    forget_search(config, paths)
    logger.info(
        "best of %d trials: trial %d, %s %.4f with %s",
        len(outcome.trials),
        outcome.best_trial,
        monitor,
        outcome.best_value,
        outcome.best_params,
    )


if __name__ == "__main__":
    run_stage(tune)
