"""The registry: model URIs, the model card, the promotion gate and lineage tags against a real
SQLite MLflow store, the image classifier's pyfunc loaded in a fresh process, `lamina models`
and `lamina generate`."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lamina.cli import main
from lamina.config.schema import ExperimentConfig, RegistryConfig
from lamina.errors import TrackingError
from lamina.serving.registry import (
    MAX_DESCRIPTION_CHARS,
    beats_champion,
    headline_test_metrics,
    model_card,
    model_uri,
    promote_version,
)
from tests.conftest import venv_env

# --- model URIs ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "uri"),
    [
        ("gan-mnist", "models:/gan-mnist@champion"),
        ("gan-mnist@challenger", "models:/gan-mnist@challenger"),
        ("gan-mnist/3", "models:/gan-mnist/3"),
        ("models:/cnn-mnist@champion", "models:/cnn-mnist@champion"),
        ("models:/cnn-mnist", "models:/cnn-mnist@champion"),
    ],
)
def test_model_uri_defaults_to_the_champion(spec, uri):
    assert model_uri(spec) == uri


@pytest.mark.parametrize(
    "spec",
    [
        "",
        " ",
        "@champion",
        "gan-mnist@",
        "gan-mnist/",
        "gan-mnist/latest",
        "a/b/3",
        "a@b/3",
        "models:/",
    ],
)
def test_model_uri_rejects_what_names_no_model(spec):
    with pytest.raises(TrackingError, match="NAME, NAME@ALIAS or NAME/VERSION"):
        model_uri(spec)


# --- the gate and the model card -----------------------------------------------------------


def test_promotion_rule_respects_direction_and_margin():
    higher = RegistryConfig(primary_metric="test/accuracy", promotion_margin=0.01)
    lower = RegistryConfig(primary_metric="test/mae", greater_is_better=False)
    assert beats_champion(0.5, None, higher)
    assert beats_champion(0.92, 0.90, higher) and not beats_champion(0.905, 0.90, higher)
    assert beats_champion(1.0, 1.5, lower) and not beats_champion(1.5, 1.5, lower)


def test_headline_metrics_are_the_primary_and_every_test_metric_but_per_class():
    metrics = {"test/accuracy": 0.9, "test/loss": 0.3, "test/f1/0": 0.8, "baseline/x": 0.5}
    assert headline_test_metrics(metrics, "test/accuracy") == {
        "test/accuracy": 0.9,
        "test/loss": 0.3,
    }
    assert list(headline_test_metrics({"val/loss": 1.0}, "val/loss")) == ["val/loss"]


CARD_CONFIG = ExperimentConfig.model_validate(
    {
        "name": "cnn-mnist",
        "data": {
            "kind": "images",
            "path": "data/mnist",
            "image_shape": [28, 28],
            "class_names": ["0", "1"],
        },
        "preprocess": {"kind": "standardize"},
        "model": {"kind": "cnn", "channels": [32, 64]},
        "train": {"lr": 0.001, "epochs": 12},
        "cluster": {"num_workers": 2},
    }
)
CARD_FACTS = {
    "config": CARD_CONFIG,
    "version": 3,
    "run_id": "abc123",
    "metrics": {"test/accuracy": 0.98765, "test/loss": 0.04},
    "decision": "champion: test/accuracy 0.9877 vs champion 0.9800 (margin 0.0)",
    "plots": ["evaluation/plots/confusion_matrix.png"],
    "commit": "a" * 40,
    "data_hash": "0123abcd.dir",
    "lock_hash": "f" * 32,
    "split_sizes": {"train": 4000, "val": 500, "test": 500},
}


def test_model_card_says_what_how_how_well_and_how_to_get_back():
    card = model_card(**CARD_FACTS)
    assert card.startswith("### cnn-mnist v3\n")
    for expected in (
        "MLflow run `abc123`",
        "images from `data/mnist`",
        "2 classes (0, 1)",
        "images 28x28",
        "4000 train / 500 val / 500 test",
        "`0123abcd.dir`",
        "`model.channels=[32, 64]`",
        "`preprocess.kind=standardize`",
        "`train.lr=0.001`",
        "`train.epochs=12`",
        "test/accuracy = 0.9877",
        "test/loss = 0.0400",
        CARD_FACTS["decision"],
        "`runs:/abc123/evaluation/plots/confusion_matrix.png`",
        "outputs/cnn-mnist/plots/",
        "f" * 32,
        f"git checkout {'a' * 40} && dvc checkout",
        "dvc pull",
    ):
        assert expected in card, expected
    assert "cluster.num_workers" not in card and "split.seed" not in card
    assert "subsampled" not in card and "differed" not in card


def test_model_card_of_a_dirty_or_unknown_commit_and_its_length_limit():
    dirty = model_card(**{**CARD_FACTS, "commit": "b" * 40 + "-dirty"})
    assert "Tracked files differed" in dirty and f"git checkout {'b' * 40} &&" in dirty
    unknown = model_card(**{**CARD_FACTS, "commit": "unknown", "split_sizes": None})
    assert "git checkout" not in unknown and "split " not in unknown
    many_classes = [f"class-{index:04d}" for index in range(600)]
    data = CARD_CONFIG.data.model_copy(update={"class_names": many_classes})
    huge = model_card(**{**CARD_FACTS, "config": CARD_CONFIG.model_copy(update={"data": data})})
    assert len(huge) <= MAX_DESCRIPTION_CHARS and huge.endswith("…\n")


# --- promotion against a real SQLite store -------------------------------------------------

TINY_MODEL_CODE = """
import mlflow
from mlflow.pyfunc import PythonModel


