"""The MLflow model registry: log a trained model, register it, decide its alias.

A new version becomes `champion` only when it beats the current champion on the experiment's
primary test metric by the configured margin; otherwise it is the `challenger`. Registry stages
are deprecated in MLflow, so aliases carry this (`models:/<name>@champion`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from lamina.config import RegistryConfig
from lamina.tracking import dvc_data_hash, git_commit, tracking_uri

CHAMPION = "champion"
CHALLENGER = "challenger"


@dataclass(frozen=True)
class Registration:
    model_name: str
    version: int
    alias: str
    primary_metric: str
    value: float
    champion_value_before: float | None
    model_uri: str

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")


def beats_champion(value: float, champion: float | None, rule: RegistryConfig) -> bool:
    if champion is None:
        return True
    if rule.greater_is_better:
        return value > champion + rule.promotion_margin
    return value < champion - rule.promotion_margin


def _champion_value(client, model_name: str, metric: str) -> float | None:
    from mlflow.exceptions import MlflowException

    try:
        champion = client.get_model_version_by_alias(model_name, CHAMPION)
    except MlflowException:
        return None  # no such model yet, or no champion alias
    return float(champion.tags[metric]) if metric in champion.tags else None


def register_model(
    model: torch.nn.Module,
    input_example: np.ndarray,
    model_name: str,
    run_id: str,
    metrics: dict[str, float],
    rule: RegistryConfig,
    root: Path,
) -> Registration:
    """Log `model` into the training run, register a new version and set its alias."""
    import mlflow
    import mlflow.pytorch
    from mlflow.models import infer_signature
    from mlflow.tracking import MlflowClient

    uri = tracking_uri(root)
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    with torch.no_grad():
        example_output = model(torch.from_numpy(input_example)).numpy()
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pytorch.log_model(
            model,
            name="model",
            signature=infer_signature(input_example, example_output),
            input_example=input_example,
            registered_model_name=model_name,
            # Explicit requirements keep the CPU torch build and skip slow inference of them.
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "numpy"],
        )
    version = int(info.registered_model_version)
    value = metrics[rule.primary_metric]
    champion_before = _champion_value(client, model_name, rule.primary_metric)
    alias = CHAMPION if beats_champion(value, champion_before, rule) else CHALLENGER

    lineage = {
        "lamina.run_id": run_id,
        "mlflow.source.git.commit": git_commit(root),
        "lamina.dvc_data_hash": dvc_data_hash(root),
        rule.primary_metric: str(value),
    }
    for key, tag_value in lineage.items():
        client.set_model_version_tag(model_name, str(version), key, tag_value)
    client.set_registered_model_alias(model_name, alias, str(version))
    decision = (
        f"{alias}: {rule.primary_metric} {value:.4f} vs champion "
        + ("none" if champion_before is None else f"{champion_before:.4f}")
        + f" (margin {rule.promotion_margin})"
    )
    client.set_tag(run_id, "lamina.promotion", decision)
    return Registration(
        model_name=model_name,
        version=version,
        alias=alias,
        primary_metric=rule.primary_metric,
        value=value,
        champion_value_before=champion_before,
        model_uri=f"models:/{model_name}/{version}",
    )
