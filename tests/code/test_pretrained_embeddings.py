"""Pretrained word vectors: GloVe read from its wheel, written into the right embedding rows."""

import numpy as np
import pytest
import torch

from lamina.config.compose import compose_experiment, with_overrides
from lamina.config.paths import CONF_DIR
from lamina.config.schema import ExperimentConfig
from lamina.features.text import PAD, UNKNOWN
from lamina.models import build_model, build_model_to_train
from lamina.models.pretrained import glove_vectors, initialise_embeddings

TOKENS = [PAD, UNKNOWN, "good", "great", "excellent", "table", "n't", "zzqxwv-not-a-word"]


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


def test_glove_has_our_tokens_words_and_none_for_the_rest():
    known = glove_vectors(TOKENS)
    assert known.vectors.shape == (len(TOKENS), 50)
    # GloVe is tokenised like our vocabulary: the clitic "n't" is a word of its own.
    assert known.found.tolist() == [False, False, True, True, True, True, True, False]
    assert not known.vectors[~known.found].any()
    good, great, table = (torch.from_numpy(known.vectors[i]) for i in (2, 3, 5))
    assert _cosine(good, great) > 0.7 > _cosine(good, table)  # the vectors carry meaning


def test_known_words_rows_start_from_glove_rescaled_and_the_rest_stay_random():
    torch.manual_seed(0)
    embedding = torch.nn.Embedding(len(TOKENS), 64, padding_idx=0)
    before = embedding.weight.detach().clone()
    initialise_embeddings(embedding, TOKENS, "glove-6b-50d")
    after = embedding.weight.detach()
    known = glove_vectors(TOKENS)
    words = torch.from_numpy(known.found)
    # Same directions as GloVe's, at the layer's own scale.
    for row in np.flatnonzero(known.found):
        assert _cosine(after[row, :50], torch.from_numpy(known.vectors[row])) > 0.999
    assert float(after[words, :50].std()) == pytest.approx(float(before[2:].std()), rel=0.05)
    assert torch.equal(after[:, 50:], before[:, 50:])  # columns beyond GloVe's width
    assert torch.equal(after[~words], before[~words])  # padding, <unk>, unknown word


def test_only_training_builds_start_from_pretrained_vectors():
    config = compose_experiment("lstm-sentiment", CONF_DIR)
    assert config.model.pretrained_embeddings == "glove-6b-50d"
    torch.manual_seed(0)
    fresh = build_model_to_train(config, TOKENS).embedding.weight
    torch.manual_seed(0)
    plain = build_model(config, len(TOKENS)).embedding.weight
    assert not torch.equal(fresh, plain)
    off = with_overrides(config, {"model.pretrained_embeddings": "none"})
    torch.manual_seed(0)
    assert torch.equal(build_model_to_train(off, TOKENS).embedding.weight, plain)


@pytest.mark.parametrize(
    ("preset", "key"), [("lstm-sentiment", "embedding_dim"), ("transformer-sentiment", "d_model")]
)
def test_an_embedding_narrower_than_the_vectors_is_a_config_error(preset, key):
    config = compose_experiment(preset, CONF_DIR)
    tree = config.model_dump(mode="json")
    tree["model"].update({"pretrained_embeddings": "glove-6b-50d", key: 32, "num_heads": 4})
    if preset == "lstm-sentiment":
        del tree["model"]["num_heads"]
    with pytest.raises(ValueError, match=f"{key} \\(32\\) is narrower than glove-6b-50d"):
        ExperimentConfig.model_validate(tree)
