"""Text: preprocessing with Ray Data, a vocabulary fitted on the training split only.

Every text is normalised, split into word and punctuation tokens and mapped to ids of a
vocabulary counted on the training split (id 0 pads, id 1 stands for any unknown token), then
padded or cut to `max_length` ids. Every split is written as Parquet with an int64 tensor column
`tokens` of shape (max_length,) and an int64 `label`. The vocabulary is saved as JSON with the
normalisation settings, so the registered model turns raw text into ids exactly as training did.
The registered model and `lamina predict`'s reader are in `text_serving`.
"""

from __future__ import annotations

import html
import json
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lamina.cluster.ray_runtime import write_parquet
from lamina.config.schema import ExperimentConfig, VocabularyConfig
from lamina.data.parquet_files import read_parquet
from lamina.errors import DataError
from lamina.features.kind import DataKind
from lamina.features.splits import read_split_datasets

if TYPE_CHECKING:
    from collections.abc import Callable

    import pandas as pd
    from torch import nn

    from lamina.config.paths import ExperimentPaths
    from lamina.evaluation.evaluate import Evaluation
    from lamina.serving.packaging import ArtifactModel
    from lamina.serving.predict import BatchPredictor, PredictInput

PAD, UNKNOWN = "<pad>", "<unk>"
PAD_ID, UNKNOWN_ID = 0, 1

_TAG = re.compile(r"</?[a-z][^<>]*>", re.IGNORECASE)
# NFKC leaves typographic quotes alone; "don’t" must tokenise like "don't".
_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'})
# Words, the clitics "n't" / "'s" / "'re" ... split off their word (so "don't" -> "do", "n't"
# and "isn't" shares "n't" with every other negation), and single punctuation marks.
_TOKEN = re.compile(
    r"\w+(?=n't\b)|n't\b|'(?:s|re|ve|ll|d|m)\b|\w+|[^\w\s]",
    re.IGNORECASE,
)


def normalize(text: str, lowercase: bool) -> str:
    """Undo HTML escapes and tags, unify Unicode forms and quotes, collapse whitespace."""
    text = html.unescape(text)
    text = unicodedata.normalize("NFKC", text).translate(_QUOTES)
    text = _TAG.sub(" ", text)
    if lowercase:
        text = text.lower()
    return " ".join(text.split())


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text)


