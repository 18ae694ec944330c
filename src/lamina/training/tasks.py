"""What differs between supervised tasks: which feature columns, which loss, which metrics.

The supervised loop is written once; it asks the task for these few things.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lamina.config.schema import ExperimentConfig


@dataclass(frozen=True)
class SupervisedTask:
    kind: str  # "classification" or "regression"
    input_key: str  # feature column the model reads
    target_key: str  # feature column it predicts

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.kind == "classification":
            return F.cross_entropy(outputs, targets)
        return F.mse_loss(outputs, targets)

    @property
    def metric_keys(self) -> tuple[str, str]:
        """The keys of `metric_sums`, in the order the ranks add them up."""
        if self.kind == "classification":
            return ("val/loss", "val/accuracy")
        return ("val/loss", "val/mae")

    def metric_sums(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        """Per-batch sums; divided by the row count they give the epoch's validation metrics."""
        if self.kind == "classification":
            return {
                "val/loss": F.cross_entropy(outputs, targets, reduction="sum").item(),
                "val/accuracy": (outputs.argmax(dim=1) == targets).sum().item(),
            }
        per_row = (outputs - targets).flatten(1)
        return {
            "val/loss": per_row.pow(2).mean(dim=1).sum().item(),
            "val/mae": per_row.abs().mean(dim=1).sum().item(),
        }


def supervised_task(config: ExperimentConfig) -> SupervisedTask:
    """The task of the experiment's data, on the feature columns its preprocess stage wrote."""
    from lamina.features import kind_for

    kind = kind_for(config)
    return SupervisedTask(config.task, kind.input_column, kind.target_column)
