"""A recurrent text classifier: token ids -> LSTM or GRU -> pooled over real tokens -> logits."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from lamina.features.text import PAD_ID, UNKNOWN_ID
from lamina.models.activations import make_activation

RECURRENT_CELLS: dict[str, type[nn.LSTM | nn.GRU]] = {"lstm": nn.LSTM, "gru": nn.GRU}


class RNNClassifier(nn.Module):
    """(B, L) token ids, 0 = padding -> embeddings -> LSTM / GRU -> [mean ; max] -> logits (B, C).

    Padding sits at the end of each row. The sequences are packed, so the recurrent layer never
    reads padding: the backward direction of a bidirectional layer starts at each row's last real
    token, and a row's prediction does not depend on how much padding follows it. Packing also
    skips the padding's compute (most snippets are far shorter than `max_length`).
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
        word_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.word_dropout = word_dropout
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
        if self.training and self.word_dropout > 0:
            dropped = torch.rand(tokens.shape, device=tokens.device) < self.word_dropout
            tokens = tokens.masked_fill(dropped & (tokens != PAD_ID), UNKNOWN_ID)
        lengths = (tokens != PAD_ID).sum(dim=1)  # (B,)
        # An all-padding row is run as one padding step (packing needs length >= 1); the
        # pooling below still sees no real token in it and gives zeros.
        packed = pack_padded_sequence(
            self.embedding_dropout(self.embedding(tokens)),
            lengths.clamp(min=1).cpu(),
            batch_first=True,
            enforce_sorted=False,
        )
        packed_states, _ = self.recurrent(packed)
        states, _ = pad_packed_sequence(
            packed_states, batch_first=True, total_length=tokens.shape[1]
        )  # (B, L, S), zeros after each row's end
        real = (tokens != PAD_ID).unsqueeze(-1)  # (B, L, 1)
        weights = real.to(states.dtype)
        # A row of only padding pools to zeros (divide by at least 1, max over nothing -> 0).
        mean = (states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)  # (B, S)
        peak = states.masked_fill(~real, float("-inf")).amax(dim=1)  # (B, S)
        peak = torch.where(real.any(dim=1), peak, torch.zeros_like(peak))
        return self.head(torch.cat([mean, peak], dim=1))  # (B, C)