@dataclass(frozen=True)
class Vocabulary:
    """What `preprocess` fitted; saved as JSON and applied again by the registered model."""

    tokens: list[str]  # tokens[id]; tokens[0] is PAD, tokens[1] is UNKNOWN
    lowercase: bool
    max_length: int
    fitted_on_rows: int

    @classmethod
    def fit(
        cls,
        token_counts: Counter[str],
        max_size: int,
        min_frequency: int,
        *,
        lowercase: bool,
        max_length: int,
        fitted_on_rows: int,
    ) -> Vocabulary:
        """The most frequent tokens seen at least `min_frequency` times; `max_size` ids in all.

        Ties are broken by the token itself, so the same counts always give the same ids.
        """
        frequent = sorted(
            (item for item in token_counts.items() if item[1] >= min_frequency),
            key=lambda item: (-item[1], item[0]),
        )
        kept = [token for token, _ in frequent if token not in (PAD, UNKNOWN)]
        return cls(
            tokens=[PAD, UNKNOWN, *kept[: max_size - 2]],
            lowercase=lowercase,
            max_length=max_length,
            fitted_on_rows=fitted_on_rows,
        )

    @cached_property
    def _ids(self) -> dict[str, int]:
        return {token: i for i, token in enumerate(self.tokens)}

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, texts: Sequence[str], max_length: int | None = None) -> np.ndarray:
        """(N, max_length) int64 ids of raw texts: cut at the end, padded with 0 at the end."""
        length = self.max_length if max_length is None else max_length
        ids = np.full((len(texts), length), PAD_ID, dtype=np.int64)
        for row, text in enumerate(texts):
            tokens = tokenize(normalize(text, self.lowercase))[:length]
            ids[row, : len(tokens)] = [self._ids.get(token, UNKNOWN_ID) for token in tokens]
        return ids

    def transform(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Ray Data batch of a split (`text`, `label`) -> features (`tokens`, `label`)."""
        return {
            "tokens": self.encode(batch["text"]),
            "label": batch["label"].astype(np.int64),
        }

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2, ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, path: Path) -> Vocabulary:
        if not path.is_file():
            raise DataError(f"{path}: fitted vocabulary not found; run `dvc repro`")
        return cls(**json.loads(path.read_text()))


def _count_tokens(batch: dict[str, np.ndarray], lowercase: bool) -> dict[str, np.ndarray]:
    counts = Counter()
    for text in batch["text"]:
        counts.update(tokenize(normalize(text, lowercase)))
    return {
        "token": np.array(list(counts), dtype=object),
        "count": np.fromiter(counts.values(), dtype=np.int64, count=len(counts)),
    }


def fit_vocabulary(train, config: VocabularyConfig) -> Vocabulary:
    """Count tokens over the (Ray) training dataset; the other splits are never looked at.

    Each block counts its own texts in `map_batches`; the driver adds up the per-block counts,
    which are far smaller than the texts.
    """
    counted = train.map_batches(
        _count_tokens, batch_format="numpy", fn_kwargs={"lowercase": config.lowercase}
    )
    totals: Counter[str] = Counter()
    for batch in counted.iter_batches(batch_size=None, batch_format="numpy"):
        for token, count in zip(batch["token"], batch["count"], strict=True):
            totals[token] += int(count)
    if not totals:
        raise DataError("the training split holds no tokens: every text is empty after cleaning")
    return Vocabulary.fit(
        totals,
        config.max_vocab_size,
        config.min_frequency,
        lowercase=config.lowercase,
        max_length=config.max_length,
        fitted_on_rows=train.count(),
    )


def preprocess_text_splits(
    config: ExperimentConfig, splits_dir: Path, features_dir: Path
) -> Vocabulary:
    """Fit on `splits_dir/train.parquet`, write `features_dir/<split>/` for every split."""
    datasets = read_split_datasets(splits_dir)
    vocabulary = fit_vocabulary(datasets["train"], config.preprocess)
    for split, dataset in datasets.items():
        write_parquet(
            dataset.map_batches(vocabulary.transform, batch_format="numpy"), features_dir / split
        )
    return vocabulary


def read_text_features(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """(token ids (N, L) int64, labels (N,)) of one split written by `preprocess_text_splits`."""
    import ray.data  # noqa: F401  registers Ray's tensor type, so pyarrow can read the column

    table = read_parquet(folder, written_by="preprocess")
    tokens = table.column("tokens").combine_chunks().to_numpy()
    return np.asarray(tokens, dtype=np.int64), table.column("label").to_numpy()


def tfidf_baseline(paths: ExperimentPaths, seed: int) -> dict[str, float]:
    """TF-IDF + logistic regression, C tuned on validation, scored on the same test split."""
    from lamina.data.split import SPLIT_NAMES
    from lamina.data.text_table import read_text_split
    from lamina.evaluation.baselines.text import tfidf_logreg_baseline

    splits = {name: read_text_split(paths.splits / f"{name}.parquet") for name in SPLIT_NAMES}
    return tfidf_logreg_baseline(*splits["train"], *splits["val"], *splits["test"], seed=seed)


class Text(DataKind):
    """Labelled texts; models classify them, sized by the vocabulary fitted on train."""

    name = "text"
    preprocessor_class = Vocabulary
    input_column, target_column = "tokens", "label"
    raw_input_column = "text"

    def preprocess_splits(
        self, config: ExperimentConfig, splits_dir: Path, features_dir: Path
    ) -> Vocabulary:
        return preprocess_text_splits(config, splits_dir, features_dir)

    def read_features(self, folder: Path) -> tuple[np.ndarray, np.ndarray]:
        return read_text_features(folder)

    def vocabulary(self, preprocessor_path: Path) -> list[str]:
        return list(self.load_preprocessor(preprocessor_path).tokens)

    def evaluate(
        self, config: ExperimentConfig, model: nn.Module, paths: ExperimentPaths, plots_dir: Path
    ) -> Evaluation:
        from lamina.evaluation.evaluate import evaluate_classifier

        tokens, labels = self.read_features(paths.features / "test")
        baseline = tfidf_baseline(paths, config.split.seed)
        return evaluate_classifier(config, model, tokens, labels, paths, plots_dir, baseline)

    def pyfunc_model(self) -> ArtifactModel:
        from lamina.features.text_serving import TextClassifierModel

        return TextClassifierModel()

    def pyfunc_example(self, config: ExperimentConfig, paths: ExperimentPaths) -> pd.DataFrame:
        from lamina.features.text_serving import raw_text_example

        return raw_text_example(paths)

    def read_predict_input(
        self, input_path: Path, logged_config: Callable[[], ExperimentConfig]
    ) -> PredictInput:
        from lamina.features.text_serving import read_texts

        return read_texts(input_path)

    def batch_predictor(self) -> type[BatchPredictor]:
        from lamina.serving.predict import BatchPredictor

        return BatchPredictor
