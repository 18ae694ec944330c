"""The pipeline run every module here shares: a fresh clone of this tree, every preset shrunk,
`dvc repro` once, on one local Ray as `make run` runs it (session-scoped: the modules that use
its registered models or its MLflow store do not pay for a second run). Later tests in
test_end_to_end.py change the clone (a knob, an interrupted search), so modules that use it
after that module read the registry, whose champions stay.
"""

import json
from pathlib import Path

import pytest
import yaml

from lamina.config.compose import compose_experiment
from tests.conftest import CONF_DIR, clone_worktree, git, pipeline_vars, run

# name -> task, for every experiment dvc.yaml runs
EXPERIMENTS = {
    name: compose_experiment(name, CONF_DIR).task for name in pipeline_vars()["experiments"]
}


# The presets that search before training, their metric, and the shrunk search. Shrunk,
# cnn-mnist's search lets ASHA stop trials (half of them after one epoch), which must free
# their CPUs for the trials after them, and samples every trial. transformer-sentiment's
# maximises, trains the preset's own values in its first trial (try_config_first, as both
# default searches do), and is a student's: every trial needs its teacher's logits.
TUNED = {"cnn-mnist": "val/loss", "transformer-sentiment": "val/accuracy"}
SHRUNK_SEARCH = {
    "cnn-mnist": {
        "num_trials": 4,
        "max_epochs_per_trial": 2,
        "scheduler": "asha",
        "reduction_factor": 2,
        "try_config_first": False,
    },
    "transformer-sentiment": {"num_trials": 3, "max_epochs_per_trial": 1},
}


def shrink_preset(repo: Path, name: str, **train: object) -> None:
    path = repo / "conf" / "experiment" / f"{name}.yaml"
    preset = yaml.safe_load(path.read_text())
    if name != "gru-co2":  # a series cannot be subsampled; it is short anyway
        preset.setdefault("data", {})["max_samples"] = 1000
    epochs = 1 if name == "gan-mnist" else 2
    preset["train"] = {**preset.get("train", {}), "epochs": epochs, **train}
    searches = "tune" in preset["defaults"]
    assert searches == (name in TUNED), f"{name}: defaults.tune changed"
    if searches:
        preset["tune"] = SHRUNK_SEARCH[name]
    path.write_text(yaml.safe_dump(preset, sort_keys=False))


@pytest.fixture(scope="session")
def clone(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("clone") / "lamina"
    clone_worktree(repo)
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "clone")
    # An empty remote of its own: nothing to pull, so the data must be rebuilt.
    remote = tmp_path_factory.mktemp("dvc-remote")
    assert (
        run(["dvc", "remote", "modify", "--local", "local", "url", str(remote)], repo).returncode
        == 0
    )
    for name in EXPERIMENTS:
        shrink_preset(repo, name)
    return repo


@pytest.fixture(scope="session")
def tracking(clone) -> dict[str, str]:
    return {"MLFLOW_TRACKING_URI": f"sqlite:///{clone.parent / 'mlflow.db'}"}


@pytest.fixture(scope="session")
def first_repro(clone, tracking):
    recorded = (clone / "data.dvc").read_text()
    ensured = run(["lamina", "data", "ensure"], clone)
    assert ensured.returncode == 0, ensured.stderr
    assert "rebuilt" in ensured.stdout
    assert (clone / "data.dvc").read_text() == recorded
    status = run(["dvc", "status", "--json", "data.dvc"], clone)
    assert json.loads(status.stdout) == {}

    # As `make run` runs it: the stages join one local Ray. Later runs in test_end_to_end.py
    # (a knob, an interrupted search) are plain `dvc repro`: stages that start a Ray of their own.
    result = run(["lamina", "with-local-ray", "--", "dvc", "repro"], clone, **tracking)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result
