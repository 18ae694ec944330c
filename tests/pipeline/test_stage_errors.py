"""Stage scripts on bad input: one readable line, exit code 2, nothing DVC could accept."""

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import CONF_DIR, REPO_ROOT, run


def _stage(workspace: Path, stage: str, experiment: str = "cnn-mnist"):
    return run(
        [sys.executable, str(REPO_ROOT / "pipelines" / f"{stage}.py"), experiment], workspace
    )


def _assert_one_line_error(result, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture
def workspace(tmp_path) -> Path:
    shutil.copytree(CONF_DIR, tmp_path / "conf")
    return tmp_path


def _write_raw(workspace: Path, images: np.ndarray | bytes, labels: np.ndarray) -> None:
    folder = workspace / "data" / "mnist"
    folder.mkdir(parents=True)
    if isinstance(images, bytes):
        (folder / "images.npy").write_bytes(images)
    else:
        np.save(folder / "images.npy", images)
    np.save(folder / "labels.npy", labels)


def _no_stage_output(workspace: Path, name: str) -> None:
    base = workspace / "outputs" / "cnn-mnist"
    leftovers = [p.name for p in base.iterdir()] if base.exists() else []
    assert name not in leftovers and not any(n.startswith(f".{name}.tmp") for n in leftovers)


def test_configure_rejects_a_bad_value_before_anything_runs(workspace):
    preset = workspace / "conf" / "experiment" / "cnn-mnist.yaml"
    body = yaml.safe_load(preset.read_text())
    body["train"]["lr"] = -1
    preset.write_text(yaml.safe_dump(body))
    result = _stage(workspace, "configure")
    _assert_one_line_error(result, "cnn-mnist.yaml", "train.lr", "greater than 0")
    _no_stage_output(workspace, "config.yaml")


def test_prepare_without_configure_says_what_to_run(workspace):
    _assert_one_line_error(_stage(workspace, "prepare"), "config.yaml", "dvc repro")


BAD_INPUTS = {
    "corrupt images": (np.random.default_rng(0).bytes(4000), np.zeros(10, int), "images.npy"),
    "mis-shaped images": (np.zeros((50, 14, 14), np.uint8), np.arange(50) % 10, "got (50, 14, 14)"),
    "too few rows to split": (
        np.zeros((20, 28, 28), np.uint8),
        np.arange(20) % 10,
        "too few to put at least one in each of train/val/test",
    ),
    "one class only": (np.zeros((100, 28, 28), np.uint8), np.zeros(100, int), "only one class"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_prepare_rejects_bad_raw_data_and_writes_nothing(workspace, case):
    images, labels, expected = BAD_INPUTS[case]
    assert _stage(workspace, "configure").returncode == 0
    _write_raw(workspace, images, labels)
    _assert_one_line_error(_stage(workspace, "prepare"), expected)
    _no_stage_output(workspace, "splits")


@pytest.mark.parametrize(("stage", "output"), [("tune", "best_params.yaml"), ("train", "model")])
def test_tracking_stages_refuse_an_unreachable_server(workspace, stage, output):
    assert _stage(workspace, "configure").returncode == 0
    if stage == "train":  # what `tune` leaves for an experiment without a search
        (workspace / "outputs" / "cnn-mnist" / "best_params.yaml").write_text("params: {}\n")
    result = run(
        [sys.executable, str(REPO_ROOT / "pipelines" / f"{stage}.py"), "cnn-mnist"],
        workspace,
        MLFLOW_TRACKING_URI="http://user:secret@127.0.0.1:9/",
    )
    _assert_one_line_error(result, "http://user:***@127.0.0.1:9/", "not reachable")
    assert "secret" not in result.stderr
    _no_stage_output(workspace, output)


def test_train_without_the_tune_stage_output_says_which_stage_to_run(workspace):
    assert _stage(workspace, "configure").returncode == 0
    _assert_one_line_error(_stage(workspace, "train"), "best_params.yaml", "`tune` stage")
    _no_stage_output(workspace, "model")
