"""DVC stage `prepare`: validate the raw images, split them train/val/test (stratified, seeded).

In:  data/<dataset>/ (raw, versioned by data.dvc), config sections `data` and `split`.
Out: outputs/<experiment>/splits/{train,val,test}.parquet
"""

import logging

from lamina.atomic import atomic_path
from lamina.config import load_resolved_config
from lamina.data.image_arrays import read_image_arrays
from lamina.data.image_parquet import write_image_split
from lamina.data.split import split_train_val_test, stratified_subsample
from lamina.entrypoint import run_stage
from lamina.paths import ExperimentPaths

logger = logging.getLogger("lamina.prepare")


def prepare(experiment: str) -> None:
    paths = ExperimentPaths(experiment)
    config = load_resolved_config(paths.config)
    images, labels = read_image_arrays(config.data)
    if config.data.max_samples is not None:
        keep = stratified_subsample(labels, config.data.max_samples, config.split.seed)
        images, labels = images[keep], labels[keep]

    split = config.split
    indices = split_train_val_test(labels, split.val_fraction, split.test_fraction, split.seed)
    with atomic_path(paths.splits) as staging:
        staging.mkdir()
        for name, rows in indices.items():
            write_image_split(staging / f"{name}.parquet", images[rows], labels[rows])
    logger.info("split %d images: %s", len(labels), {k: len(v) for k, v in indices.items()})


if __name__ == "__main__":
    run_stage(prepare)
