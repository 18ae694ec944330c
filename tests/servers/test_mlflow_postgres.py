"""The MLflow tracking server Lamina starts (PostgreSQL behind it, artifacts served through it).

Clients get nothing but `MLFLOW_TRACKING_URI`, as the pipeline's stages do: one process logs
and registers with Lamina's own tracking and registry code, a fresh one loads the champion.
The last test stops the module's server: pytest runs a module's tests in file order.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from lamina.errors import TrackingError
from lamina.tracking.runs import check_tracking_server
from lamina.tracking.server import start, stop
from tests.conftest import venv_env

MODEL_NAME = "affine"

# Models from code: the model is this file, stored with the version, so loading it needs no
# pickled class from a test module.
MODEL_CODE = """
import mlflow
from mlflow.pyfunc import PythonModel


class Affine(PythonModel):
    def predict(self, context, model_input, params=None):
        return 2.0 * model_input["x"] + 1.0


mlflow.models.set_model(Affine())
"""

# The writer: Lamina's experiment and registry code, with the server only in the environment.
LOG_AND_REGISTER = """
import json, sys
from pathlib import Path

import mlflow
import pandas as pd
from mlflow import MlflowClient

from lamina.config.schema import ExperimentConfig
from lamina.serving.registry import promote_version
from lamina.tracking.runs import get_or_create_experiment, tracking_uri

model_code, name, root = sys.argv[1], sys.argv[2], Path(sys.argv[3])
mlflow.set_tracking_uri(tracking_uri(root))
experiment_id = get_or_create_experiment(MlflowClient(tracking_uri(root)), "server-test", root)
with mlflow.start_run(experiment_id=experiment_id) as run:
    mlflow.log_params({"learning_rate": 0.01, "layers": 2})
    mlflow.log_metrics({"test/accuracy": 0.9, "train/loss": 0.25})
    info = mlflow.pyfunc.log_model(
        name="model",
        python_model=model_code,
        input_example=pd.DataFrame({"x": [1.0, 2.0]}),
        registered_model_name=name,
        pip_requirements=[f"mlflow=={mlflow.__version__}"],
    )
version = int(info.registered_model_version)
config = ExperimentConfig.model_validate({
    "name": name,
    "data": {
        "kind": "images", "path": "unused", "image_shape": [28, 28], "class_names": ["0", "1"]
    },
    "model": {"kind": "mlp", "hidden_sizes": [8]},
    "train": {"epochs": 1},
})
registration = promote_version(config, version, run.info.run_id, {"test/accuracy": 0.9}, root)
print(json.dumps({"run_id": run.info.run_id, "experiment_id": experiment_id,
                  "version": version, "alias": registration.alias}))
"""

LOAD_CHAMPION = """
import sys

import mlflow
import numpy as np
import pandas as pd

model = mlflow.pyfunc.load_model(sys.argv[1])
print(float(np.asarray(model.predict(pd.DataFrame({"x": [3.0]}))).ravel()[0]))
"""


def _python(code: str, args: list[str], cwd: Path, uri: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=cwd,
        env=venv_env(MLFLOW_TRACKING_URI=uri),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


def test_register_alias_and_load_the_champion_from_a_fresh_process(mlflow_server, tmp_path):
    from mlflow import MlflowClient

    model_code = tmp_path / "affine_model.py"
    model_code.write_text(MODEL_CODE)
    args = [str(model_code), MODEL_NAME, str(tmp_path)]
    logged = json.loads(_python(LOG_AND_REGISTER, args, tmp_path, mlflow_server.uri))
    assert logged["alias"] == "champion"

    prediction = _python(
        LOAD_CHAMPION, [f"models:/{MODEL_NAME}@champion"], tmp_path, mlflow_server.uri
    )
    assert float(prediction) == pytest.approx(7.0)

    client = MlflowClient(mlflow_server.uri)
    run = client.get_run(logged["run_id"])
    assert run.data.params == {"learning_rate": "0.01", "layers": "2"}
    assert run.data.metrics == {"test/accuracy": 0.9, "train/loss": 0.25}
    champion = client.get_model_version_by_alias(MODEL_NAME, "champion")
    assert int(champion.version) == logged["version"]
    assert champion.tags["test/accuracy"] == "0.9"
    # Artifacts went through the server, into the folder it serves them from.
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    served = mlflow_server.files.artifacts / logged["experiment_id"]
    assert list(served.rglob("MLmodel")), f"no model under {served}"


def test_runs_and_versions_are_rows_in_postgresql(mlflow_server):
    import psycopg2

    connection = psycopg2.connect(
        host="127.0.0.1",
        port=mlflow_server.pg_port,
        user="lamina",
        dbname="mlflow",
        passfile=str(mlflow_server.files.pgpass),
    )
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM runs")
            runs = cursor.fetchone()[0]
            cursor.execute("SELECT count(*) FROM model_versions WHERE name = %s", (MODEL_NAME,))
            versions = cursor.fetchone()[0]
    finally:
        connection.close()
    assert (runs, versions) == (1, 1)


def test_both_servers_listen_on_127_0_0_1_only(mlflow_server):
    ports = {mlflow_server.port, mlflow_server.pg_port}
    listening = [
        connection.laddr
        for connection in psutil.net_connections(kind="inet")
        if connection.status == psutil.CONN_LISTEN and connection.laddr.port in ports
    ]
    assert {address.port for address in listening} == ports
    assert {address.ip for address in listening} == {"127.0.0.1"}


def test_start_again_reuses_the_running_pair(mlflow_server):
    again = start(mlflow_server.files.root, port=mlflow_server.port)
    assert (again.mlflow_pid, again.postgres_pid) == (
        mlflow_server.mlflow_pid,
        mlflow_server.postgres_pid,
    )
    assert again.healthy


def test_preflight_passes_a_live_server_with_or_without_credentials(mlflow_server):
    check_tracking_server(mlflow_server.uri)
    # Credentials in the URI go as a Basic auth header (this server ignores it).
    check_tracking_server(mlflow_server.uri.replace("http://", "http://alice:s3cret@"))


def test_preflight_names_an_unreachable_server_in_seconds():
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))  # bound but never listening: connections are refused
        port = bound.getsockname()[1]
        for uri, shown in [
            (f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}"),
            (f"http://alice:s3cret@127.0.0.1:{port}", f"http://alice:***@127.0.0.1:{port}"),
        ]:
            started = time.monotonic()
            with pytest.raises(TrackingError) as error:
                check_tracking_server(uri)
            assert time.monotonic() - started < 5
            assert shown in str(error.value)
            assert "s3cret" not in str(error.value)


def _gone(pid: int) -> bool:
    """Exited; a zombie counts as exited (this machine's PID 1 may never reap it)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_stop_leaves_no_process(mlflow_server):
    """Last in the module: it stops the module's server."""
    pids = [mlflow_server.mlflow_pid, mlflow_server.postgres_pid]
    for pid in list(pids):
        pids += [child.pid for child in psutil.Process(pid).children(recursive=True)]
    assert len(pids) > 2  # uvicorn under mlflow, PostgreSQL's workers under postgres

    stopped = stop(mlflow_server.files.root)

    assert (stopped.mlflow_pid, stopped.postgres_pid) == (
        mlflow_server.mlflow_pid,
        mlflow_server.postgres_pid,
    )
    assert [pid for pid in pids if not _gone(pid)] == []
    after = stop(mlflow_server.files.root)
    assert (after.mlflow_pid, after.postgres_pid) == (None, None)
