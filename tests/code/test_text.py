"""Text preprocessing: normalising, tokenising, a vocabulary fitted with Ray Data on train only."""

from collections import Counter

import numpy as np
import pytest

from lamina.config.schema import ExperimentConfig
from lamina.data.text_table import write_text_split
from lamina.errors import DataError
from lamina.features.splits import read_split_tables
from lamina.features.text import (
    PAD,
    UNKNOWN,
    UNKNOWN_ID,
    Vocabulary,
    normalize,
    preprocess_text_splits,
    read_text_features,
    tokenize,
)


@pytest.mark.parametrize(
    ("raw", "lowercase", "expected"),
    [
        ("  It&#39;s <b>GREAT</b>&amp;\n\t fun ", True, "it's great & fun"),
        ("Line<br/>break and a <3 heart", True, "line break and a <3 heart"),
        ("Don\u2019t call it \u201cart\u201d", True, 'don\'t call it "art"'),
        ("\ufb01lm \uff21\uff22", True, "film ab"),  # NFKC: ligature, full-width letters
        ("Keep The Case", False, "Keep The Case"),
    ],
)
def test_normalize(raw, lowercase, expected):
    assert normalize(raw, lowercase) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("don't stop, it's great!", ["do", "n't", "stop", ",", "it", "'s", "great", "!"]),
        ("they're sure it isn't", ["they", "'re", "sure", "it", "is", "n't"]),
        ("I'M SURE WE'LL", ["I", "'M", "SURE", "WE", "'LL"]),
        ("a 'quoted' word...", ["a", "'", "quoted", "'", "word", ".", ".", "."]),
        ("slow-burning 1960s", ["slow", "-", "burning", "1960s"]),
        ("", []),
    ],
)
def test_tokenize(text, expected):
    assert tokenize(text) == expected


def _vocabulary(tokens, max_length=5, lowercase=True) -> Vocabulary:
    return Vocabulary([PAD, UNKNOWN, *tokens], lowercase, max_length, fitted_on_rows=3)


def test_fit_orders_by_count_then_token_and_applies_the_limits():
    counts = Counter({"b": 3, "a": 3, "c": 5, "d": 1, "e": 2})
    fit = Vocabulary.fit(counts, 100, 2, lowercase=True, max_length=8, fitted_on_rows=4)
    assert fit.tokens == [PAD, UNKNOWN, "c", "a", "b", "e"]
    assert len(fit) == 6
    capped = Vocabulary.fit(counts, 4, 1, lowercase=True, max_length=8, fitted_on_rows=4)
    assert capped.tokens == [PAD, UNKNOWN, "c", "a"]  # max_size counts the two special ids


def test_encode_pads_truncates_and_marks_unknown_tokens():
    vocabulary = _vocabulary(["the", "film", "is", "good", "."])
    ids = vocabulary.encode(["The film is good.", "The FILM is very, very good indeed", "", "  "])
    assert ids.dtype == np.int64 and ids.shape == (4, 5)
    assert ids[0].tolist() == [2, 3, 4, 5, 6]
    assert ids[1].tolist() == [2, 3, 4, UNKNOWN_ID, UNKNOWN_ID]  # cut after 5, "very" "," unknown
    assert ids[2:].tolist() == [[0] * 5, [0] * 5]
    assert vocabulary.encode(["good film"], max_length=3).tolist() == [[5, 3, 0]]


def test_case_is_kept_when_lowercase_is_off():
    vocabulary = _vocabulary(["Good", "good"], lowercase=False)
    assert vocabulary.encode(["Good good GOOD"]).tolist() == [[2, 3, UNKNOWN_ID, 0, 0]]


def test_vocabulary_round_trips_as_json(tmp_path):
    vocabulary = _vocabulary(["caf\u00e9", "n't", "<"], max_length=7, lowercase=False)
    vocabulary.save(tmp_path / "vocabulary.json")
    loaded = Vocabulary.load(tmp_path / "vocabulary.json")
    assert loaded == vocabulary
    assert loaded.encode(["Caf\u00e9 isn't caf\u00e9 <"]).tolist() == [[1, 1, 3, 2, 4, 0, 0]]


def test_loading_a_missing_vocabulary_says_what_to_run(tmp_path):
    with pytest.raises(DataError, match="not found; run `dvc repro`"):
        Vocabulary.load(tmp_path / "vocabulary.json")


SPLITS = {
    # "once" appears once in train, "leak" once in train and in both val and test: with
    # min_frequency 2 neither may enter a vocabulary fitted on train only.
    "train": (["good good film", "bad film", "good once", "bad leak", "a film"], [0, 1, 0, 1, 0]),
    "val": (["zebra leak film", "good"], [1, 0]),
    "test": (["leak leak zebra good bad film film film film", ""], [0, 1]),
}


@pytest.fixture
def text_config() -> ExperimentConfig:
    return ExperimentConfig.model_validate(
        {
            "name": "text-test",
            "data": {"kind": "text", "path": "unused.csv", "class_names": ["fresh", "rotten"]},
            "preprocess": {"kind": "vocabulary", "min_frequency": 2, "max_length": 6},
            "model": {"kind": "rnn"},
            "train": {"epochs": 1},
        }
    )


def test_vocabulary_is_fitted_on_train_only_and_applied_to_all(local_ray, text_config, tmp_path):
    splits_dir = tmp_path / "splits"
    splits_dir.mkdir()
    for split, (texts, labels) in SPLITS.items():
        write_text_split(splits_dir / f"{split}.parquet", np.array(texts, dtype=object), labels)

    features = tmp_path / "features"
    vocabulary = preprocess_text_splits(text_config, splits_dir, features)

    assert vocabulary.tokens == [PAD, UNKNOWN, "film", "good", "bad"]
    assert vocabulary.fitted_on_rows == 5
    assert (vocabulary.max_length, vocabulary.lowercase) == (6, True)
    for split, (texts, labels) in SPLITS.items():
        tokens, read_labels = read_text_features(features / split)
        assert tokens.dtype == np.int64 and tokens.shape == (len(texts), 6)
        assert tokens.tolist() == vocabulary.encode(texts).tolist()
        assert read_labels.tolist() == labels
    test_tokens, _ = read_text_features(features / "test")
    assert test_tokens.tolist() == [[1, 1, 1, 3, 4, 2], [0] * 6]


def test_missing_split_says_which_stage_to_run(local_ray, text_config, tmp_path):
    with pytest.raises(DataError, match="train.parquet: not found; run the `prepare` stage"):
        preprocess_text_splits(text_config, tmp_path, tmp_path / "features")


def test_a_corrupt_split_says_which_stage_to_rerun(tmp_path):
    (tmp_path / "train.parquet").write_bytes(b"cut short by a full disk")
    message = "train.parquet: not a readable Parquet file .*; run the `prepare` stage again"

    with pytest.raises(DataError, match=message):
        read_split_tables(tmp_path)
