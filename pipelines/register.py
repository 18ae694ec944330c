"""DVC stage `register`: the trained model, preprocessing inside, into the MLflow registry.

The registered model takes raw input (pixels or image files, text, a series' history, or noise
for a GAN; see lamina/serving/packaging.py). The new version gets the `champion` alias only if it
beats the current champion's primary test metric by the configured margin, else `challenger`; its
tags carry its lineage and its description is a model card (see lamina/serving/registry.py).
In:  outputs/<experiment>/model/, preprocessor.json, metrics.json, run.json, splits/, and the
     config section `registry` (outputs/<experiment>/config.yaml, as dvc.yaml's params say)
Out: outputs/<experiment>/registration.json
"""

import json
import logging

from lamina.atomic import atomic_path
from lamina.config.compose import load_resolved_config
from lamina.config.paths import ExperimentPaths
from lamina.entrypoint import run_stage
from lamina.models import load_trained_model
from lamina.serving.packaging import log_model_version
from lamina.serving.registry import promote_version
from lamina.tracking.runs import RunInfo

logger = logging.getLogger("lamina.register")


def register(experiment: str) -> None:
    paths = ExperimentPaths(experiment)
    trained, model = load_trained_model(paths)
    # The model is packaged with the config it was trained with; which version becomes the
    # champion is decided by the registry settings of now, which dvc.yaml names as this stage's
    # params: a changed `registry` reruns only this stage, which must then read the change.
    config = trained.model_copy(update={"registry": load_resolved_config(paths.config).registry})
    run = RunInfo.load(paths.run_info)
    metrics = json.loads(paths.metrics.read_text())
    version = log_model_version(config, paths, model, run.run_id)
    registration = promote_version(
        config,
        version,
        run.run_id,
        metrics,
        paths.root.resolve(),
        split_sizes=_split_sizes(paths),
    )
    with atomic_path(paths.registration) as staging:
        registration.save(staging)
    logger.info("registered %s (@%s)", registration.model_uri, registration.alias)


def _split_sizes(paths: ExperimentPaths) -> dict[str, int]:
    """Rows per split, for the model card (from the Parquet footers; no data is read)."""
    import pyarrow.parquet as pq

    from lamina.data.split import SPLIT_NAMES

    return {
        split: pq.ParquetFile(paths.splits / f"{split}.parquet").metadata.num_rows
        for split in SPLIT_NAMES
    }


if __name__ == "__main__":
    run_stage(register)
