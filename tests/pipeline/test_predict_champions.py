"""`lamina predict` with the champions the shared pipeline run registered, as a user runs it.

Digits from the clone's test split written as PNG files in nested folders (cnn-mnist), the
test texts as a CSV (lstm-sentiment), the raw co2 series (gru-co2). The models were trained
shrunk, so quality is checked against what `evaluate` recorded on the same test split (tags of
the champion version), not against the real bars. Then bad input through the CLI: each one
line on stderr, exit code 2, no output file.
"""

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image

from lamina.config.compose import load_resolved_config
from lamina.data.image_parquet import pixels_from_arrow
from lamina.data.series_table import split_chronological
from tests.conftest import run

pytestmark = pytest.mark.slow


def _predict(clone: Path, tracking: dict[str, str], model: str, source: Path, output: Path):
    command = ["lamina", "predict", "--model", model, "--input", str(source)]
    return run([*command, "--output", str(output)], clone, **tracking)


def _champion_tag(tracking: dict[str, str], name: str, key: str) -> float:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking["MLFLOW_TRACKING_URI"])
    return float(client.get_model_version_by_alias(name, "champion").tags[key])


def _no_output(output: Path) -> None:
    assert not output.exists()
    leftovers = [p.name for p in output.parent.iterdir()] if output.parent.exists() else []
    assert not any(name.startswith(f".{output.name}.tmp") for name in leftovers), leftovers


@pytest.fixture(scope="module")
def digit_files(clone, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """The cnn-mnist test split as PNGs at three depths; relative path -> true class name."""
    config = load_resolved_config(clone / "outputs" / "cnn-mnist" / "config.yaml")
    table = pq.read_table(clone / "outputs" / "cnn-mnist" / "splits" / "test.parquet")
    pixels = pixels_from_arrow(table.column("image"), tuple(config.data.image_shape))
    labels = table.column("label").to_numpy()
    folder = tmp_path_factory.mktemp("digits")
    truth = {}
    for index, (image, label) in enumerate(zip(pixels, labels, strict=True)):
        relative = Path(*[f"d{index % 3}", f"e{index % 2}"][: index % 3]) / f"{index:04d}.png"
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / relative)
        truth[relative.as_posix()] = config.data.class_names[label]
    return folder, truth


def test_digits_in_nested_folders(clone, first_repro, tracking, digit_files, tmp_path):
    folder, truth = digit_files
    output = tmp_path / "digits.csv"
    result = _predict(clone, tracking, "cnn-mnist", folder, output)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"predicted {len(truth)} rows" in result.stdout and str(output) in result.stdout
    table = pd.read_csv(output, dtype={"path": str, "prediction": str})
    classes = [f"probability_{digit}" for digit in range(10)]
    assert list(table.columns) == ["path", "prediction", *classes]
    assert table["path"].tolist() == sorted(truth)
    assert np.allclose(table[classes].sum(axis=1), 1.0, atol=1e-5)
    assert (table[classes].to_numpy().argmax(axis=1).astype(str) == table["prediction"]).all()
    accuracy = float((table["prediction"] == table["path"].map(truth)).mean())
    assert accuracy > 0.2  # chance is 0.1; the shrunk champion's own record is the real check
    assert accuracy == pytest.approx(_champion_tag(tracking, "cnn-mnist", "test/accuracy"))


def test_texts_from_a_csv(clone, first_repro, tracking, tmp_path):
    config = load_resolved_config(clone / "outputs" / "lstm-sentiment" / "config.yaml")
    split = pq.read_table(clone / "outputs" / "lstm-sentiment" / "splits" / "test.parquet")
    texts = split.column("text").to_pylist()
    truth = np.asarray(config.data.class_names)[split.column("label").to_numpy()]
    ids = [f"review-{index}" for index in range(len(texts))]
    pd.DataFrame({"id": ids, "text": texts}).to_csv(tmp_path / "reviews.csv", index=False)
    output = tmp_path / "reviews.parquet"
    result = _predict(clone, tracking, "lstm-sentiment", tmp_path / "reviews.csv", output)
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_parquet(output)
    classes = [f"probability_{name}" for name in config.data.class_names]
    assert list(table.columns) == ["id", "prediction", *classes]
    assert table["id"].tolist() == ids
    assert set(table["prediction"]) <= set(config.data.class_names)
    assert np.allclose(table[classes].sum(axis=1), 1.0, atol=1e-5)
    accuracy = float((table["prediction"].to_numpy() == truth).mean())
    assert accuracy == pytest.approx(_champion_tag(tracking, "lstm-sentiment", "test/accuracy"))


