"""Bad input, stage by stage: one readable line, exit code 2, and nothing DVC could accept.

`CASES` is the table (docs/reliability.md lists it): each case breaks one thing in a workspace
(a raw file, a preset, the environment), runs the stage that reads it as DVC would
(`python pipelines/<stage>.py NAME`) and expects, on stderr, exactly one line without a
traceback that holds the given fragments (the file, key or URI, and what to do), exit code 2,
and no output of that stage, not even a temporary one.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.conftest import CONF_DIR, REPO_ROOT, run
from tests.pipeline.test_bad_input_commands import COMMAND_CASES

MNIST, TEXT, SERIES = "data/mnist", "data/rotten_tomatoes/reviews.csv", "data/co2/co2.csv"


@dataclass(frozen=True)
class Case:
    experiment: str
    stage: str
    breaks: Callable[[Path], None]  # puts the bad input into the workspace
    says: tuple[str, ...]  # fragments of the one error line
    output: str  # the stage's output, which must not appear
    env: dict[str, str] = field(default_factory=dict)


def _config(breaks: Callable[[Path], None], *says: str) -> Case:
    """A bad preset: `configure` refuses it and writes no config."""
    return Case("cnn-mnist", "configure", breaks, says, "config.yaml")


def _raw(experiment: str, breaks: Callable[[Path], None], *says: str) -> Case:
    """`prepare` refuses what `breaks` did (bad raw data, a missing config): no splits."""
    return Case(experiment, "prepare", breaks, says, "splits")


# --- raw data: good by default, each case breaks one thing --------------------------------


def _digits(workspace: Path, images=None, labels=None, count: int = 100) -> None:
    folder = workspace / MNIST
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    good_images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
    good_labels = np.arange(count) % 10
    for name, value, good in (("images", images, good_images), ("labels", labels, good_labels)):
        if isinstance(value, bytes):
            (folder / f"{name}.npy").write_bytes(value)
        else:
            np.save(folder / f"{name}.npy", good if value is None else value)


def _truncated_npy(workspace: Path) -> bytes:
    _digits(workspace)
    data = (workspace / MNIST / "images.npy").read_bytes()
    return data[: len(data) // 2]


def _reviews(workspace: Path, body: bytes | pd.DataFrame | None = None) -> None:
    path = workspace / TEXT
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(body, bytes):
        path.write_bytes(body)
        return
    if body is None:
        labels = ["fresh", "rotten"] * 50
        body = pd.DataFrame({"text": [f"review number {i}" for i in range(100)], "label": labels})
    body.to_csv(path, index=False)


def _co2(workspace: Path, values=None, columns=("date", "co2")) -> None:
    path = workspace / SERIES
    path.parent.mkdir(parents=True, exist_ok=True)
    if values is None:
        values = 315 + np.sin(np.arange(400) / 8.0)
    dates = pd.date_range("1960-01-03", periods=len(values), freq="W").strftime("%Y-%m-%d")
    pd.DataFrame({columns[0]: dates, columns[1]: values}).to_csv(path, index=False)


def _preset(experiment: str, section: str, key: str, value: object) -> Callable[[Path], None]:
    def breaks(workspace: Path) -> None:
        path = workspace / "conf" / "experiment" / f"{experiment}.yaml"
        body = yaml.safe_load(path.read_text())
        body.setdefault(section, {})[key] = value
        path.write_text(yaml.safe_dump(body, sort_keys=False))

    return breaks


def _nan_digits(workspace: Path) -> None:
    images = np.zeros((100, 28, 28), np.float32)
    images[3, 4, 5] = np.nan
    _digits(workspace, images=images)


def _nan_series(workspace: Path) -> None:
    values = 315 + np.sin(np.arange(400) / 8.0)
    values[17] = np.nan
    _co2(workspace, values)


def _no_tune_output(workspace: Path) -> None:
    (workspace / "outputs" / "cnn-mnist" / "best_params.yaml").unlink()


def _preset_bytes(body: bytes) -> Callable[[Path], None]:
    def breaks(workspace: Path) -> None:
        (workspace / "conf" / "experiment" / "cnn-mnist.yaml").write_bytes(body)

    return breaks


# Ten levels of nine aliases: 9**10 values once expanded, in 300 bytes.
ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + level)}: &{chr(98 + level)} [{', '.join([f'*{chr(97 + level)}'] * 9)}]\n"
    for level in range(9)
)


def _latin1_preset(workspace: Path) -> None:
    path = workspace / "conf" / "experiment" / "cnn-mnist.yaml"
    path.write_bytes(path.read_bytes() + "# réglages\n".encode("latin-1"))


def _file_for_outputs(workspace: Path) -> None:
    (workspace / "outputs").mkdir(exist_ok=True)
    (workspace / "outputs" / "cnn-mnist").write_text("a note that is not a folder\n")


def _mixed_zones(workspace: Path) -> None:
    _co2(workspace)
    path = workspace / SERIES
    lines = path.read_text().splitlines()
    date, value = lines[200].split(",")
    lines[200] = f"{date}T00:00:00+02:00,{value}"
    path.write_text("\n".join(lines) + "\n")


def _resolved(experiment: str, section: str, key: str, value: object) -> Callable[[Path], None]:
    """A value in the config `configure` resolved, which the later stages read."""

    def breaks(workspace: Path) -> None:
        path = workspace / "outputs" / experiment / "config.yaml"
        body = yaml.safe_load(path.read_text())
        body[section][key] = value
        path.write_text(yaml.safe_dump(body, sort_keys=False))

    return breaks


DOWN = "http://lamina:s3cret@127.0.0.1:9/"  # nothing listens on port 9 (discard)

CASES: dict[str, Case] = {
    # configure: the preset, validated before anything runs
    "config: unknown key": _config(
        _preset("cnn-mnist", "train", "learning_rate", 0.1),
        "conf/experiment/cnn-mnist.yaml",
        "train.learning_rate",
        "Extra inputs",
    ),
    "config: wrong type": _config(
        _preset("cnn-mnist", "train", "epochs", "ten"),
        "cnn-mnist.yaml",
        "train.epochs",
        "valid integer",
    ),
    "config: impossible value": _config(
        _preset("cnn-mnist", "train", "lr", -1), "cnn-mnist.yaml", "train.lr", "greater than 0"
    ),
    "config: no data left to train on": _config(
        _preset("cnn-mnist", "split", "test_fraction", 0.85),
        "cnn-mnist.yaml",
        "split",
        "at least 10% for training",
    ),
    "config: unknown option of a group": _config(
        _preset("cnn-mnist", "defaults", "model", "resnet"), "resnet"
    ),
    # prepare: MNIST-style arrays (images.npy, labels.npy)
    "images: missing file": _raw(
        "cnn-mnist", lambda w: None, "data/mnist/images.npy", "lamina data ensure"
    ),
    "images: random bytes": _raw(
        "cnn-mnist",
        lambda w: _digits(w, images=np.random.default_rng(0).bytes(4000)),
        "data/mnist/images.npy",
    ),
    "images: empty file": _raw("cnn-mnist", lambda w: _digits(w, images=b""), "images.npy"),
    "images: truncated file": _raw(
        "cnn-mnist", lambda w: _digits(w, images=_truncated_npy(w)), "images.npy"
    ),
    "images: wrong shape": _raw(
        "cnn-mnist",
        lambda w: _digits(w, images=np.zeros((100, 14, 14), np.uint8)),
        "images.npy",
        "got (100, 14, 14)",
    ),
    "images: NaN pixels": _raw("cnn-mnist", _nan_digits, "images.npy", "NaN"),
    "images: labels out of range": _raw(
        "cnn-mnist",
        lambda w: _digits(w, labels=np.arange(100) % 12),
        "labels.npy",
        "data.class_names",
    ),
    "images: one class only": _raw(
        "cnn-mnist", lambda w: _digits(w, labels=np.zeros(100, int)), "data/mnist", "only one class"
    ),
    "images: too few rows to split": _raw(
        "cnn-mnist",
        lambda w: _digits(w, count=20),
        "data/mnist",
        "too few to put at least one in each of train/val/test",
    ),
    # prepare: a CSV of texts (text, label)
    "text: random bytes": _raw(
        "lstm-sentiment", lambda w: _reviews(w, np.random.default_rng(1).bytes(3000)), TEXT, "UTF-8"
    ),
    "text: not UTF-8": _raw(
        "lstm-sentiment",
        lambda w: _reviews(w, "text,label\nun film très bon,fresh\n".encode("latin-1")),
        TEXT,
        "not UTF-8",
        "save the file as UTF-8",
    ),
    "text: empty file": _raw("lstm-sentiment", lambda w: _reviews(w, b""), TEXT, "empty"),
    "text: wrong columns": _raw(
        "lstm-sentiment",
        lambda w: _reviews(w, pd.DataFrame({"review": ["good"] * 10, "label": ["fresh"] * 10})),
        TEXT,
        "data.text_column='text'",
        "columns found",
    ),
    "text: empty texts": _raw(
        "lstm-sentiment",
        lambda w: _reviews(w, pd.DataFrame({"text": ["good", " "] * 20, "label": ["fresh"] * 40})),
        TEXT,
        "empty or blank 'text'",
    ),
    "text: label not a class": _raw(
        "lstm-sentiment",
        lambda w: _reviews(w, pd.DataFrame({"text": ["ok"] * 10, "label": ["meh"] * 10})),
        TEXT,
        "'meh'",
        "data.class_names",
    ),
    # prepare: a CSV series (date, co2)
    "series: too short for the window": _raw(
        "gru-co2", lambda w: _co2(w, 315 + np.zeros(60)), SERIES, "window"
    ),
    "series: NaN values": _raw("gru-co2", _nan_series, SERIES, "NaN"),
    "series: wrong columns": _raw(
        "gru-co2", lambda w: _co2(w, columns=("week", "ppm")), SERIES, "co2"
    ),
    # services and stage order
    "tracking server down (tune)": Case(
        "cnn-mnist",
        "tune",
        lambda w: None,
        ("http://lamina:***@127.0.0.1:9/", "not reachable", "MLFLOW_TRACKING_URI"),
        "best_params.yaml",
        {"MLFLOW_TRACKING_URI": DOWN},
    ),
    "tracking server down (train)": Case(
        "cnn-mnist",
        "train",
        lambda w: None,
        ("http://lamina:***@127.0.0.1:9/", "not reachable"),
        "model",
        {"MLFLOW_TRACKING_URI": DOWN},
    ),
    "Ray address that does not answer": Case(
        "cnn-mnist",
        "train",
        lambda w: None,
        ("Ray cluster at 127.0.0.1:9", "unset RAY_ADDRESS"),
        "model",
        {"RAY_ADDRESS": "127.0.0.1:9"},
    ),
    "prepare before configure": _raw(
        "cnn-mnist",
        lambda w: (w / "outputs" / "cnn-mnist" / "config.yaml").unlink(),
        "outputs/cnn-mnist/config.yaml",
        "dvc repro",
    ),
    "train before tune": Case(
        "cnn-mnist", "train", _no_tune_output, ("best_params.yaml", "`tune` stage"), "model"
    ),
    # configure: presets are read with limits and cannot reach outside conf/ or outputs/
    "config: YAML alias bomb": _config(
        _preset_bytes(ALIAS_BOMB.encode()), "conf/experiment/cnn-mnist.yaml", "an alias (*a)"
    ),
    "config: preset not UTF-8": _config(
        _latin1_preset, "conf/experiment/cnn-mnist.yaml", "not UTF-8", "save the file as UTF-8"
    ),
    "config: preset too large": _config(
        _preset_bytes(b"# " + b"x" * 300_000 + b"\n"), "cnn-mnist.yaml", "larger than 256 KB"
    ),
    "config: defaults outside conf/": _config(
        _preset("cnn-mnist", "defaults", "model", "../../../etc/x"),
        "cnn-mnist.yaml",
        "defaults.model: '../../../etc/x' is not a plain name",
    ),
    "config: YAML nested too deep": _config(
        _preset_bytes(b"train: " + b"[" * 10_000 + b"]" * 10_000), "nested deeper than 32 levels"
    ),
    "config: teacher name with ../": _config(
        _preset("cnn-mnist", "train", "distillation", {"teacher": "../../x"}),
        "train.distillation.teacher",
        "'../../x' is not a plain name",
    ),
    "config: infinite value": _config(
        _preset("cnn-mnist", "train", "lr", float("inf")), "train.lr", "finite number"
    ),
    "config: experiment name with ../": Case(
        "../../escape",
        "configure",
        lambda w: None,
        ("'../../escape' is not a plain name", "conf/experiment"),
        "config.yaml",
    ),
    "config: experiment name with /": Case(
        "cnn-mnist/x",
        "configure",
        lambda w: None,
        ("'cnn-mnist/x' is not a plain name",),
        "config.yaml",
    ),
    "outputs: a file where the experiment's folder goes": _config(
        _file_for_outputs, "outputs/cnn-mnist: a file where the folder", "move it away"
    ),
    "series: mixed time zones": _raw(
        "gru-co2", _mixed_zones, SERIES, "mixes time zones", "line 201", "UTC"
    ),
    "train: more workers than the cluster has": Case(
        "cnn-mnist",
        "train",
        _resolved("cnn-mnist", "cluster", "num_workers", 1000),
        ("cluster.num_workers=1000 x cluster.cpus_per_worker=0.5", "500 CPUs", "cnn-mnist.yaml"),
        "model",
    ),
    "tune: more trial workers than the cluster has": Case(
        "cnn-mnist",
        "tune",
        _resolved("cnn-mnist", "tune", "workers_per_trial", 1000),
        ("tune.max_concurrent_trials=2 x tune.workers_per_trial=1000", "1000.02 CPUs"),
        "best_params.yaml",
    ),
}


@pytest.fixture(scope="module")
def configured(tmp_path_factory) -> Path:
    """A workspace where `configure` has run for each experiment of the table (its configs are
    what the later stages read); every case works on its own copy."""
    base = tmp_path_factory.mktemp("bad-input") / "base"
    shutil.copytree(CONF_DIR, base / "conf")
    later = {case.experiment for case in CASES.values() if case.stage != "configure"}
    for experiment in sorted(later):
        result = _stage(base, "configure", experiment)
        assert result.returncode == 0, result.stderr
    # What `tune` leaves for an experiment without a search, for the `train` cases.
    (base / "outputs" / "cnn-mnist" / "best_params.yaml").write_text("params: {}\n")
    return base


def _stage(workspace: Path, stage: str, experiment: str, **env: str):
    command = [sys.executable, str(REPO_ROOT / "pipelines" / f"{stage}.py"), experiment]
    return run(command, workspace, **env)


@pytest.mark.parametrize("case_id", list(CASES))
def test_bad_input_is_one_line_and_writes_nothing(configured, tmp_path, case_id):
    case = CASES[case_id]
    workspace = tmp_path / "workspace"
    if case.stage == "configure":  # before any configure
        shutil.copytree(configured / "conf", workspace / "conf")
    else:
        shutil.copytree(configured, workspace)
    output = workspace / "outputs" / case.experiment / case.output
    existed = output.exists()
    case.breaks(workspace)

    result = _stage(workspace, case.stage, case.experiment, **case.env)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert lines[0].startswith(f"lamina {case.stage}: error: "), lines[0]
    for fragment in case.says:
        assert fragment in lines[0], (fragment, lines[0])
    assert "s3cret" not in result.stderr + result.stdout
    assert output.exists() == existed  # the stage wrote nothing in its place
    folder = output.parent
    leftovers = [p.name for p in folder.iterdir()] if folder.is_dir() else []
    assert not any(name.startswith(f".{case.output}.tmp") for name in leftovers), leftovers


def test_the_table_covers_every_kind_of_bad_input():
    kinds = {case_id.split(":")[0] for case_id in CASES}
    assert {"config", "images", "text", "series"} <= kinds
    assert len(CASES) + len(COMMAND_CASES) >= 50


def test_the_docs_list_every_case():
    page = (REPO_ROOT / "docs" / "reliability.md").read_text()
    missing = [case_id for case_id in [*CASES, *COMMAND_CASES] if f"| {case_id} |" not in page]
    assert not missing, f"docs/reliability.md's bad-input table lacks: {missing}"
