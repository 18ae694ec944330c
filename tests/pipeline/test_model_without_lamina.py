"""A registered model loads without Lamina installed: every champion of the shared pipeline run,
loaded by `mlflow.pyfunc.load_model("models:/<name>@champion")` in a fresh virtualenv that
holds only the models' own `requirements.txt` (offline, from the locked wheels), predicts from
raw input exactly what it predicts where Lamina is installed.

One process per interpreter loads and asks every champion (importing torch and MLflow
uncompiled takes most of a minute), from a folder outside the repository, PYTHONPATH cleared.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from lamina.config.compose import load_resolved_config
from lamina.data.image_parquet import pixels_from_arrow
from tests.conftest import REPO_ROOT, venv_env
from tests.pipeline.conftest import EXPERIMENTS

pytestmark = pytest.mark.slow

INSTALL_LIMIT_S = 120  # uv links the cached wheels: seconds, not minutes

# Run by both interpreters; `import lamina` is tried before any model puts its code on sys.path.
LOAD_AND_PREDICT = """
import json, pickle, sys, traceback

try:
    import lamina
    lamina_importable = True
except ImportError:
    lamina_importable = False
import mlflow.pyfunc

inputs_file, outputs_file = sys.argv[1:]
with open(inputs_file, "rb") as file:
    inputs = pickle.load(file)
outputs = {}
for name, raw_input in inputs.items():
    try:
        outputs[name] = mlflow.pyfunc.load_model(f"models:/{name}@champion").predict(raw_input)
    except Exception:
        outputs[name] = traceback.format_exc()
with open(outputs_file, "wb") as file:
    pickle.dump(outputs, file)
