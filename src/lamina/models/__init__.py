"""Model definitions, one short file per architecture, and `build_model` to pick one."""

from __future__ import annotations

from torch import nn

from lamina.config import CNNConfig, ExperimentConfig
from lamina.models.cnn import ConvNet


def build_model(config: ExperimentConfig) -> nn.Module:
    model = config.model
    if isinstance(model, CNNConfig):
        return ConvNet(
            image_shape=config.data.image_shape,
            num_classes=config.data.num_classes,
            channels=model.channels,
            hidden_size=model.hidden_size,
            dropout=model.dropout,
            activation=model.activation,
            batch_norm=model.batch_norm,
        )
    raise TypeError(f"no builder for model config {type(model).__name__}")


def load_trained_model(config: ExperimentConfig, weights_file) -> nn.Module:
    """The architecture from `config` with the weights the train stage saved, in eval mode."""
    import torch

    model = build_model(config)
    model.load_state_dict(torch.load(weights_file, weights_only=True))
    return model.eval()
