"""DVC stage `preprocess`: Ray Data fits on train (pixel scale, vocabulary, series scale) and
applies the result to every split.

In:  outputs/<experiment>/splits/, config sections `data`, `split` and `preprocess`.
Out: outputs/<experiment>/features/{train,val,test}/ (Parquet), preprocessor.json
"""

import logging

from lamina.atomic import atomic_path
from lamina.cluster.ray_runtime import init_ray
from lamina.config.compose import load_resolved_config
from lamina.config.paths import ExperimentPaths
from lamina.entrypoint import run_stage
from lamina.features import kind_for

logger = logging.getLogger("lamina.preprocess")


def preprocess(experiment: str) -> None:
    paths = ExperimentPaths(experiment)
    config = load_resolved_config(paths.config)
    init_ray(config.cluster)
    with atomic_path(paths.features) as staging:
        fitted = kind_for(config).preprocess_splits(config, paths.splits, staging.resolve())
    with atomic_path(paths.preprocessor) as staging:
        fitted.save(staging)
    logger.info("fitted %s on the training split", type(fitted).__name__)


if __name__ == "__main__":
    run_stage(preprocess)