imported = {module.split(".")[0] for module in sys.modules}
print(json.dumps({
    "lamina_importable": lamina_importable,
    "lamina_loaded_from": getattr(sys.modules.get("lamina"), "__file__", None),
    "ray_dvc_or_stages": sorted(imported & {"ray", "dvc", "pipelines"}),
}))
"""


def _find_links() -> list[str]:
    """Where the Makefile finds the CPU torch wheel: $PIP_FIND_LINKS, else pip's configuration."""
    folder = (
        os.environ.get("PIP_FIND_LINKS")
        or subprocess.run(
            [sys.executable, "-m", "pip", "config", "get", "global.find-links"],
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    return ["--find-links", folder] if folder else []


def _champion_requirements(tracking: dict[str, str], folder: Path) -> list[Path]:
    """Each champion's `requirements.txt`. Through the client, not a `models:/` URI: that one
    is resolved against the process-wide registry URI, which this process leaves alone."""
    from mlflow.artifacts import download_artifacts
    from mlflow.tracking import MlflowClient

    uri = tracking["MLFLOW_TRACKING_URI"]
    client = MlflowClient(uri)
    files = []
    for name in EXPERIMENTS:
        version = client.get_model_version_by_alias(name, "champion").version
        model = client.get_model_version_download_uri(name, version)
        requirements = download_artifacts(
            artifact_uri=f"{model}/requirements.txt", dst_path=str(folder / name), tracking_uri=uri
        )
        files.append(Path(requirements))
    return files


@pytest.fixture(scope="session")
def lamina_free_venv(first_repro, tracking, tmp_path_factory) -> tuple[Path, list[Path], float]:
    """(python, the requirements files it was built from, seconds to build): one fresh
    virtualenv holding every champion's requirements and nothing else, pinned to the lock."""
    root = tmp_path_factory.mktemp("lamina-free")
    requirements = _champion_requirements(tracking, root / "models")
    venv = root / "venv"
    uv = Path(sys.executable).with_name("uv")
    listed = [arg for file in requirements for arg in ("-r", str(file))]
    started = time.monotonic()
    for command in (
        [uv, "venv", "--quiet", "--offline", "--python", sys.executable, venv],
        [uv, "pip", "install", "--quiet", "--offline", "--python", venv / "bin" / "python"]
        + [*listed, "--constraint", str(REPO_ROOT / "requirements.lock"), *_find_links()],
    ):
        built = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert built.returncode == 0, built.stderr[-3000:]
    return venv / "bin" / "python", requirements, time.monotonic() - started


def _raw_input(clone: Path, name: str, png_folder: Path) -> pd.DataFrame | np.ndarray:
    """What a user sends the champion: rows of its raw test split (noise for a generator)."""
    config = load_resolved_config(clone / "outputs" / name / "config.yaml")
    if config.task == "generation":
        noise = np.random.default_rng(0).standard_normal((4, config.model.latent_dim))
        return noise.astype(np.float32)
    test = pq.read_table(clone / "outputs" / name / "splits" / "test.parquet")
    if config.data.kind == "images":
        from PIL import Image

        pixels = pixels_from_arrow(test.column("image"), tuple(config.data.image_shape))[:8]
        png = png_folder / f"{name}.png"
        Image.fromarray(pixels[0]).save(png)
        return pd.DataFrame({"image": [*pixels, str(png)]})  # the last row: the first, as a file
    if config.data.kind == "text":
        return pd.DataFrame({"text": [*test.column("text").to_pylist()[:4], ""]})
    values = test.column("value").to_numpy()
    return pd.DataFrame({"value": values[: config.preprocess.window + 8]})


def _load_and_predict(python: Path, env: dict[str, str], folder: Path, name: str):
    """(report, {experiment: output or traceback}) of LOAD_AND_PREDICT run by `python`."""
    outputs = folder / f"{name}-outputs.pkl"
    command = [str(python), "-c", LOAD_AND_PREDICT, str(folder / "inputs.pkl"), str(outputs)]
    result = subprocess.run(
        command, cwd=folder, env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1]), pickle.loads(outputs.read_bytes())


@pytest.fixture(scope="module")
def runs(clone, tracking, lamina_free_venv, tmp_path_factory) -> dict[str, tuple[dict, dict]]:
    """Every champion asked the same raw input twice: `without` Lamina (the fresh venv) and
    `with` it (this interpreter, as `lamina predict` asks it)."""
    folder = tmp_path_factory.mktemp("outside-the-repo")
    inputs = {name: _raw_input(clone, name, folder) for name in EXPERIMENTS}
    (folder / "inputs.pkl").write_bytes(pickle.dumps(inputs))
    python = lamina_free_venv[0]
    bare = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    bare |= {"PATH": f"{python.parent}{os.pathsep}{bare['PATH']}", "PYTHONNOUSERSITE": "1"}
    return {
        "without": _load_and_predict(python, {**bare, **tracking}, folder, "without"),
        "with": _load_and_predict(Path(sys.executable), venv_env(**tracking), folder, "with"),
    }


def test_the_fresh_venv_is_quick_to_build_and_has_no_lamina(lamina_free_venv, runs):
    _, requirements, seconds = lamina_free_venv
    assert seconds < INSTALL_LIMIT_S, f"building the venv took {seconds:.0f} s"
    for file in requirements:
        lines = file.read_text().splitlines()
        assert "torch==2.13.0" in lines, (file, lines)  # the CPU build the lock pins
        assert not any(line.startswith("lamina") for line in lines), (file, lines)
    assert runs["without"][0]["lamina_importable"] is False
    assert runs["with"][0]["lamina_importable"] is True
    # Lamina's modules came with the models themselves (MLflow's `code_paths`).
    assert "/code/lamina/" in runs["without"][0]["lamina_loaded_from"]


def test_loading_and_predicting_imports_no_ray_dvc_or_stage(runs):
    # Where Lamina is installed, Ray and DVC are too: only this run can catch such an import.
    assert runs["with"][0]["ray_dvc_or_stages"] == []
    assert runs["without"][0]["ray_dvc_or_stages"] == []


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_champion_predicts_raw_input_without_lamina(clone, runs, name):
    without, with_lamina = runs["without"][1][name], runs["with"][1][name]
    assert not isinstance(without, str), without  # a traceback
    assert not isinstance(with_lamina, str), with_lamina
    config = load_resolved_config(clone / "outputs" / name / "config.yaml")
    if config.task == "generation":
        assert without.shape == (4, 1, *config.data.image_shape)
        np.testing.assert_allclose(without, with_lamina, atol=1e-5)
        return
    pd.testing.assert_frame_equal(without, with_lamina, check_exact=False, atol=1e-6)
    if config.task == "regression":
        assert list(without.columns) == ["forecast"] and len(without) == config.preprocess.horizon
        return
    classes = [f"probability_{class_name}" for class_name in config.data.class_names]
    assert list(without.columns) == ["prediction", *classes]
    assert np.allclose(without[classes].sum(axis=1), 1.0, atol=1e-5)
    if config.data.kind == "images":  # the last row is the first image, read from a PNG file
        pd.testing.assert_series_equal(without.iloc[-1], without.iloc[0], check_names=False)
