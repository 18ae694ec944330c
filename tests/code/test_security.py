"""Security defaults: pickles rebuild arrays and nothing else, checkpoints load as weights
only, and no password in a URI reaches an MLflow param."""

from __future__ import annotations

import ast
import gzip
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lamina.config.compose import compose_experiment, with_overrides
from lamina.data.safe_pickle import load_arrays
from lamina.errors import DataError
from lamina.redaction import redacted
from tests.conftest import CONF_DIR, REPO_ROOT


class _RunsCode:
    """What a hostile pickle carries: unpickling it calls os.system."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickled_arrays_load_in_their_tuples(tmp_path):
    arrays = ((np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1, 2])), [np.eye(2)])
    path = tmp_path / "arrays.pkl.gz"
    with gzip.open(path, "wb") as handle:
        pickle.dump(arrays, handle)
    (images, labels), (identity,) = load_arrays(path)
    assert np.array_equal(images, arrays[0][0]) and images.dtype == np.float32
    assert np.array_equal(labels, [1, 2]) and np.array_equal(identity, np.eye(2))


def test_a_pickle_that_would_run_code_is_refused_before_it_runs(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "hostile.pkl"
    path.write_bytes(pickle.dumps((np.zeros(2), _RunsCode(marker))))
    with pytest.raises(DataError, match=r"hostile.pkl: refused posix.system"):
        load_arrays(path)
    assert not marker.exists()


def test_a_cut_pickle_is_a_data_error(tmp_path):
    path = tmp_path / "cut.pkl"
    path.write_bytes(pickle.dumps(np.zeros(1000))[:100])
    with pytest.raises(DataError, match="cut.pkl"):
        load_arrays(path)


def test_every_torch_load_in_the_code_is_weights_only():
    """A checkpoint or weights file is untrusted input: torch.load must not unpickle code."""
    unsafe = []
    for path in [*(REPO_ROOT / "src").rglob("*.py"), *(REPO_ROOT / "pipelines").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            is_load = (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "load"
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "torch"
            )
            weights_only = any(
                keyword.arg == "weights_only"
                and isinstance(keyword.value, ast.Constant)
                and keyword.value.value is True
                for keyword in getattr(node, "keywords", [])
            )
            if is_load and not weights_only:
                unsafe.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}")
    assert not unsafe, unsafe


@pytest.mark.parametrize(
    ("uri", "masked"),
    [
        ("ray://admin:pw0rd@head:10001", "ray://admin:***@head:10001"),
        ("s3://AKIAKEY:s3cret@bucket/checkpoints", "s3://AKIAKEY:***@bucket/checkpoints"),
        (
            "postgresql://mlflow:pw@127.0.0.1:5432/mlflow",
            "postgresql://mlflow:***@127.0.0.1:5432/mlflow",
        ),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("0.001", "0.001"),
        ("[unbalanced", "[unbalanced"),
        # Unencoded, a `#`, `@` or `/` does not end the password early (urllib's would).
        ("http://u:p#w@d%x/y@127.0.0.1:9/api", "http://u:***@127.0.0.1:9/api"),
        (
            "View run a at: http://u:p%23w%40d@h:5000/#/experiments/1/runs/2\n",
            "View run a at: http://u:***@h:5000/#/experiments/1/runs/2\n",
        ),
        ("'http://a:b@x', http://c:d@y", "'http://a:***@x', http://c:***@y"),
        ("http://127.0.0.1:5000/#/runs/2 models:/m@champion", None),
    ],
)
def test_redacted_hides_uri_passwords_only(uri, masked):
    assert redacted(uri) == (uri if masked is None else masked)


def test_redacted_hides_the_environments_secrets_in_any_spelling(monkeypatch):
    # A library may quote the password decoded (HTTP basic auth), or on its own.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://user:p%23w%40d%25x@127.0.0.1:5000")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "t0ken-value")
    said = "auth p#w@d%x failed; p%23w%40d%25x; token t0ken-value; port 5000"
    assert redacted(said) == "auth *** failed; ***; token ***; port 5000"


# A process as Lamina's entry points run it: everything it writes goes through redaction,
# however it is written (print, a log handler made before, a library, a traceback).
LEAKY_ENTRY_POINT = """
import logging, sys

logging.basicConfig(level="INFO")  # its handler holds the stderr of before
from lamina.entrypoint import exit_on_user_error

def main():
    print("print", sys.argv[1])
    logging.getLogger("x").info("log %s", sys.argv[1])
    sys.stdout.write("write p#w@d%x\\n")
    raise RuntimeError("unexpected " + sys.argv[1])

exit_on_user_error(main, "lamina test")
"""


def test_an_entry_point_prints_logs_and_raises_no_password(tmp_path):
    uri = "http://user:p%23w%40d%25x@127.0.0.1:5000"
    result = subprocess.run(
        [sys.executable, "-c", LEAKY_ENTRY_POINT, uri],
        env={**os.environ, "MLFLOW_TRACKING_URI": uri},
        capture_output=True,
        text=True,
    )
    said = result.stdout + result.stderr
    assert result.returncode == 1 and "Traceback" in said, said
    assert said.count("http://user:***@127.0.0.1:5000") == 3, said
    assert "write ***" in said
    assert "p%23w" not in said and "p#w@d" not in said


def test_a_password_in_the_config_never_reaches_an_mlflow_param(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from lamina.tracking.training_runs import open_training_run

    config = with_overrides(
        compose_experiment("mlp-mnist", CONF_DIR),
        {
            "cluster.address": "ray://admin:pw0rd@head:10001",
            "cluster.storage_path": "s3://AKIAKEY:s3cret@bucket/checkpoints",
        },
    )
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    run_id, _ = open_training_run(config, tmp_path)
    run = MlflowClient(uri).get_run(run_id)
    params, tags = run.data.params, run.data.tags
    assert params["cluster.address"] == "ray://admin:***@head:10001"
    assert params["cluster.storage_path"] == "s3://AKIAKEY:***@bucket/checkpoints"
    logged = " ".join([*params.values(), *tags.values()])
    assert "pw0rd" not in logged and "s3cret" not in logged
