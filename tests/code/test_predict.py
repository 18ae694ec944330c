"""`lamina predict`: input readers and their errors, model lookup, and the whole path through
Ray Data with tiny pyfunc models in a temporary SQLite store (plumbing, not model quality:
`tests/pipeline/test_predict_champions.py` runs the real champions)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lamina.config.compose import compose_experiment, dump_config
from lamina.errors import ConfigError, DataError, LaminaError, TrackingError
from lamina.features.image_serving import read_image, read_image_folder
from lamina.features.series_serving import read_series_origins
from lamina.features.text_serving import read_texts
from lamina.serving.predict import check_output_path, predict, resolve_model
from tests.conftest import CONF_DIR, REPO_ROOT, run

WINDOW = 4  # the tiny forecaster's


def _tiny_model():
    """Every contract's shape, none of the learning: "big" images are bright, "big" texts long,
    the forecast is the mean of the window. A class made here is pickled by value, so the
    actors (and `lamina predict` in a subprocess) load it without importing this module."""
    from mlflow.pyfunc import PythonModel

    class TinyModel(PythonModel):
        def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
            column = model_input.columns[0]
            if column == "value":
                return pd.DataFrame({"forecast": [float(model_input["value"].mean())]})
            if column == "image":
                score = np.array([_brightness(path) for path in model_input["image"]])
            else:
                score = model_input["text"].astype(str).str.len().to_numpy(dtype=float)
            big = 1.0 / (1.0 + np.exp(-(score - 10.0) / 5.0))
            return pd.DataFrame(
                {
                    "prediction": np.where(big > 0.5, "big", "small"),
                    "probability_big": big,
                    "probability_small": 1.0 - big,
                }
            )

    def _brightness(path: str) -> float:
        with Image.open(path) as image:
            return float(np.asarray(image.convert("L"), dtype=float).mean())

    return TinyModel()


def _write_png(path: Path, brightness: int, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    noise = np.random.default_rng(seed).integers(0, 8, (28, 28))
    Image.fromarray((noise + brightness).clip(0, 255).astype(np.uint8)).save(path)


def _log(uri: str, name: str, example, output, artifacts: dict[str, str] | None = None) -> None:
    import mlflow
    from mlflow.models import infer_signature
    from mlflow.tracking import MlflowClient

    from lamina.serving.registry import record_model_files

    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("predict-tests")
    with mlflow.start_run():
        mlflow.pyfunc.log_model(
            name="model",
            python_model=_tiny_model(),
            artifacts=artifacts,
            signature=infer_signature(example, output),
            input_example=example,
            registered_model_name=name,
            pip_requirements=["pandas"],
        )
    MlflowClient(uri).set_registered_model_alias(name, "champion", "1")
    record_model_files(MlflowClient(uri), name, "1")  # as `log_model_version` does


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A repository-like folder whose `mlflow.db` holds four tiny registered models."""
    import mlflow

    root = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    images = pd.DataFrame({"image": ["a.png"]})
    classes = pd.DataFrame({"prediction": ["big"], "probability_big": [1.0]})
    _log(uri, "tiny-images", images, classes)
    _log(uri, "tiny-text", pd.DataFrame({"text": ["a text"]}), classes)
    config = compose_experiment("gru-co2", CONF_DIR)
    config = config.model_copy(
        update={"preprocess": config.preprocess.model_copy(update={"window": WINDOW})}
    )
    config_file = root / "config.yaml"
    config_file.write_text(dump_config(config))
    history = pd.DataFrame({"value": np.arange(WINDOW, dtype=float)})
    forecast = pd.DataFrame({"forecast": [1.0]})
    _log(uri, "tiny-series", history, forecast, {"config": str(config_file)})
    noise = np.zeros((2, 8), dtype=np.float32)
    _log(uri, "tiny-generator", noise, np.zeros((2, 4, 4), dtype=np.float32))
    mlflow.set_tracking_uri(None)
    return root


