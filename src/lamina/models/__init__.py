"""Model definitions, one short file per architecture, and `build_model` to pick one.

Every model takes one tensor (images, token ids or a window of values) and returns one tensor,
so one supervised training loop serves them all. The GAN pair is built by `build_gan`.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from lamina.config.compose import load_resolved_config
from lamina.config.paths import ExperimentPaths
from lamina.config.schema import ExperimentConfig, RNNConfig, TransformerConfig


def _cnn(config: ExperimentConfig, vocab_size: int | None) -> nn.Module:
    from lamina.models.cnn import ConvNet

    model, data = config.model, config.data
    return ConvNet(
        image_shape=data.image_shape,
        num_classes=data.num_classes,
        channels=model.channels,
        hidden_size=model.hidden_size,
        dropout=model.dropout,
        activation=model.activation,
        batch_norm=model.batch_norm,
    )


def _mlp(config: ExperimentConfig, vocab_size: int | None) -> nn.Module:
    from lamina.models.mlp import MultiLayerPerceptron

    model, data = config.model, config.data
    height, width = data.image_shape
    return MultiLayerPerceptron(
        num_inputs=height * width,
        num_classes=data.num_classes,
        hidden_sizes=model.hidden_sizes,
        dropout=model.dropout,
        activation=model.activation,
    )


def _rnn(config: ExperimentConfig, vocab_size: int | None) -> nn.Module:
    from lamina.models.rnn import RNNClassifier

    model = config.model
    return RNNClassifier(
        vocab_size=_required(vocab_size),
        num_classes=config.data.num_classes,
        cell=model.cell,
        embedding_dim=model.embedding_dim,
        hidden_size=model.hidden_size,
        num_layers=model.num_layers,
        bidirectional=model.bidirectional,
        dropout=model.dropout,
        activation=model.activation,
        word_dropout=model.word_dropout,
    )


def _transformer(config: ExperimentConfig, vocab_size: int | None) -> nn.Module:
    from lamina.models.transformer import TransformerClassifier

    model = config.model
    return TransformerClassifier(
        vocab_size=_required(vocab_size),
        num_classes=config.data.num_classes,
        max_length=config.preprocess.max_length,
        d_model=model.d_model,
        num_heads=model.num_heads,
        num_layers=model.num_layers,
        feedforward_dim=model.feedforward_dim,
        dropout=model.dropout,
        activation=model.activation,
    )


def _forecaster(config: ExperimentConfig, vocab_size: int | None) -> nn.Module:
    from lamina.models.forecaster import RNNForecaster

    model = config.model
    return RNNForecaster(
        cell=model.cell,
        hidden_size=model.hidden_size,
        num_layers=model.num_layers,
        dropout=model.dropout,
        activation=model.activation,
        horizon=config.preprocess.horizon,
    )


# `model.kind` -> the network it names, from the whole config (and a text model's vocabulary
# size). The GAN pair (`dcgan`) is two networks: `build_gan`.
BUILDERS: dict[str, Callable[[ExperimentConfig, int | None], nn.Module]] = {
    "cnn": _cnn,
    "mlp": _mlp,
    "rnn": _rnn,
    "transformer": _transformer,
    "forecaster": _forecaster,
}


def build_model(config: ExperimentConfig, vocab_size: int | None = None) -> nn.Module:
    """The network `config.model` describes; text models also need the fitted vocabulary size."""
    builder = BUILDERS.get(config.model.kind)
    if builder is None:
        raise TypeError(
            f"{type(config.model).__name__} is not a single-network model (a GAN? use build_gan)"
        )
    return builder(config, vocab_size)


def build_model_to_train(config: ExperimentConfig, vocabulary: list[str] | None) -> nn.Module:
    """`build_model` for a fresh fit: a text model's embedding rows start from the pretrained
    word vectors its config names. Trained weights replace them when loaded, so inference
    builds with `build_model` and never needs the vectors."""
    model = build_model(config, None if vocabulary is None else len(vocabulary))
    settings = config.model
    text_model = isinstance(settings, (RNNConfig, TransformerConfig))
    if text_model and settings.pretrained_embeddings != "none":
        from lamina.models.pretrained import initialise_embeddings

        initialise_embeddings(model.embedding, vocabulary, settings.pretrained_embeddings)
    return model


def _required(vocab_size: int | None) -> int:
    if vocab_size is None:
        raise ValueError("text models need the fitted vocabulary size")
    return vocab_size


def load_trained_model(paths: ExperimentPaths) -> tuple[ExperimentConfig, nn.Module]:
    """What an experiment's `train` stage left: the config it trained with (searched values
    applied) and the model with the best epoch's weights, in eval mode. A text model is sized
    by the vocabulary fitted on its training split."""
    import torch

    from lamina.features import kind_for

    config = load_resolved_config(paths.trained_config)
    if config.task == "generation":
        from lamina.models.dcgan import build_gan

        model = build_gan(config)[0]
    else:
        vocabulary = kind_for(config).vocabulary(paths.preprocessor)
        model = build_model(config, None if vocabulary is None else len(vocabulary))
    model.load_state_dict(torch.load(paths.model_weights, weights_only=True))
    return config, model.eval()
