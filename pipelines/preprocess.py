"""DVC stage `preprocess`: Ray Data fits the pixel scaler on train and applies it to all splits.

In:  outputs/<experiment>/splits/, config sections `data` and `preprocess`.
Out: outputs/<experiment>/features/{train,val,test}/ (Parquet), preprocessor.json
"""

import logging

from lamina.atomic import atomic_path
from lamina.config import load_resolved_config
from lamina.entrypoint import run_stage
from lamina.paths import ExperimentPaths
from lamina.preprocess import preprocess_splits
from lamina.ray_runtime import init_ray

logger = logging.getLogger("lamina.preprocess")


def preprocess(experiment: str) -> None:
    paths = ExperimentPaths(experiment)
    config = load_resolved_config(paths.config)
    init_ray(config.cluster)
    with atomic_path(paths.features) as staging:
        standardizer = preprocess_splits(config, paths.splits, staging.resolve())
    with atomic_path(paths.preprocessor) as staging:
        standardizer.save(staging)
    logger.info(
        "pixel mean %.3f, std %.3f (fitted on %d training rows)",
        standardizer.pixel_mean,
        standardizer.pixel_std,
        standardizer.fitted_on_rows,
    )


if __name__ == "__main__":
    run_stage(preprocess)
