"""A recurrent forecaster: a window of past (scaled) values -> the next `horizon` values."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from lamina.models.activations import make_activation


class RNNForecaster(nn.Module):
    """GRU or LSTM over the window, its last hidden state -> a two-layer head.

    (B, W, 1) - last value -> rnn -> last step (B, hidden) -> Linear -> activation -> Linear
    -> change (B, horizon) + last value

    The network sees the window relative to its last value and predicts the change from it.
    A trending series (CO2) reaches levels in val and test that training never saw; a level-free
    input keeps the recurrence in the range it was trained on, and "last value plus a little"
    leaves only the little to learn. On co2 the residual alone stays near the naive forecast and
    a plain GRU misses the test levels by ppm; together they beat a linear autoregression.
    """

    def __init__(
        self,
        cell: Literal["gru", "lstm"],
        hidden_size: int,
        num_layers: int,
        dropout: float,
        activation: str,
        horizon: int,
    ) -> None:
        super().__init__()
        recurrent = nn.GRU if cell == "gru" else nn.LSTM
        # PyTorch applies RNN dropout only between stacked layers (and warns on one layer).
        self.rnn = recurrent(
            input_size=1,
            hidden_size=hidden_size,
            num_layers=num_layers,
            dropout=dropout if num_layers > 1 else 0.0,
            batch_first=True,
        )
        self.head = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(hidden_size, hidden_size),
            make_activation(activation),
            nn.Linear(hidden_size, horizon),
        )

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        last = windows[:, -1]  # (B, 1)
        states, _ = self.rnn(windows - last[:, None])  # (B, W, hidden)
        change = self.head(states[:, -1])  # (B, horizon)
        return last + change  # (B, 1) broadcast over the horizon