def test_series_is_a_rolling_one_step_forecast(clone, first_repro, tracking, tmp_path):
    config = load_resolved_config(clone / "outputs" / "gru-co2" / "config.yaml")
    series = pd.read_csv(clone / config.data.path)
    window = config.preprocess.window
    output = tmp_path / "co2.csv"
    result = _predict(clone, tracking, "gru-co2", clone / config.data.path, output)
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_csv(output)
    assert list(table.columns) == ["date", "co2", "forecast_1"]
    # One row per origin: every date that closes a full window, the last one included.
    assert table["date"].tolist() == series["date"].tolist()[window - 1 :]
    assert np.allclose(table["co2"], series["co2"].to_numpy()[window - 1 :])
    assert np.isfinite(table["forecast_1"]).all()
    # A row's forecast_1 is the next date's value: scored on the test targets, it is what
    # `evaluate` recorded for the champion.
    test = split_chronological(
        len(series), config.split.val_fraction, config.split.test_fraction, window
    )["test"]
    forecasts = table["forecast_1"].to_numpy()[test - window]  # the origin before each target
    mae = float(np.abs(forecasts - series["co2"].to_numpy()[test]).mean())
    assert mae == pytest.approx(_champion_tag(tracking, "gru-co2", "test/mae"), rel=1e-3)


def _bad_inputs(tmp_path: Path, digit_folder: Path) -> dict[str, tuple[str, Path, str]]:
    """case -> (model, input, a fragment of the error line)."""
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    pd.DataFrame({"review": ["great"]}).to_csv(tmp_path / "no_text.csv", index=False)
    broken = tmp_path / "broken"
    for relative in sorted(p.relative_to(digit_folder) for p in digit_folder.rglob("*.png"))[:5]:
        (broken / relative).parent.mkdir(parents=True, exist_ok=True)
        (broken / relative).write_bytes((digit_folder / relative).read_bytes())
    noisy = np.random.default_rng(0).integers(0, 255, (28, 28), dtype=np.uint8)
    Image.fromarray(noisy).save(broken / "zz-cut.png")
    data = (broken / "zz-cut.png").read_bytes()
    (broken / "zz-cut.png").write_bytes(data[: len(data) // 2])  # header fine, pixels cut
    texts = tmp_path / "texts.csv"
    pd.DataFrame({"text": ["fine"]}).to_csv(texts, index=False)
    return {
        "missing model": ("no-such-model", texts, "models:/no-such-model@champion"),
        "missing alias": ("lstm-sentiment@gold", texts, "has no alias 'gold'"),
        "missing version": ("lstm-sentiment/999", texts, "has no version 999"),
        "csv without text": ("lstm-sentiment", tmp_path / "no_text.csv", "no column 'text'"),
        "empty folder": ("cnn-mnist", tmp_path / "empty", "no image files"),
        "unreadable image": ("cnn-mnist", broken, "zz-cut.png: not a readable PNG or JPEG"),
        "a generator": ("gan-mnist", texts, "nothing to predict"),
    }


def test_bad_input_is_one_line_and_no_output(clone, first_repro, tracking, digit_files, tmp_path):
    cases = _bad_inputs(tmp_path, digit_files[0])
    for case, (model, source, fragment) in cases.items():
        output = tmp_path / "out" / f"{case.replace(' ', '-')}.csv"
        result = _predict(clone, tracking, model, source, output)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2, (case, result.stderr[-3000:])
        assert len(lines) == 1 and "Traceback" not in result.stderr, (case, result.stderr)
        assert lines[0].startswith("lamina: error: ") and fragment in lines[0], (case, lines)
        _no_output(output)
