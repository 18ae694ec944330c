"""Every registered kind of data honours the whole `DataKind` interface, on tiny real data.

As scikit-learn's `check_estimator` runs every estimator through one contract, this runs each
kind in `lamina.features.DATA_KINDS` through all of it: its preset's config, preprocess ->
features -> the supervised task on an untrained model -> evaluation -> the registered pyfunc
model on raw input -> `lamina predict`'s reader and batch predictor. A new kind is checked as
soon as it is registered and a preset uses it; only its `predict` input file needs a writer here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from lamina.config.compose import compose_experiment, dump_config
from lamina.config.paths import ExperimentPaths
from lamina.config.schema import ExperimentConfig
from lamina.data.prepare import prepare_splits
from lamina.data.raw_sources import build_raw_data
from lamina.data.split import SPLIT_NAMES
from lamina.features import DATA_KINDS, kind_for
from lamina.models import build_model
from lamina.training.tasks import supervised_task
from tests.conftest import CONF_DIR

ROWS = 200  # per kind with labelled rows; a series is used whole


def _image_folder(config: ExperimentConfig, example: pd.DataFrame, folder: Path) -> Path:
    folder = folder / "images"
    folder.mkdir()
    for index, pixels in enumerate(example["image"]):
        Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(folder / f"{index}.png")
    return folder


def _text_table(config: ExperimentConfig, example: pd.DataFrame, folder: Path) -> Path:
    path = folder / "texts.csv"
    example.assign(id=[f"r{i}" for i in range(len(example))]).to_csv(path, index=False)
    return path


def _series_table(config: ExperimentConfig, example: pd.DataFrame, folder: Path) -> Path:
    path = folder / "series.csv"
    values = np.concatenate([example["value"].to_numpy(), example["value"].to_numpy()[:3]])
    times = pd.date_range("2001-01-06", periods=len(values), freq="W-SAT").strftime("%Y-%m-%d")
    pd.DataFrame({config.data.time_column: times, config.data.value_column: values}).to_csv(
        path, index=False
    )
    return path


# The file or folder a user hands `lamina predict` for each kind, written from raw test rows.
PREDICT_INPUT_WRITERS: dict[str, Callable[[ExperimentConfig, pd.DataFrame, Path], Path]] = {
    "images": _image_folder,
    "text": _text_table,
    "series": _series_table,
}


@pytest.fixture(scope="module")
def raw_root(tmp_path_factory) -> Path:
    """A root whose `data/` holds every raw data set, as the presets' `data.path` expects."""
    root = tmp_path_factory.mktemp("root")
    build_raw_data(root / "data")
    return root


def _tiny_preset(kind_name: str, root: Path) -> ExperimentConfig:
    """The first preset (by name) with this kind of data and a single network, shrunk."""
    for preset in sorted((CONF_DIR / "experiment").glob("*.yaml")):
        config = compose_experiment(preset.stem, CONF_DIR)
        if config.data.kind == kind_name and config.task != "generation":
            data = {"path": str(root / config.data.path)}
            if "max_samples" in type(config.data).model_fields:
                data["max_samples"] = ROWS
            return config.model_copy(update={"data": config.data.model_copy(update=data)})
    pytest.fail(f"no preset in conf/experiment/ has {kind_name} data")


def test_every_kind_has_a_predict_input_writer_here():
    assert set(PREDICT_INPUT_WRITERS) == set(DATA_KINDS)


