"""Patience-based early stopping on a validation metric; its state goes into checkpoints."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd


def best_row(table: pd.DataFrame, metric: str, mode: str) -> pd.Series:
    """The row of `table` (epochs, trials) with the best `metric`; the first one on a tie."""
    scores = table[metric]
    return table.loc[scores.idxmax() if mode == "max" else scores.idxmin()]


@dataclass
class EarlyStopping:
    mode: str  # "min" or "max"
    patience: int
    best_value: float | None = None
    best_epoch: int = -1
    epochs_without_improvement: int = 0

    def update(self, epoch: int, value: float) -> bool:
        """Record this epoch's value; True when it is the best so far."""
        improved = (
            self.best_value is None
            or (self.mode == "max" and value > self.best_value)
            or (self.mode == "min" and value < self.best_value)
        )
        if improved:
            self.best_value, self.best_epoch = value, epoch
            self.epochs_without_improvement = 0
        else:
            self.epochs_without_improvement += 1
        return improved

    @property
    def should_stop(self) -> bool:
        return self.epochs_without_improvement >= self.patience

    def state_dict(self) -> dict:
        return {
            "best_value": self.best_value,
            "best_epoch": self.best_epoch,
            "epochs_without_improvement": self.epochs_without_improvement,
        }

    def load_state_dict(self, state: dict) -> None:
        self.best_value = state["best_value"]
        self.best_epoch = state["best_epoch"]
        self.epochs_without_improvement = state["epochs_without_improvement"]
