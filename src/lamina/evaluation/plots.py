"""PNG plots a person would rather look at than read: confusion matrix, training curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def plot_confusion_matrix(predictions: pd.DataFrame, class_names: list[str], path: Path) -> None:
    index = {name: i for i, name in enumerate(class_names)}
    counts = np.zeros((len(class_names), len(class_names)), dtype=int)
    for actual, predicted in zip(predictions["actual"], predictions["predicted"], strict=True):
        counts[index[actual], index[predicted]] += 1
    size = 1.0 + 0.55 * len(class_names)
    figure, axes = plt.subplots(figsize=(size + 1.5, size))
    image = axes.imshow(counts, cmap="Blues")
    axes.set_xticks(range(len(class_names)), class_names)
    axes.set_yticks(range(len(class_names)), class_names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("actual")
    accuracy = np.trace(counts) / max(counts.sum(), 1)
    axes.set_title(f"Confusion matrix (test, accuracy {accuracy:.4f})")
    threshold = counts.max() / 2
    for row in range(len(class_names)):
        for col in range(len(class_names)):
            if counts[row, col]:
                colour = "white" if counts[row, col] > threshold else "black"
                axes.text(col, row, counts[row, col], ha="center", va="center", color=colour)
    figure.colorbar(image, ax=axes, fraction=0.046)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_training_curves(history: pd.DataFrame, path: Path) -> None:
    """Loss (train and val) and every other validation metric against the epoch."""
    other = [c for c in history.columns if c.startswith("val/") and c != "val/loss"]
    figure, panels = plt.subplots(1, 1 + len(other), figsize=(5 * (1 + len(other)), 3.8))
    panels = np.atleast_1d(panels)
    epochs = history["epoch"] + 1
    for column in ("train/loss", "val/loss"):
        if column in history:
            panels[0].plot(epochs, history[column], marker="o", label=column)
    panels[0].set_title("loss")
    panels[0].legend()
    for axes, column in zip(panels[1:], other, strict=True):
        axes.plot(epochs, history[column], marker="o", color="tab:green")
        axes.set_title(column)
    for axes in panels:
        axes.set_xlabel("epoch")
        axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_forecast(predictions: pd.DataFrame, path: Path) -> None:
    """Actual and predicted values over the test stretch, and the error below them."""
    figure, (top, bottom) = plt.subplots(
        2, 1, figsize=(10, 5.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    times = pd.to_datetime(predictions["time"])
    top.plot(times, predictions["actual"], label="actual", color="black", linewidth=1.2)
    top.plot(times, predictions["predicted"], label="predicted", color="tab:orange", linewidth=1)
    mae = (predictions["predicted"] - predictions["actual"]).abs().mean()
    top.set_title(f"One-step-ahead forecast on the test stretch (MAE {mae:.3f})")
    top.legend()
    top.grid(alpha=0.3)
    bottom.plot(times, predictions["predicted"] - predictions["actual"], color="tab:red")
    bottom.axhline(0, color="black", linewidth=0.8)
    bottom.set_ylabel("error")
    bottom.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_search(trials: pd.DataFrame, space: dict, metric: str, path: Path) -> None:
    """The search at a glance: the metric per trial, then the metric against each parameter."""
    done = trials[trials["status"] != "error"]
    columns = 1 + len(space)
    figure, axes = plt.subplots(1, columns, figsize=(3.6 * columns, 3.4), squeeze=False)
    first = axes[0][0]
    colours = ["tab:green" if s == "completed" else "tab:grey" for s in done["status"]]
    first.bar(done["trial"], done[metric], color=colours)
    first.set_xlabel("trial (grey: stopped early)")
    first.set_ylabel(f"best {metric}")
    first.set_title("Per trial")
    low, high = done[metric].min(), done[metric].max()
    margin = 0.1 * (high - low) or 0.01 * abs(high) or 0.01
    first.set_ylim(low - margin, high + margin)
    for axis, (key, dimension) in zip(axes[0][1:], space.items(), strict=True):
        if dimension.distribution == "choice":
            labels = [str(v) for v in dimension.values]
            positions = [labels.index(str(v)) for v in done[key]]
            axis.scatter(positions, done[metric], color=colours)
            axis.set_xticks(range(len(labels)), labels)
        else:
            axis.scatter(done[key], done[metric], color=colours)
            if dimension.distribution == "loguniform":
                axis.set_xscale("log")
        axis.set_xlabel(key)
        axis.set_title(f"{metric} vs {key}")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