@pytest.mark.parametrize("kind_name", sorted(DATA_KINDS))
def test_kind_honours_the_whole_interface(local_ray, raw_root, kind_name, tmp_path, monkeypatch):
    config = _tiny_preset(kind_name, raw_root)
    kind = kind_for(config)
    assert kind is DATA_KINDS[kind_name] and kind.name == config.data.kind
    assert config.preprocess.kind in config.data.preprocess_kinds
    assert config.model.kind in config.data.model_kinds
    paths = ExperimentPaths(config.name, tmp_path)
    paths.splits.mkdir(parents=True)
    prepare_splits(config, paths.splits)

    # Preprocess: fitted on train, saved and loaded back the same; every split has features.
    fitted = kind.preprocess_splits(config, paths.splits, paths.features)
    fitted.save(paths.preprocessor)
    assert kind.load_preprocessor(paths.preprocessor) == fitted
    features = {split: kind.read_features(paths.features / split) for split in SPLIT_NAMES}
    for split, (inputs, targets) in features.items():
        assert len(inputs) == len(targets) > 0, split
        columns = pq.read_schema(next((paths.features / split).glob("*.parquet"))).names
        assert {kind.input_column, kind.target_column} <= set(columns), split

    # The supervised task on an untrained model of the preset's architecture.
    vocabulary = kind.vocabulary(paths.preprocessor)
    model = build_model(config, None if vocabulary is None else len(vocabulary)).eval()
    task = supervised_task(config)
    assert (task.kind, task.input_key, task.target_key) == (
        config.task,
        kind.input_column,
        kind.target_column,
    )
    inputs, targets = (torch.as_tensor(np.array(array[:8])) for array in features["train"])
    with torch.no_grad():
        outputs = model(inputs)
    if config.task == "classification":
        assert outputs.shape == (8, config.data.num_classes)
    else:
        assert outputs.shape == targets.shape
    assert torch.isfinite(task.loss(outputs, targets))
    assert list(task.metric_sums(outputs, targets)) == list(task.metric_keys)

    # Evaluation on the test split: metrics, one prediction per test row, plots.
    history = {"epoch": [0, 1], "train/loss": [1.0, 0.5]} | {
        k: [1.0, 0.5] for k in task.metric_keys
    }
    paths.history.write_text(pd.DataFrame(history).to_csv(index=False))
    paths.plots.mkdir(parents=True)
    evaluation = kind.evaluate(config, model, paths, paths.plots)
    assert evaluation.metrics and all(np.isfinite(v) for v in evaluation.metrics.values())
    assert all(key.startswith(("test/", "baseline/")) for key in evaluation.metrics)
    assert len(evaluation.predictions) == len(features["test"][1])
    assert (paths.plots / "training_curves.png").is_file() and len(list(paths.plots.iterdir())) > 1

    # The registered model: raw rows in, the kind's output out, a signature naming its input.
    weights, config_file = tmp_path / "model.pt", tmp_path / "config.yaml"
    torch.save(model.state_dict(), weights)
    config_file.write_text(dump_config(config))
    python_model = kind.pyfunc_model()
    python_model.load(
        {
            "weights": str(weights),
            "config": str(config_file),
            "preprocessor": str(paths.preprocessor),
        }
    )
    example = kind.pyfunc_example(config, paths)
    assert list(example.columns) == [kind.raw_input_column] and len(example) > 0
    output = python_model.predict(None, example)
    _check_model_output(config, output, rows=len(example))
    signature = kind.pyfunc_signature(example, output)
    assert kind.raw_input_column in signature.inputs.input_names()

    # `lamina predict`: the reader on a user's file, then one actor's batch, without Ray/MLflow.
    user_input = PREDICT_INPUT_WRITERS[kind_name](config, example, tmp_path)
    rows = kind.read_predict_input(user_input, lambda: config)
    assert len(rows.table) > 0 and set(rows.id_columns) < set(rows.table.columns)

    class LoadedModel:  # what `load_registered_model` gives the actor
        def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
            return python_model.predict(None, frame)

    import mlflow

    from lamina.serving import packaging

    monkeypatch.setattr(packaging, "load_registered_model", lambda uri: LoadedModel())
    monkeypatch.setattr(mlflow, "set_tracking_uri", lambda uri: None)
    monkeypatch.setattr(mlflow, "set_registry_uri", lambda uri: None)
    predictor = kind.batch_predictor()(
        "models:/tiny/1", "sqlite:///unused.db", rows.id_columns, rows.input_column, **rows.extra
    )
    predicted = predictor(rows.table)
    assert len(predicted) == len(rows.table)
    assert predicted[list(rows.id_columns)].equals(rows.table[list(rows.id_columns)])
    assert predicted.drop(columns=list(rows.id_columns)).notna().all().all()


def _check_model_output(config: ExperimentConfig, output: pd.DataFrame, rows: int) -> None:
    if config.task == "classification":
        probabilities = output[[f"probability_{name}" for name in config.data.class_names]]
        assert len(output) == rows
        assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
        assert set(output["prediction"]) <= set(config.data.class_names)
    else:  # a forecast of the next `horizon` values from the whole example
        assert len(output) == config.preprocess.horizon
        assert np.isfinite(output["forecast"]).all()
