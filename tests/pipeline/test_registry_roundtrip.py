"""Registered models round-trip: each champion of the shared shrunk pipeline run, loaded by
`mlflow.pyfunc.load_model` in a fresh process, takes raw input (image arrays and PNG files, text,
a series' history); `lamina generate` draws from the GAN; `lamina models` lists all six; every
version carries its lineage tags and a model card.

Runs after test_end_to_end.py, which retrains cnn-mnist: expectations come from the registry
(the champion's own tags), not from the workspace's outputs.
"""

import json
import re
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from tests.conftest import run
from tests.pipeline.conftest import EXPERIMENTS

pytestmark = pytest.mark.slow

IMAGE_CLASSIFIERS = [
    n for n, task in EXPERIMENTS.items() if task == "classification" and "mnist" in n
]
TEXT_CLASSIFIERS = [name for name in EXPERIMENTS if name.endswith("-sentiment")]


def _client(tracking):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking["MLFLOW_TRACKING_URI"])


def _fresh_process(script: str, args: list[str], clone, tracking) -> dict:
    result = run([sys.executable, "-c", script, *args], clone, **tracking)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


IMAGE_SCRIPT = """
import json, pathlib, sys
import mlflow, numpy as np, pandas as pd, pyarrow.parquet as pq

name, png_dir = sys.argv[1], sys.argv[2]
model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
table = pq.read_table(f"outputs/{name}/splits/test.parquet")
pixels = table.column("image").combine_chunks().flatten().to_numpy().reshape(-1, 28, 28)
arrays = model.predict(pd.DataFrame({"image": list(pixels)}))
classes = np.asarray([column.removeprefix("probability_") for column in arrays.columns[1:]])
probabilities = arrays.iloc[:, 1:].to_numpy()
sums = probabilities.sum(axis=1)
labels = table.column("label").to_numpy()
result = {
    "columns": list(arrays.columns),
    "rows": len(arrays),
    "accuracy": float((arrays["prediction"].to_numpy() == classes[labels]).mean()),
    "probability_sums": [float(sums.min()), float(sums.max())],
}
if png_dir != "-":
    files = sorted(pathlib.Path(png_dir).glob("*.png"))
    from_files = model.predict(pd.DataFrame({"image": [str(path) for path in files]}))
    rows = [int(path.stem) for path in files]
    result["files"] = len(files)
    result["files_match_arrays"] = bool(
        np.allclose(from_files.iloc[:, 1:].to_numpy(), probabilities[rows], atol=1e-6)
        and (from_files["prediction"].to_numpy() == arrays["prediction"].to_numpy()[rows]).all()
    )
print(json.dumps(result))
"""


def _write_test_pngs(clone, name: str, folder, count: int = 20) -> None:
    from PIL import Image

    table = pq.read_table(clone / "outputs" / name / "splits" / "test.parquet").slice(0, count)
    pixels = table.column("image").combine_chunks().flatten().to_numpy().reshape(-1, 28, 28)
    folder.mkdir()
    for row, image in enumerate(pixels):
        Image.fromarray(image.astype(np.uint8), mode="L").save(folder / f"{row}.png")


@pytest.mark.parametrize("name", IMAGE_CLASSIFIERS)
def test_image_champion_predicts_arrays_and_png_files_in_a_fresh_process(
    clone, first_repro, tracking, tmp_path, name
):
    png_dir = tmp_path / "pngs"
    _write_test_pngs(clone, name, png_dir)
    result = _fresh_process(IMAGE_SCRIPT, [name, str(png_dir)], clone, tracking)
    classes = [str(digit) for digit in range(10)]
    assert result["columns"] == ["prediction", *(f"probability_{c}" for c in classes)]
    assert result["rows"] == 100  # the shrunk split: 1000 samples, 10% test
    assert result["probability_sums"] == pytest.approx([1.0, 1.0], abs=1e-5)
    # The pyfunc scores the test split exactly as the evaluate stage scored this version.
    champion = _client(tracking).get_model_version_by_alias(name, "champion")
    assert result["accuracy"] == pytest.approx(float(champion.tags["test/accuracy"]), abs=1e-6)
    assert result["files"] == 20 and result["files_match_arrays"]