class Doubler(PythonModel):
    def predict(self, context, model_input, params=None):
        return 2.0 * model_input["x"]


mlflow.models.set_model(Doubler())
"""
TINY = "tiny"
RULE = RegistryConfig(primary_metric="test/accuracy", promotion_margin=0.01)
TINY_CONFIG = CARD_CONFIG.model_copy(update={"name": TINY, "registry": RULE})


def _register_tiny_version(root: Path, accuracy: float):
    """A run with test metrics and a plot, its tiny pyfunc registered; then the gate."""
    import mlflow
    from mlflow import MlflowClient

    from lamina.tracking.runs import get_or_create_experiment, tracking_uri

    experiment_id = get_or_create_experiment(MlflowClient(tracking_uri(root)), TINY, root)
    metrics = {"test/accuracy": accuracy, "test/loss": 1 - accuracy, "test/f1/a": 0.5}
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_metrics(metrics)
        mlflow.log_artifact(str(root / "confusion_matrix.png"), "evaluation/plots")
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(root / "tiny_model.py"),
            input_example=pd.DataFrame({"x": [1.0, 2.0]}),
            registered_model_name=TINY,
            pip_requirements=[f"mlflow=={mlflow.__version__}"],
        )
    version = int(info.registered_model_version)
    return promote_version(TINY_CONFIG, version, run.info.run_id, metrics, root, split_sizes=None)


@pytest.fixture(scope="module")
def registry_root(tmp_path_factory):
    """A store where `tiny` got v1 (0.80: champion), v2 (0.805: within the margin, challenger),
    v3 (0.90: champion); beside `data.dvc` and `dvc.lock` for the lineage tags."""
    import mlflow

    root = tmp_path_factory.mktemp("registry")
    (root / "tiny_model.py").write_text(TINY_MODEL_CODE)
    (root / "confusion_matrix.png").write_bytes(b"not really a png")
    (root / "data.dvc").write_text("outs:\n- md5: 0123abcd.dir\n  path: data\n")
    (root / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
        try:
            registrations = [_register_tiny_version(root, value) for value in (0.80, 0.805, 0.90)]
            yield root, registrations
        finally:
            mlflow.set_tracking_uri(None)  # back to the default for the tests after these


def _client(root: Path):
    from mlflow import MlflowClient

    return MlflowClient(f"sqlite:///{root / 'mlflow.db'}")


def test_a_version_is_champion_only_if_it_beats_the_champion_by_the_margin(registry_root):
    root, (first, second, third) = registry_root
    assert (first.alias, first.champion_value_before) == ("champion", None)
    assert (second.alias, second.champion_value_before) == ("challenger", 0.80)
    assert (third.alias, third.champion_value_before) == ("champion", 0.80)
    client = _client(root)
    assert int(client.get_model_version_by_alias(TINY, "champion").version) == 3
    assert int(client.get_model_version_by_alias(TINY, "challenger").version) == 2
    second_run = client.get_run(client.get_model_version(TINY, "2").run_id)
    assert second_run.data.tags["lamina.promotion"] == second.decision
    assert second.decision.startswith("challenger: test/accuracy 0.8050 vs champion 0.8000")
    assert third.decision.startswith("champion: test/accuracy 0.9000 vs champion 0.8000")


def test_every_version_carries_its_lineage_and_a_model_card(registry_root):
    root, registrations = registry_root
    client = _client(root)
    version = client.get_model_version(TINY, "3")
    assert version.tags["lamina.run_id"] == version.run_id
    assert version.tags["lamina.dvc_data_hash"] == "0123abcd.dir"
    expected_lock = hashlib.md5((root / "dvc.lock").read_bytes()).hexdigest()
    assert version.tags["lamina.dvc_lock_hash"] == expected_lock
    assert version.tags["mlflow.source.git.commit"] == "unknown"  # not a git repository
    assert version.tags["lamina.primary_metric"] == "test/accuracy"
    assert float(version.tags["test/accuracy"]) == 0.90
    assert float(version.tags["test/loss"]) == pytest.approx(0.10)
    assert "test/f1/a" not in version.tags
    assert version.tags["lamina.promotion"] == registrations[2].decision
    card = version.description
    assert card.startswith(f"### {TINY} v3")
    assert registrations[2].decision in card
    assert f"`runs:/{version.run_id}/evaluation/plots/confusion_matrix.png`" in card
    assert "images from `data/mnist`" in card and "`model.kind=cnn`" in card


def test_model_files_still_match_after_mlflow_loads_the_version_from_a_local_store(
    registry_root,
):
    # MLflow's client writes `registered_model_meta` into the model it loads through the
    # registry: with a local store, into the stored version itself. Not a tampered file.
    from mlflow.artifacts import download_artifacts
    from mlflow.store.artifact.models_artifact_repo import REGISTERED_MODEL_META_FILE_NAME

    from lamina.serving.registry import check_model_files, record_model_files

    root, _ = registry_root
    client = _client(root)
    record_model_files(client, TINY, "1")
    folder = Path(download_artifacts(f"models:/{TINY}/1", tracking_uri=client.tracking_uri))
    assert (folder / REGISTERED_MODEL_META_FILE_NAME).is_file()
    check_model_files(client, TINY, "1")


def test_lamina_models_lists_versions_newest_first_with_aliases(registry_root, capsys):
    root, _ = registry_root
    main(["--root", str(root), "models"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:5] == ["model", "version", "aliases", "primary", "metric"]
    assert [line.split()[:4] for line in lines[1:]] == [
        [TINY, "3", "champion", "test/accuracy=0.9000"],
        [TINY, "2", "challenger", "test/accuracy=0.8050"],
        [TINY, "1", "-", "test/accuracy=0.8000"],
    ]
    with pytest.raises(SystemExit) as exited:
        main(["--root", str(root), "models", "--name", "nope"])
    assert exited.value.code == 2
    assert "no registered model named 'nope'" in capsys.readouterr().err


def test_lamina_models_without_a_store_says_so_and_creates_none(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(SystemExit) as exited:
        main(["--root", str(tmp_path), "models"])
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "no MLflow store" in error and "dvc repro" in error
    assert not (tmp_path / "mlflow.db").exists()


def test_lamina_models_names_an_unreachable_server(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # discard port: refused
    with pytest.raises(SystemExit) as exited:
        main(["--root", str(tmp_path), "models"])
    assert exited.value.code == 2
    assert "http://127.0.0.1:9 is not reachable" in capsys.readouterr().err


# --- lamina generate: what it refuses ------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("gan-mnist", "models:/gan-mnist@champion (in sqlite:"),
        (f"{TINY}@best", f"model '{TINY}' has no alias 'best'"),
        (f"{TINY}/9", f"model '{TINY}' has no version 9"),
        (f"{TINY}/1", f"models:/{TINY}/1 is not a generator"),
        ("gan-mnist/latest", "NAME, NAME@ALIAS or NAME/VERSION"),
    ],
)
def test_generate_names_what_is_missing_and_writes_nothing(registry_root, capsys, model, expected):
    root, _ = registry_root
    output = root / "grid.png"
    with pytest.raises(SystemExit) as exited:
        main(
            ["--root", str(root), "generate", "--model", model, "-n", "4", "--output", str(output)]
        )
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert expected in error and error.count("\n") == 1
    if "NAME@ALIAS" not in expected and "generator" not in expected:
        assert "`lamina models`" in error
    assert not output.exists() and not list(root.glob(".grid.png*"))


def test_generate_refuses_other_formats_before_loading_anything(tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--root", str(tmp_path), "generate", "--output", str(tmp_path / "grid.jpg")])
    assert exited.value.code == 2
    assert ".png (a grid image), .npy" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


# --- the registered generator and the image classifier -------------------------------------


def _logged_model(tmp_path: Path, config, network, preprocessor) -> Path:
    """`network` logged and registered by `log_model_version`, as the register stage does."""
    from mlflow import MlflowClient

    from lamina.config.paths import ExperimentPaths
    from lamina.data.image_parquet import write_image_split
    from lamina.serving.packaging import log_model_version
    from lamina.tracking.runs import get_or_create_experiment, tracking_uri

    paths = ExperimentPaths(config.name, tmp_path)
    paths.splits.mkdir(parents=True)
    images = np.random.default_rng(0).integers(0, 256, (6, 28, 28), dtype=np.uint8)
    write_image_split(paths.splits / "test.parquet", images, np.arange(6) % 10)
    preprocessor.save(paths.preprocessor)
    client = MlflowClient(tracking_uri(tmp_path))
    experiment_id = get_or_create_experiment(client, config.name, tmp_path)
    run_id = client.create_run(experiment_id).info.run_id
    assert log_model_version(config, paths, network, run_id) == 1
    client.set_registered_model_alias(config.name, "champion", "1")
    return tmp_path


def test_generate_writes_a_png_grid_and_uint8_arrays(tmp_path, monkeypatch, capsys):
    import mlflow
    from PIL import Image

    from lamina.config.schema import ExperimentConfig
    from lamina.features.images import ImageStandardizer
    from lamina.models.dcgan import build_gan

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = ExperimentConfig.model_validate(
        {
            "name": "gan-test",
            "data": {
                "kind": "images",
                "path": "unused",
                "image_shape": [28, 28],
                "class_names": [str(digit) for digit in range(10)],
            },
            "preprocess": {"kind": "unit_range"},
            "model": {"kind": "dcgan", "latent_dim": 8, "generator_channels": 4},
            "train": {"epochs": 1},
        }
    )
    generator = build_gan(config)[0].eval()
    unit_range = ImageStandardizer(127.5, 127.5, (28, 28), list(config.data.class_names), 0)
    try:
        root = _logged_model(tmp_path, config, generator, unit_range)
        for name in ("grid.png", "samples.npy"):
            output = root / "out" / name
            main(["--root", str(root), "generate", "--model", config.name, "-n", "5", "--output",
                  str(output)])  # fmt: skip
            assert f"5 samples (28, 28) from models:/{config.name}/1" in capsys.readouterr().out
        main(["--root", str(root), "generate", "--model", config.name, "-n", "5", "--seed", "1",
              "--output", str(root / "out" / "again.npy")])  # fmt: skip
        main(["--root", str(root), "generate", "--model", config.name, "-n", "5", "--seed", "1",
              "--output", str(root / "out" / "samples.npy"), "--overwrite"])  # fmt: skip
    finally:
        mlflow.set_tracking_uri(None)
    samples = np.load(root / "out" / "samples.npy")
    assert samples.shape == (5, 28, 28) and samples.dtype == np.uint8
    assert np.array_equal(samples, np.load(root / "out" / "again.npy"))  # seed 1's, replaced
    (root / "out" / "again.npy").unlink()
    with Image.open(root / "out" / "grid.png") as grid:
        assert grid.format == "PNG" and grid.width > 5 * 28
    assert sorted(path.name for path in (root / "out").iterdir()) == ["grid.png", "samples.npy"]


IMAGE_PREDICT_SCRIPT = """
import json, sys
import mlflow, numpy as np, pandas as pd

