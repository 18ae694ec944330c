"""A registered model runs no code planted in the artifact store: the pyfunc models are logged
from code (no `python_model.pkl` is read, so a planted one never runs), and `lamina predict` /
`lamina generate` refuse a version whose files differ from the SHA-256 the registry recorded.

The session's registered champions are read, never altered: tampering happens on copies, which
a copy of the store registers as new versions carrying the genuine version's recorded digests.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from tests.conftest import run
from tests.pipeline.conftest import EXPERIMENTS

pytestmark = pytest.mark.slow

PYFUNC_MODELS = sorted(name for name, task in EXPERIMENTS.items() if task != "generation")


class _RunsCode:
    """What a hostile pickle carries: unpickling it runs a shell command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def plant_pickle(model_folder: Path, marker: Path) -> None:
    """A `python_model.pkl` that would create `marker` if anything unpickled it."""
    (model_folder / "python_model.pkl").write_bytes(pickle.dumps(_RunsCode(marker)))


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)


def _champion_files(tracking: dict[str, str], name: str, destination: Path) -> Path:
    """A copy of the champion's files, downloaded from the shared store."""
    from lamina.serving.registry import download_model_version

    client = _client(tracking["MLFLOW_TRACKING_URI"])
    version = client.get_model_version_by_alias(name, "champion").version
    return download_model_version(client, name, str(version), destination)


@pytest.mark.parametrize("name", PYFUNC_MODELS)
def test_a_planted_pickle_never_runs_and_the_model_still_predicts(
    first_repro, tracking, tmp_path, name
):
    import mlflow.pyfunc

    genuine = _champion_files(tracking, name, tmp_path / "genuine")
    flavor = yaml.safe_load((genuine / "MLmodel").read_text())["flavors"]["python_function"]
    assert flavor["loader_module"] == "mlflow.pyfunc.loaders.code_model", flavor
    assert not list(genuine.rglob("*.pkl"))  # nothing pickled was logged
    tampered = shutil.copytree(genuine, tmp_path / "tampered")
    marker = tmp_path / "pwned"
    plant_pickle(tampered, marker)

    original = mlflow.pyfunc.load_model(str(genuine))
    example = original.input_example
    loaded = mlflow.pyfunc.load_model(str(tampered))
    pd.testing.assert_frame_equal(loaded.predict(example), original.predict(example))
    assert not marker.exists()


@contextlib.contextmanager
def _copied_store(tracking: dict[str, str], folder: Path) -> Iterator[str]:
    """A copy of the session's store (its SQLite file), as a tracking URI."""
    import mlflow

    source = Path(tracking["MLFLOW_TRACKING_URI"].removeprefix("sqlite:///"))
    folder.mkdir()
    shutil.copy2(source, folder / "mlflow.db")
    try:
        yield f"sqlite:///{folder / 'mlflow.db'}"
    finally:
        mlflow.set_tracking_uri(None)


def _register_copy(uri: str, name: str, files: Path, digests_from: str) -> str:
    """`files` registered in the store at `uri` as a new version of `name`, trusted with the
    SHA-256 the registry recorded for version `digests_from`; the new version."""
    from lamina.serving.registry import MODEL_FILES_TAG

    client = _client(uri)
    recorded = client.get_model_version(name, digests_from).tags[MODEL_FILES_TAG]
    version = client.create_model_version(name, source=str(files)).version
    client.set_model_version_tag(name, version, MODEL_FILES_TAG, recorded)
    return str(version)


def test_predict_refuses_a_version_with_a_planted_file_before_loading_it(
    clone, first_repro, tracking, tmp_path
):
    name = "cnn-mnist"
    files = _champion_files(tracking, name, tmp_path / "copy")
    marker = tmp_path / "pwned"
    plant_pickle(files, marker)
    (tmp_path / "digits").mkdir()
    Image.fromarray(np.zeros((28, 28), dtype=np.uint8)).save(tmp_path / "digits" / "one.png")
    output = tmp_path / "predictions.csv"
    with _copied_store(tracking, tmp_path / "store") as uri:
        champion = _client(uri).get_model_version_by_alias(name, "champion").version
        version = _register_copy(uri, name, files, champion)
        command = ["lamina", "predict", "--model", f"{name}/{version}"]
        command += ["--input", str(tmp_path / "digits"), "--output", str(output)]
        result = run(command, clone, MLFLOW_TRACKING_URI=uri)
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert f"models:/{name}/{version}: its file python_model.pkl was added" in lines[0]
    assert not marker.exists() and not output.exists()


