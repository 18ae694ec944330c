"""The MLflow model registry: log a trained model, register it, decide its alias.

A new version becomes `champion` only when it beats the current champion on the experiment's
primary test metric by the configured margin; otherwise it is the `challenger`. Registry stages
are deprecated in MLflow, so aliases carry this (`models:/<name>@champion`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

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


def promote_version(
    model_name: str,
    version: int,
    run_id: str,
    metrics: dict[str, float],
    rule: RegistryConfig,
    root: Path,
) -> Registration:
    """Tag a freshly registered version with its lineage and give it its alias."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri(root))
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