model = mlflow.pyfunc.load_model(sys.argv[1])
images = np.load(sys.argv[2])
files = json.loads(sys.argv[3])


def table(frame):
    probabilities = frame[[c for c in frame.columns if c.startswith("probability_")]]
    return {"columns": list(frame.columns), "prediction": frame["prediction"].tolist(),
            "probabilities": probabilities.to_numpy().tolist()}


inputs = {
    "uint8 arrays": list(images),
    "float64 arrays": [image.astype("float64") for image in images],
    "nested lists": [image.tolist() for image in images],
    "png paths": files["same size"],
    "resized rgb png": [files["resized rgb"]],
}
result = {case: table(model.predict(pd.DataFrame({"image": cells})))
          for case, cells in inputs.items()}
errors = {
    "no column": pd.DataFrame({"pixels": list(images)}),
    "missing file": pd.DataFrame({"image": ["/nonexistent/digit.png"]}),
    "not an image": pd.DataFrame({"image": [files["not an image"]]}),
    "wrong shape": pd.DataFrame({"image": [np.zeros((5, 5))]}),
}
result["errors"] = {}
for case, frame in errors.items():
    try:
        model.predict(frame)
        result["errors"][case] = None
    except Exception as exc:
        result["errors"][case] = [type(exc).__name__, str(exc)]