def test_generate_checks_the_generator_it_loads(clone, first_repro, tracking, tmp_path):
    name = "gan-mnist"
    genuine = _champion_files(tracking, name, tmp_path / "genuine")
    changed = shutil.copytree(genuine, tmp_path / "changed")
    weights = changed / "data" / "model.pt2"
    weights.write_bytes(weights.read_bytes() + b"\0")
    with _copied_store(tracking, tmp_path / "store") as uri:
        champion = _client(uri).get_model_version_by_alias(name, "champion").version
        versions = {
            copy: _register_copy(uri, name, files, champion)
            for copy, files in (("genuine", genuine), ("changed", changed))
        }
        results = {
            copy: run(
                ["lamina", "generate", "--model", f"{name}/{version}", "-n", "4"]
                + ["--output", str(tmp_path / f"{copy}.npy")],
                clone,
                MLFLOW_TRACKING_URI=uri,
            )
            for copy, version in versions.items()
        }
    # The untampered copy passes the check: the refusal below is the changed file's alone.
    assert results["genuine"].returncode == 0, results["genuine"].stderr[-3000:]
    assert np.load(tmp_path / "genuine.npy").shape == (4, 28, 28)
    refused = results["changed"]
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
    assert f"models:/{name}/{versions['changed']}: its file data/model.pt2 was changed" in (
        refused.stderr
    )
    assert not (tmp_path / "changed.npy").exists()


def test_every_version_records_the_sha256_of_its_files(first_repro, tracking):
    from lamina.serving.registry import MODEL_FILES_TAG

    client = _client(tracking["MLFLOW_TRACKING_URI"])
    for name in EXPERIMENTS:
        for version in client.search_model_versions(f"name = '{name}'"):
            digests = json.loads(version.tags[MODEL_FILES_TAG])
            assert "MLmodel" in digests, digests
            assert all(len(digest) == 64 for digest in digests.values()), digests


# --- for the bad-input table (test_bad_input_commands.py): a tiny generator, no session ------

TINY_GAN = "gan-tiny"


def registered_generator(store: Path):
    """A tiny untrained GAN generator registered in `store` as `gan-tiny` v1 by
    `log_model_version` (the SHA-256 of its files recorded); a client on the store."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from lamina.config.paths import ExperimentPaths
    from lamina.config.schema import ExperimentConfig
    from lamina.models.dcgan import build_gan
    from lamina.serving.packaging import log_model_version
    from lamina.tracking.runs import get_or_create_experiment

    config = ExperimentConfig.model_validate(
        {
            "name": TINY_GAN,
            "data": {"kind": "images", "path": "unused", "image_shape": [28, 28],
                     "class_names": [str(digit) for digit in range(10)]},
            "preprocess": {"kind": "unit_range"},
            "model": {"kind": "dcgan", "latent_dim": 8, "generator_channels": 4},
            "train": {"epochs": 1},
        }
    )  # fmt: skip
    uri = f"sqlite:///{store / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        try:
            client = MlflowClient(uri)
            run_id = client.create_run(get_or_create_experiment(client, TINY_GAN, store))
            generator = build_gan(config)[0].eval()
            log_model_version(
                config, ExperimentPaths(TINY_GAN, store), generator, run_id.info.run_id
            )
        finally:
            mlflow.set_tracking_uri(None)
    return client


def generator_with_a_changed_file(store: Path) -> None:
    """`registered_generator`, then its weights changed in the artifact store."""
    client = registered_generator(store)
    folder = Path(client.get_model_version_download_uri(TINY_GAN, "1").removeprefix("file://"))
    weights = folder / "data" / "model.pt2"
    weights.write_bytes(weights.read_bytes() + b"\0")


def generator_without_digests(store: Path) -> None:
    """`registered_generator` without the SHA-256 of its files, as registered before Lamina
    recorded them (or by something else than Lamina)."""
    from lamina.serving.registry import MODEL_FILES_TAG

    registered_generator(store).delete_model_version_tag(TINY_GAN, "1", MODEL_FILES_TAG)
