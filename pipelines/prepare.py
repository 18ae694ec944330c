"""DVC stage `prepare`: validate the raw data, split it train/val/test.

In:  data/<dataset>/ (raw, versioned by data.dvc), config sections `data`, `split`, `preprocess`.
Out: outputs/<experiment>/splits/{train,val,test}.parquet
"""

import logging

from lamina.atomic import atomic_path
from lamina.config.compose import load_resolved_config
from lamina.config.paths import ExperimentPaths
from lamina.data.prepare import prepare_splits
from lamina.entrypoint import run_stage

logger = logging.getLogger("lamina.prepare")


def prepare(experiment: str) -> None:
    paths = ExperimentPaths(experiment)
    config = load_resolved_config(paths.config)
    with atomic_path(paths.splits) as staging:
        staging.mkdir()
        counts = prepare_splits(config, staging)
    logger.info("split %s rows: %s", sum(counts.values()), counts)


if __name__ == "__main__":
    run_stage(prepare)
