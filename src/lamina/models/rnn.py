"""A recurrent text classifier: token ids -> LSTM or GRU -> pooled over real tokens -> logits."""

from __future__ import annotations

import torch
from torch import nn

from lamina.models.activations import make_activation

RECURRENT_CELLS: dict[str, type[nn.LSTM | nn.GRU]] = {"lstm": nn.LSTM, "gru": nn.GRU}


class RNNClassifier(nn.Module):
    """(B, L) token ids, 0 = padding -> embeddings -> LSTM / GRU -> [mean ; max] -> logits (B, C).

    Padding sits at the end of each row. The recurrent layer runs over it too (no packing, so the
    forward pass has no data-dependent control flow); pooling then looks at real tokens only.
    """

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        cell: str,
        embedding_dim: int,
        hidden_size: int,
        num_layers: int,
        bidirectional: bool,
        dropout: float,
        activation: str,
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=0)
        self.embedding_dropout = nn.Dropout(dropout)
        self.recurrent = RECURRENT_CELLS[cell](
            embedding_dim,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            # torch applies this between stacked layers only (and warns when there is one).
            dropout=dropout if num_layers > 1 else 0.0,
        )
        state_size = hidden_size * (2 if bidirectional else 1)
        self.head = nn.Sequential(
            nn.Linear(2 * state_size, hidden_size),  # mean and max pooled states, concatenated
            make_activation(activation),
            nn.Dropout(dropout),
            nn.Linear(hidden_size, num_classes),
        )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        real = (tokens != 0).unsqueeze(-1)  # (B, L, 1)
        states, _ = self.recurrent(self.embedding_dropout(self.embedding(tokens)))  # (B, L, S)
        weights = real.to(states.dtype)
        # A row of only padding pools to zeros (divide by at least 1, max over nothing -> 0).
        mean = (states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)  # (B, S)
        peak = states.masked_fill(~real, float("-inf")).amax(dim=1)  # (B, S)
        peak = torch.where(real.any(dim=1), peak, torch.zeros_like(peak))
        return self.head(torch.cat([mean, peak], dim=1))  # (B, C)