TEXT_SCRIPT = """
import json, sys
import mlflow, pandas as pd

model = mlflow.pyfunc.load_model(f"models:/{sys.argv[1]}@champion")
texts = ["a joyless, tedious mess", "a delight from start to finish", ""]
out = model.predict(pd.DataFrame({"text": texts}))
print(json.dumps({
    "columns": list(out.columns),
    "predictions": out["prediction"].tolist(),
    "sums": (out["probability_fresh"] + out["probability_rotten"]).tolist(),
}))
"""


@pytest.mark.parametrize("name", TEXT_CLASSIFIERS)
def test_text_champion_predicts_raw_text_in_a_fresh_process(clone, first_repro, tracking, name):
    result = _fresh_process(TEXT_SCRIPT, [name], clone, tracking)
    assert result["columns"] == ["prediction", "probability_fresh", "probability_rotten"]
    assert set(result["predictions"]) <= {"fresh", "rotten"} and len(result["predictions"]) == 3
    assert result["sums"] == pytest.approx([1.0] * 3, abs=1e-5)


SERIES_SCRIPT = """
import json
import mlflow, pandas as pd, pyarrow.parquet as pq

model = mlflow.pyfunc.load_model("models:/gru-co2@champion")
history = pq.read_table("outputs/gru-co2/splits/test.parquet").column("value").to_numpy()
forecast = model.predict(pd.DataFrame({"value": history[:60]}))
try:
    model.predict(pd.DataFrame({"value": history[:3]}))
    short = None
except ValueError as exc:
    short = str(exc)
print(json.dumps({"forecast": forecast["forecast"].tolist(), "short": short}))
"""


def test_series_champion_forecasts_from_raw_history_in_a_fresh_process(
    clone, first_repro, tracking
):
    result = _fresh_process(SERIES_SCRIPT, [], clone, tracking)
    assert len(result["forecast"]) == 1 and 300 < result["forecast"][0] < 400  # ppm CO2
    assert "need at least 52 values of history, got 3" in result["short"]


def test_generate_writes_a_grid_and_arrays_from_the_champion_generator(
    clone, first_repro, tracking, tmp_path
):
    from PIL import Image

    for output in (tmp_path / "grid.png", tmp_path / "samples.npy"):
        command = ["lamina", "generate", "--model", "gan-mnist", "-n", "16"]
        result = run([*command, "--output", str(output)], clone, **tracking)
        assert result.returncode == 0, result.stderr[-2000:]
        assert "16 samples (28, 28) from models:/gan-mnist/" in result.stdout
    samples = np.load(tmp_path / "samples.npy")
    assert samples.shape == (16, 28, 28) and samples.dtype == np.uint8
    with Image.open(tmp_path / "grid.png") as grid:
        assert grid.format == "PNG"
    command = ["lamina", "generate", "--model", "gan-mnist@nope", "--output", "x.png"]
    missing = run(command, clone, **tracking)
    assert missing.returncode == 2 and "no alias 'nope'" in missing.stderr
    assert not (clone / "x.png").exists()


def test_lamina_models_lists_all_six_with_their_champion(clone, first_repro, tracking):
    result = run(["lamina", "models"], clone, **tracking)
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()[1:]]
    for name in EXPERIMENTS:
        champions = [row for row in rows if row[0] == name and "champion" in row[2].split(",")]
        assert len(champions) == 1, result.stdout
        assert re.fullmatch(r"test/\w+=[-\d.]+", champions[0][3]), champions[0]


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_every_version_carries_its_lineage_and_a_model_card(clone, first_repro, tracking, name):
    data_hash = yaml.safe_load((clone / "data.dvc").read_text())["outs"][0]["md5"]
    versions = _client(tracking).search_model_versions(f"name = '{name}'")
    assert versions
    for version in versions:
        tags = version.tags
        assert tags["lamina.run_id"] == version.run_id
        assert tags["lamina.dvc_data_hash"] == data_hash
        assert re.fullmatch(r"[0-9a-f]{32}", tags["lamina.dvc_lock_hash"])
        assert re.match(r"[0-9a-f]{40}", tags["mlflow.source.git.commit"])
        primary = tags["lamina.primary_metric"]
        assert float(tags[primary]) == float(tags[primary])  # a number, not NaN
        assert tags["lamina.promotion"].startswith(("champion: ", "challenger: "))
        card = version.description
        assert card.startswith(f"### {name} v{version.version}\n")
        for expected in (data_hash, tags["lamina.promotion"], "git checkout", "dvc checkout"):
            assert expected in card
        assert f"`runs:/{version.run_id}/evaluation/plots/" in card
