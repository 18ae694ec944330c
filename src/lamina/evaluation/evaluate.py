"""Test-split evaluation shared by the kinds of data, and a GAN's. Only the held-back test split
is scored.

Each kind of data evaluates its models (`lamina.features.DataKind.evaluate`): classifiers of
images and text through `evaluate_classifier`, forecasters in `lamina.features.series`. Each
returns the metrics DVC and MLflow record (keys fixed: `test/...`, `baseline/...`), a table of
predictions (a DVC plot), and writes its PNG plots into `plots_dir`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from lamina.config.paths import ExperimentPaths
from lamina.config.schema import ExperimentConfig
from lamina.evaluation.plots import plot_confusion_matrix, plot_training_curves


@dataclass(frozen=True)
class Evaluation:
    metrics: dict[str, float]
    predictions: pd.DataFrame


@torch.no_grad()
def predict_batches(
    model: torch.nn.Module, inputs: np.ndarray, batch_size: int = 512
) -> torch.Tensor:
    model.eval()
    chunks = [
        model(torch.as_tensor(np.array(inputs[start : start + batch_size])))
        for start in range(0, len(inputs), batch_size)
    ]
    return torch.cat(chunks)


def classification_metrics(
    logits: torch.Tensor, labels: np.ndarray, class_names: list[str]
) -> dict[str, float]:
    """Accuracy, loss, and per class: accuracy (= recall), precision, recall and F1."""
    from sklearn.metrics import precision_recall_fscore_support

    targets = torch.as_tensor(np.array(labels, dtype=np.int64))
    predicted = logits.argmax(dim=1)
    metrics = {
        "test/accuracy": (predicted == targets).double().mean().item(),
        "test/loss": F.cross_entropy(logits.double(), targets).item(),
    }
    indices = list(range(len(class_names)))
    precision, recall, f1, _ = precision_recall_fscore_support(
        targets.numpy(), predicted.numpy(), labels=indices, zero_division=0
    )
    for index, name in enumerate(class_names):
        metrics[f"test/class_accuracy/{name}"] = float(recall[index])
        metrics[f"test/precision/{name}"] = float(precision[index])
        metrics[f"test/recall/{name}"] = float(recall[index])
        metrics[f"test/f1/{name}"] = float(f1[index])
    return metrics


def evaluate_classifier(
    config: ExperimentConfig,
    model: torch.nn.Module,
    inputs: np.ndarray,
    labels: np.ndarray,
    paths: ExperimentPaths,
    plots_dir: Path,
    baseline: dict[str, float] | None = None,
) -> Evaluation:
    """The test split's features (`inputs`, `labels`) classified; the metrics of the kind's
    `baseline`, if it has one, beside the model's."""
    logits = predict_batches(model, inputs)
    class_names = config.data.class_names
    metrics = classification_metrics(logits, labels, class_names) | (baseline or {})
    names = np.asarray(class_names)
    predictions = pd.DataFrame(
        {"actual": names[labels], "predicted": names[logits.argmax(dim=1).numpy()]}
    )
    plot_confusion_matrix(predictions, class_names, plots_dir / "confusion_matrix.png")
    plot_training_curves(pd.read_csv(paths.history), plots_dir / "training_curves.png")
    return Evaluation(metrics, predictions)


def evaluate_generator(
    config: ExperimentConfig, generator: torch.nn.Module, paths: ExperimentPaths, plots_dir: Path
) -> Evaluation:
    """Score generated digits with the trained judge classifier (FID, class coverage)."""
    from lamina.data.image_parquet import pixels_from_arrow
    from lamina.data.parquet_files import read_parquet
    from lamina.evaluation.gan_metrics import gan_test_metrics, judge_features, plot_sample_grid
    from lamina.features.images import ImageStandardizer
    from lamina.models import load_trained_model

    judge_paths = ExperimentPaths(config.model.judge_experiment, paths.root)
    judge_config, judge = load_trained_model(judge_paths)
    judge_scale = ImageStandardizer.load(judge_paths.preprocessor)

    test = read_parquet(paths.splits / "test.parquet", written_by="prepare")
    real_pixels = pixels_from_arrow(test.column("image"), config.data.image_shape)
    metrics = gan_test_metrics(
        generator,
        judge,
        judge_scale.pixel_mean,
        judge_scale.pixel_std,
        real_pixels,
        num_samples=max(1000, len(real_pixels)),
        seed=config.train.seed,
    )

    generator.eval()
    with torch.no_grad():
        noise = torch.randn(
            64, config.model.latent_dim, generator=torch.Generator().manual_seed(config.train.seed)
        )
        samples = generator(noise)
    plot_sample_grid(samples, plots_dir / "samples.png", f"{config.name}: 64 generated samples")
    _, probabilities = judge_features(
        judge, judge_scale.pixel_mean, judge_scale.pixel_std, (samples + 1) * 127.5
    )
    names = np.asarray(judge_config.data.class_names)
    predictions = pd.DataFrame(
        {
            "sample": np.arange(len(samples)),
            "judged_class": names[probabilities.argmax(dim=1).numpy()],
            "confidence": probabilities.max(dim=1).values.numpy(),
        }
    )
    plot_training_curves(pd.read_csv(paths.history), plots_dir / "training_curves.png")
    return Evaluation(metrics, predictions)
