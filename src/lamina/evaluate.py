"""Test-split evaluation of a classifier: the metrics DVC and MLflow record, and predictions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F


@torch.no_grad()
def predict_logits(
    model: torch.nn.Module, images: np.ndarray, batch_size: int = 512
) -> torch.Tensor:
    model.eval()
    chunks = [
        model(torch.as_tensor(np.array(images[start : start + batch_size])))
        for start in range(0, len(images), batch_size)
    ]
    return torch.cat(chunks)


def classification_metrics(
    logits: torch.Tensor, labels: np.ndarray, class_names: list[str]
) -> dict[str, float]:
    """`test/accuracy`, `test/loss` and `test/class_accuracy/<class>` (recall of each class)."""
    targets = torch.as_tensor(np.array(labels, dtype=np.int64))
    predicted = logits.argmax(dim=1)
    metrics = {
        "test/accuracy": (predicted == targets).float().mean().item(),
        "test/loss": F.cross_entropy(logits, targets).item(),
    }
    for index, name in enumerate(class_names):
        members = targets == index
        if members.any():
            metrics[f"test/class_accuracy/{name}"] = (
                (predicted[members] == index).float().mean().item()
            )
    return metrics


def prediction_table(
    logits: torch.Tensor, labels: np.ndarray, class_names: list[str]
) -> pd.DataFrame:
    """One row per test example: `actual` and `predicted` class names (DVC's confusion plot)."""
    names = np.asarray(class_names)
    return pd.DataFrame({"actual": names[labels], "predicted": names[logits.argmax(dim=1).numpy()]})
