"""A Transformer-encoder text classifier: token ids + positions -> self-attention -> logits."""

from __future__ import annotations

import math

import torch
from torch import nn

from lamina.models.activations import make_activation


def sinusoidal_positions(max_length: int, d_model: int) -> torch.Tensor:
    """(max_length, d_model) fixed sine / cosine position codes ("Attention Is All You Need")."""
    position = torch.arange(max_length, dtype=torch.float32).unsqueeze(1)  # (L, 1)
    frequency = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
    codes = torch.zeros(max_length, d_model)
    codes[:, 0::2] = torch.sin(position * frequency)
    codes[:, 1::2] = torch.cos(position * frequency[: d_model // 2])
    return codes


class TransformerClassifier(nn.Module):
    """(B, L) token ids, 0 = padding -> embeddings + positions -> pre-norm encoder layers
    -> mean over real tokens -> LayerNorm -> logits (B, C)."""

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        max_length: int,
        d_model: int,
        num_heads: int,
        num_layers: int,
        feedforward_dim: int,
        dropout: float,
        activation: str,
    ) -> None:
        super().__init__()
        self.scale = math.sqrt(d_model)
        self.embedding = nn.Embedding(vocab_size, d_model, padding_idx=0)
        # Unit-variance entries after the sqrt(d_model) scaling, as in the original Transformer;
        # torch's default N(0, 1) would make them sqrt(d_model) times larger than the positions.
        with torch.no_grad():
            nn.init.normal_(self.embedding.weight, std=d_model**-0.5)
            self.embedding.weight[0].zero_()
        # Fixed, so not saved with the weights: rebuilt from max_length and d_model.
        self.register_buffer(
            "positions", sinusoidal_positions(max_length, d_model), persistent=False
        )
        self.dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(
            d_model,
            num_heads,
            feedforward_dim,
            dropout,
            activation=make_activation(activation),
            batch_first=True,
            norm_first=True,
        )
        # Nested tensors do not apply to pre-norm layers; asking for them only warns.
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        # Padding sits at the end and is masked, so the columns after the batch's longest text
        # change nothing; dropping them saves most of the compute on short snippets.
        longest = int((tokens != 0).sum(dim=1).max().clamp(min=1))
        tokens = tokens[:, :longest]
        padding = tokens == 0  # (B, L)
        # A row of only padding leaves attention nothing to attend to (softmax over nothing is
        # NaN): such rows attend to, and pool, their first position instead.
        first = torch.arange(tokens.shape[1], device=tokens.device) == 0  # (L,)
        padding = padding & ~(padding.all(dim=1, keepdim=True) & first)
        x = self.embedding(tokens) * self.scale + self.positions[: tokens.shape[1]]  # (B, L, D)
        x = self.encoder(self.dropout(x), src_key_padding_mask=padding)  # (B, L, D)
        weights = (~padding).unsqueeze(-1).to(x.dtype)  # (B, L, 1)
        pooled = (x * weights).sum(dim=1) / weights.sum(dim=1)  # (B, D)
        return self.head(self.dropout(self.norm(pooled)))  # (B, C)