@pytest.fixture
def in_store(store, monkeypatch):
    """The store as `lamina predict` finds it: `<root>/mlflow.db`; MLflow's default after."""
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    yield store
    mlflow.set_tracking_uri(None)


@pytest.fixture
def digits(tmp_path) -> Path:
    """Five PNGs at three depths; the bright ones are "big"."""
    folder = tmp_path / "digits"
    for index, relative in enumerate(["b.png", "a/c.PNG", "a/z/d.jpg", "a/b.png", "e.jpeg"]):
        path = folder / relative
        if path.suffix.lower() == ".png":
            _write_png(path, brightness=40 * index, seed=index)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((30, 20), 40 * index, np.uint8)).save(path, format="JPEG")
    (folder / "notes.txt").write_text("not an image, not read")
    return folder


def _truncated_png(path: Path) -> None:
    _write_png(path, brightness=100, seed=7)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # the header is intact, the pixels are not


def _no_output(path: Path) -> None:
    assert not path.exists()
    assert not any(p.name.startswith(f".{path.name}.tmp") for p in path.parent.iterdir())


# --- before any work: output name, input readers ---------------------------------------------


@pytest.mark.parametrize("name", ["out.txt", "out", "out.json"])
def test_output_must_be_csv_or_parquet(tmp_path, name):
    with pytest.raises(ConfigError, match=r"name it \*\.csv or \*\.parquet"):
        check_output_path(tmp_path / name, tmp_path / "in.csv")
    assert check_output_path(tmp_path / "o.CSV", tmp_path / "in.csv") == "csv"
    assert check_output_path(tmp_path / "o.parquet", tmp_path / "in.csv") == "parquet"


def test_output_is_never_a_folder_or_the_input_and_replaces_a_file_only_when_asked(tmp_path):
    texts = tmp_path / "in.csv"
    texts.write_text("text\nfine\n")
    (tmp_path / "folder.csv").mkdir()
    (tmp_path / "old.csv").write_text("old")
    (tmp_path / "alias.csv").hardlink_to(texts)
    refused = {"folder.csv": "is a folder", "in.csv": "is the input", "alias.csv": "is the input"}
    for name, says in refused.items():
        with pytest.raises(LaminaError, match=says):
            check_output_path(tmp_path / name, texts, overwrite=True)
    with pytest.raises(LaminaError, match="old.csv: exists; pass --overwrite"):
        check_output_path(tmp_path / "old.csv", texts)
    assert check_output_path(tmp_path / "old.csv", texts, overwrite=True) == "csv"


def test_image_folder_is_searched_recursively_and_sorted(digits):
    rows = read_image_folder(digits)
    assert rows.table["path"].tolist() == ["a/b.png", "a/c.PNG", "a/z/d.jpg", "b.png", "e.jpeg"]
    assert rows.id_columns == ("path",) and rows.input_column == "image"
    assert all(Path(path).is_absolute() for path in rows.table["image"])


def test_empty_image_folder_is_a_clear_error(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "sub" / "readme.txt").write_text("no images")
    with pytest.raises(DataError, match=r"empty: no image files in it or its subfolders"):
        read_image_folder(tmp_path / "empty")


@pytest.mark.parametrize("content", [b"", b"hello, not a png"], ids=["empty", "text"])
def test_a_file_that_is_no_image_is_named_before_any_work(tmp_path, content):
    _write_png(tmp_path / "good.png", 10)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "bad.png").write_bytes(content)
    with pytest.raises(DataError, match=r"sub/bad\.png: not a PNG or JPEG image"):
        read_image_folder(tmp_path)


def test_truncated_image_is_named_when_read(tmp_path):
    _truncated_png(tmp_path / "cut.png")
    read_image_folder(tmp_path)  # the header is fine: only decoding finds it out
    with pytest.raises(DataError, match=r"cut\.png: not a readable PNG or JPEG image"):
        read_image(str(tmp_path / "cut.png"))


