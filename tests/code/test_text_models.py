"""Text models and the baseline: shapes, every activation, padding-only rows, learning at all."""

import numpy as np
import pytest
import torch

from lamina.evaluation.baselines.text import C_GRID, tfidf_logreg_baseline
from lamina.models.activations import ACTIVATIONS
from lamina.models.rnn import RNNClassifier
from lamina.models.transformer import TransformerClassifier

VOCAB_SIZE, NUM_CLASSES, MAX_LENGTH = 50, 3, 12


def _rnn(cell="lstm", bidirectional=True, activation="relu", num_layers=1) -> RNNClassifier:
    return RNNClassifier(
        VOCAB_SIZE, NUM_CLASSES, cell, 16, 24, num_layers, bidirectional, 0.1, activation
    )


def _transformer(activation="gelu") -> TransformerClassifier:
    return TransformerClassifier(VOCAB_SIZE, NUM_CLASSES, MAX_LENGTH, 32, 4, 2, 64, 0.1, activation)


def _tokens(batch=6, length=MAX_LENGTH, seed=0) -> torch.Tensor:
    """Random ids with padding at the end of each row; the last row is all padding."""
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, VOCAB_SIZE, (batch, length), generator=generator)
    lengths = torch.randint(1, length + 1, (batch,), generator=generator)
    lengths[-1] = 0
    return tokens.masked_fill(torch.arange(length) >= lengths.unsqueeze(1), 0)


MODELS = {
    "lstm": lambda activation: _rnn("lstm", True, activation),
    "gru": lambda activation: _rnn("gru", True, activation),
    "lstm one-way": lambda activation: _rnn("lstm", False, activation),
    "gru one-way, 2 layers": lambda activation: _rnn("gru", False, activation, num_layers=2),
    "transformer": _transformer,
}


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("model", sorted(MODELS))
def test_text_models_map_token_ids_to_one_finite_logit_per_class(model, activation):
    network = MODELS[model](activation)
    tokens = _tokens()
    for mode in (network.train, network.eval):
        mode()
        logits = network(tokens)
        assert logits.shape == (6, NUM_CLASSES)
        assert torch.isfinite(logits).all()  # the all-padding row included
    assert torch.isfinite(network(torch.zeros(3, 5, dtype=torch.long))).all()  # shorter L


@pytest.mark.parametrize("model", sorted(MODELS))
def test_padding_does_not_change_the_prediction(model):
    """Real tokens alone decide the logits: more padding after them changes nothing."""
    network = MODELS[model]("relu").eval()
    with torch.no_grad():
        short = network(torch.tensor([[5, 9, 3, 0, 0, 0]]))
        long = network(torch.tensor([[5, 9, 3] + [0] * 9]))
    assert torch.allclose(short, long, atol=1e-5)


@pytest.mark.parametrize("model", ["lstm", "gru one-way, 2 layers", "transformer"])
def test_text_model_learns_a_batch(model):
    """Backpropagation works end to end: the loss on one fixed batch falls when fitted."""
    torch.manual_seed(0)
    network = MODELS[model]("relu")
    tokens, labels = _tokens(batch=16, seed=1), torch.arange(16) % NUM_CLASSES
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(network(tokens), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_positions_are_fixed_and_not_saved():
    network = _transformer()
    assert "positions" not in network.state_dict()
    assert torch.equal(network.positions, _transformer().positions)
    assert network.positions.shape == (MAX_LENGTH, 32)


def test_tfidf_baseline_separates_a_separable_corpus():
    rng = np.random.default_rng(0)
    words = {
        0: ["superb", "moving", "brilliant", "joyous"],
        1: ["dull", "tedious", "awful", "inert"],
    }
    filler = ["the", "film", "was", "and", "a", "story"]

    def corpus(n):
        labels = np.arange(n) % 2
        texts = [
            " ".join(rng.choice(filler, 3).tolist() + rng.choice(words[label], 2).tolist())
            for label in labels
        ]
        return texts, labels

    train, val, test = corpus(40), corpus(10), corpus(10)
    result = tfidf_logreg_baseline(*train, *val, *test)
    assert result["baseline/tfidf_logreg_accuracy"] == 1.0
    assert result["baseline/tfidf_logreg_C"] in C_GRID
    assert set(result) == {"baseline/tfidf_logreg_accuracy", "baseline/tfidf_logreg_C"}


def test_word_dropout_hides_words_in_training_only_and_never_touches_padding():
    torch.manual_seed(0)
    network = RNNClassifier(
        VOCAB_SIZE, NUM_CLASSES, "lstm", 16, 24, 1, True, 0.0, "relu", word_dropout=0.999999
    )
    tokens, all_unknown = torch.tensor([[5, 9, 3, 0, 0]]), torch.tensor([[1, 1, 1, 0, 0]])
    network.train()  # no other dropout: the only randomness is which words are hidden
    assert torch.allclose(network(tokens), network(all_unknown))  # same length: padding kept
    network.eval()
    assert not torch.allclose(network(tokens), network(all_unknown))