result["input names"] = model.metadata.get_input_schema().input_names()
result["example"] = model.metadata.saved_input_example_info
print(json.dumps(result))
"""


@pytest.fixture(scope="module")
def image_predictions(tmp_path_factory, cnn_config):
    """A tiny untrained ConvNet registered as the pyfunc, then asked in a fresh process."""
    import mlflow
    import torch
    from PIL import Image

    from lamina.features.images import ImageStandardizer
    from lamina.models import build_model
    from lamina.models.raw_input import RawImageClassifier

    root = tmp_path_factory.mktemp("image-model")
    tiny = cnn_config.model.model_copy(update={"channels": [4], "hidden_size": 8})
    config = cnn_config.model_copy(update={"model": tiny, "tune": None})  # off the search space
    torch.manual_seed(0)
    network = build_model(config).eval()
    scaler = ImageStandardizer(33.0, 78.0, (28, 28), list(config.data.class_names), 100)
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        try:
            _logged_model(root, config, network, scaler)
        finally:
            mlflow.set_tracking_uri(None)

    images = np.random.default_rng(1).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    np.save(root / "images.npy", images)
    files = {"same size": [], "not an image": str(root / "notes.png")}
    for index, image in enumerate(images):
        files["same size"].append(str(root / f"digit{index}.png"))
        Image.fromarray(image, mode="L").save(files["same size"][-1])
    files["resized rgb"] = str(root / "big.png")
    Image.fromarray(images[0]).convert("RGB").resize((56, 56)).save(files["resized rgb"])
    (root / "notes.png").write_text("not an image")

    result = subprocess.run(
        [sys.executable, "-c", IMAGE_PREDICT_SCRIPT, "models:/cnn-mnist@champion"]
        + [str(root / "images.npy"), json.dumps(files)],
        cwd=root,
        env=venv_env(MLFLOW_TRACKING_URI=f"sqlite:///{root / 'mlflow.db'}"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with torch.no_grad():
        pixels = torch.from_numpy(images.astype(np.float32))
        expected = RawImageClassifier(network, 33.0, 78.0)(pixels).numpy()
    return json.loads(result.stdout.strip().splitlines()[-1]), expected, files


@pytest.mark.parametrize("case", ["uint8 arrays", "float64 arrays", "nested lists", "png paths"])
def test_image_pyfunc_takes_arrays_lists_and_png_paths(image_predictions, cnn_config, case):
    predictions, expected, _ = image_predictions
    names = list(cnn_config.data.class_names)
    table = predictions[case]
    assert table["columns"] == ["prediction", *(f"probability_{name}" for name in names)]
    assert np.allclose(table["probabilities"], expected, atol=1e-5)
    assert table["prediction"] == [names[index] for index in expected.argmax(axis=1)]


def test_image_pyfunc_resizes_a_larger_colour_png(image_predictions):
    predictions, _, _ = image_predictions
    probabilities = np.asarray(predictions["resized rgb png"]["probabilities"])
    assert probabilities.shape == (1, 10) and probabilities.sum() == pytest.approx(1.0, abs=1e-5)


def test_image_pyfunc_errors_name_the_column_or_the_path(image_predictions):
    predictions, _, files = image_predictions
    errors = predictions["errors"]
    assert errors["no column"][0] == "ValueError" and "`image`" in errors["no column"][1]
    assert errors["missing file"][0] == "ValueError"
    assert "/nonexistent/digit.png" in errors["missing file"][1]
    assert errors["not an image"][0] == "ValueError"
    assert files["not an image"] in errors["not an image"][1]
    assert errors["wrong shape"][0] == "ValueError" and "28x28" in errors["wrong shape"][1]


def test_image_pyfunc_has_a_signature_and_an_input_example(image_predictions):
    predictions, _, _ = image_predictions
    assert predictions["input names"] == ["image"]
    assert predictions["example"]["type"] == "dataframe"