def test_texts_keep_the_id_column_or_number_the_rows(tmp_path):
    pd.DataFrame({"id": ["r7", "r9"], "text": ["good", ""], "x": [1, 2]}).to_csv(
        tmp_path / "with_id.csv", index=False
    )
    rows = read_texts(tmp_path / "with_id.csv")
    assert rows.id_columns == ("id",)
    assert rows.table.to_dict("list") == {"id": ["r7", "r9"], "text": ["good", ""]}
    pd.DataFrame({"text": ["a", "b", "c"]}).to_parquet(tmp_path / "plain.parquet")
    rows = read_texts(tmp_path / "plain.parquet")
    assert rows.id_columns == ("row",) and rows.table["row"].tolist() == [0, 1, 2]


def test_texts_without_a_text_column_name_the_file_and_column(tmp_path):
    pd.DataFrame({"review": ["good"]}).to_csv(tmp_path / "reviews.csv", index=False)
    with pytest.raises(DataError, match=r"reviews\.csv: no column 'text' \(columns found: 'rev"):
        read_texts(tmp_path / "reviews.csv")


def test_series_origins_are_every_full_window(tmp_path):
    values = np.arange(10, dtype=float) ** 2
    dates = pd.date_range("2001-01-06", periods=10, freq="7D").strftime("%Y-%m-%d")
    pd.DataFrame({"date": dates, "co2": values}).to_csv(tmp_path / "s.csv", index=False)
    rows = read_series_origins(tmp_path / "s.csv", "date", "co2", window=4)
    # The 4th value closes the first window; the last row forecasts past the end.
    assert rows.table["position"].tolist() == list(range(3, 10))
    assert rows.table["date"].tolist() == list(dates[3:])
    assert rows.id_columns == ("date", "co2") and rows.extra["window"] == 4
    with pytest.raises(DataError, match=r"10 values, but the model forecasts from the last 11"):
        read_series_origins(tmp_path / "s.csv", "date", "co2", window=11)
    with pytest.raises(DataError, match=r"no column 'value' \(columns found: 'date', 'co2'\)"):
        read_series_origins(tmp_path / "s.csv", "date", "value", window=4)


# --- the model -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nope", r"models:/nope@champion \(in .*\): no registered model named 'nope'; `lamina"),
        ("tiny-text@prod", r"models:/tiny-text@prod \(in .*\): model 'tiny-text' has no alias"),
        ("tiny-text/7", r"models:/tiny-text/7 \(in .*\): model 'tiny-text' has no version 7;"),
    ],
)
def test_missing_model_alias_or_version_is_one_clear_error(in_store, spec, message):
    with pytest.raises(TrackingError, match=message):
        resolve_model(spec, in_store)


def test_the_kind_is_read_from_the_signature_and_a_generator_is_refused(in_store):
    kinds = {name: resolve_model(name, in_store)[0].kind for name in ("tiny-images", "tiny-text")}
    assert kinds == {"tiny-images": "images", "tiny-text": "text"}
    model, _ = resolve_model("tiny-series", in_store)
    assert (model.kind, model.uri, model.asked) == (
        "series",
        "models:/tiny-series/1",
        "models:/tiny-series@champion",
    )
    with pytest.raises(LaminaError, match="GAN generator turns noise into samples"):
        resolve_model("tiny-generator", in_store)


def test_no_store_is_an_error_and_creates_none(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "t.csv").write_text("text\nhello\n")
    with pytest.raises(TrackingError, match=r"no MLflow store at .*mlflow\.db: run `make run`"):
        predict("tiny-text", tmp_path / "t.csv", tmp_path / "out.csv", root=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv"]


# --- through Ray Data ------------------------------------------------------------------------


def test_images_end_to_end(local_ray, in_store, digits, tmp_path):
    output = tmp_path / "out" / "predictions.csv"
    summary = predict("tiny-images", digits, output, root=in_store)
    table = pd.read_csv(output)
    assert list(table.columns) == ["path", "prediction", "probability_big", "probability_small"]
    assert table["path"].tolist() == read_image_folder(digits).table["path"].tolist()
    assert np.allclose(table["probability_big"] + table["probability_small"], 1.0)
    # b.png is the darkest PNG (brightness 0), a/b.png one of the brightest (120).
    by_path = table.set_index("path")["prediction"]
    assert (by_path["b.png"], by_path["a/b.png"]) == ("small", "big")
    assert (summary.rows, summary.model_uri) == (5, "models:/tiny-images/1")
    assert "predicted 5 rows" in summary.line() and str(output) in summary.line()


def test_texts_end_to_end_in_order_across_blocks(local_ray, in_store, tmp_path, monkeypatch):
    import lamina.serving.predict

    monkeypatch.setattr(lamina.serving.predict, "BLOCK_ROWS", 7)  # several blocks, both actors busy
    texts = [("x" * (i % 23)) for i in range(50)]
    pd.DataFrame({"id": [f"r{i}" for i in range(50)], "text": texts}).to_csv(
        tmp_path / "t.csv", index=False
    )
    predict("tiny-text", tmp_path / "t.csv", tmp_path / "p.parquet", root=in_store)
    table = pd.read_parquet(tmp_path / "p.parquet")
    assert table["id"].tolist() == [f"r{i}" for i in range(50)]
    expected = np.where(np.array([len(t) for t in texts]) > 10, "big", "small")
    assert table["prediction"].tolist() == expected.tolist()


def test_series_end_to_end_is_a_rolling_forecast(local_ray, in_store, tmp_path):
    values = np.arange(12, dtype=float) ** 2
    dates = pd.date_range("2001-01-06", periods=12, freq="7D").strftime("%Y-%m-%d")
    pd.DataFrame({"date": dates, "co2": values}).to_csv(tmp_path / "s.csv", index=False)
    predict("tiny-series", tmp_path / "s.csv", tmp_path / "f.csv", root=in_store)
    table = pd.read_csv(tmp_path / "f.csv")
    assert list(table.columns) == ["date", "co2", "forecast_1"]
    assert table["date"].tolist() == list(dates[WINDOW - 1 :])
    windows = np.lib.stride_tricks.sliding_window_view(values, WINDOW)
    assert np.allclose(table["forecast_1"], windows.mean(axis=1))


def test_unreadable_image_fails_the_run_naming_it_and_writes_nothing(
    local_ray, in_store, digits, tmp_path
):
    _truncated_png(digits / "a" / "z" / "cut.png")
    output = tmp_path / "out.parquet"
    with pytest.raises(DataError, match=r"a/z/cut\.png: not a readable PNG or JPEG image"):
        predict("tiny-images", digits, output, root=in_store)
    _no_output(output)


# --- the command -----------------------------------------------------------------------------


def _lamina(*args: str, root: Path) -> object:
    return run(["lamina", "--root", str(root), *args], root)


def test_cli_on_bad_input_is_one_line_exit_2_and_no_output(store, tmp_path):
    pd.DataFrame({"review": ["good"]}).to_csv(tmp_path / "reviews.csv", index=False)
    output = tmp_path / "out.csv"
    cases = {
        "no model": (["--model", "nope", "--input", str(tmp_path / "reviews.csv")], "nope"),
        "no text": (["--model", "tiny-text", "--input", str(tmp_path / "reviews.csv")], "text"),
    }
    for args, fragment in cases.values():
        result = _lamina("predict", *args, "--output", str(output), root=store)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("lamina: error: "), result.stderr
        assert fragment in lines[0]
        _no_output(output)


def test_cli_unreadable_image_mid_run_is_one_line(store, digits, tmp_path):
    _truncated_png(digits / "cut.png")
    output = tmp_path / "out.csv"
    result = _lamina(
        "predict", "--model", "tiny-images", "--input", str(digits), "--output", str(output),
        root=store,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cut.png: not a readable PNG or JPEG image" in lines[0], lines
    _no_output(output)


def test_lamina_predict_is_in_the_cli_help():
    result = run(["lamina", "predict", "--help"], REPO_ROOT)
    assert result.returncode == 0 and "--model" in result.stdout and "parquet" in result.stdout
