"""MLflow tracking: where runs go, what they are tagged with, and the run a stage leaves for
the next (a training run's own life is in `training_runs.py`).

Default store: `sqlite:///<repo>/mlflow.db` with artifacts in `<repo>/mlartifacts` (absolute
paths, so Ray workers and Tune trials, which run in other directories, log to the same place).
`MLFLOW_TRACKING_URI` points everything at a tracking server instead, with no code change.
"""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import subprocess
import urllib.error
import urllib.request
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import yaml

from lamina.errors import TrackingError
from lamina.redaction import redacted

DEFAULT_DB_FILE = "mlflow.db"
DEFAULT_ARTIFACTS_DIR = "mlartifacts"


def tracking_uri(root: Path) -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        return f"sqlite:///{(root / DEFAULT_DB_FILE).resolve()}"
    _check_server_url(uri)
    return uri


def _check_server_url(uri: str) -> None:
    """Refuse an HTTP tracking URI that parses other than the user meant: a `#` left unencoded
    in the password ends the host there, and MLflow's URL parsing fails with a traceback."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        parts = urlsplit(uri)
        readable = not parts.fragment and parts.port != 0
    except ValueError:  # what follows the host's `:` is not a port
        readable = False
    if not readable:
        raise TrackingError(
            f"MLFLOW_TRACKING_URI={redacted(uri)} is not a server URL MLflow can read; give "
            "http://HOST:PORT, with any `#`, `@`, `%` or `/` in the user name or password "
            "percent-encoded (%23, %40, %25, %2F)"
        )


def existing_store(uri: str) -> str:
    """The URI of a store to read (a SQLite path made absolute), for the commands that only
    read one: MLflow would create its tables in any SQLite file, existing or not, and answer a
    corrupt one with a traceback. A tracking server must answer within seconds."""
    if not uri.startswith("sqlite:///"):
        check_tracking_server(uri)
        return uri
    database = Path(uri.removeprefix("sqlite:///")).resolve()
    if not database.is_file():
        raise TrackingError(
            f"no MLflow store at {database}: run `make run` (or `dvc repro`) to train and "
            "register the models, or point MLFLOW_TRACKING_URI at the store that has them"
        )
    _check_mlflow_database(database)
    return f"sqlite:///{database}"


# Tables every MLflow SQLite store has, whatever its schema version.
MLFLOW_TABLES = {"alembic_version", "experiments", "runs", "registered_models"}


def _check_mlflow_database(database: Path) -> None:
    try:
        # Read-only: a check must not create, lock for writing or migrate anything.
        with closing(sqlite3.connect(f"{database.as_uri()}?mode=ro", uri=True)) as connection:
            integrity = connection.execute("PRAGMA quick_check(1)").fetchone()[0]
            tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
    except sqlite3.DatabaseError as exc:
        integrity, tables = str(exc), set()
    if integrity != "ok":
        raise TrackingError(
            f"{database}: not a readable SQLite database ({integrity}); restore it from a "
            "backup, or point MLFLOW_TRACKING_URI at a store that is"
        )
    if not tables >= MLFLOW_TABLES:
        raise TrackingError(
            f"{database}: a SQLite database but not an MLflow store (no MLflow tables), left "
            "as it is; point MLFLOW_TRACKING_URI at an MLflow store"
        )


def check_tracking_server(uri: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds, naming the URI, when an HTTP tracking server does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    # urllib takes no credentials in the URL (MLflow's client does): send them as a header.
    parts = urlsplit(uri.rstrip("/"))
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    request = urllib.request.Request(urlunsplit(parts._replace(netloc=netloc)) + "/health")
    if parts.username is not None:
        credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        token = base64.b64encode(credentials.encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            if response.status == 200:
                return
            problem = f"HTTP {response.status}"
    except (urllib.error.URLError, OSError) as exc:
        problem = str(getattr(exc, "reason", exc))
    raise TrackingError(
        f"MLflow tracking server {redacted(uri)} is not reachable ({problem}); start it or "
        "point MLFLOW_TRACKING_URI at a running server (unset it to use the local SQLite store)"
    )


def get_or_create_experiment(client, name: str, root: Path) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    artifact_location = None
    if client.tracking_uri.startswith("sqlite:"):
        artifact_location = (root / DEFAULT_ARTIFACTS_DIR / name).resolve().as_uri()
    return client.create_experiment(name, artifact_location=artifact_location)


def git_commit(root: Path) -> str:
    """HEAD's hash, with `-dirty` when tracked files differ from it; `unknown` outside git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


def dvc_data_hash(root: Path) -> str:
    """The hash `data.dvc` records for `data/`: which raw data a run was trained on."""
    try:
        outs = yaml.safe_load((root / "data.dvc").read_text())["outs"]
        return str(outs[0]["md5"])
    except (OSError, KeyError, IndexError, TypeError, yaml.YAMLError):
        return "unknown"


@dataclass(frozen=True)
class RunInfo:
    """What the train stage leaves for evaluate and register: the run that holds it all."""

    run_id: str
    experiment_id: str
    best_epoch: int
    best_value: float
    monitor: str

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.__dict__, indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> RunInfo:
        if not path.is_file():
            raise TrackingError(f"{path}: no training run recorded; run the `train` stage first")
        return cls(**json.loads(path.read_text()))


def log_evaluation(run_id: str, metrics: dict[str, float], artifacts: list[Path]) -> None:
    """Test metrics and evaluation files onto the training run (files under `evaluation/`)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri(Path.cwd()))
    for key, value in metrics.items():
        client.log_metric(run_id, key, value)
    for path in artifacts:
        if path.is_dir():
            client.log_artifacts(run_id, str(path), "evaluation/" + path.name)
        else:
            client.log_artifact(run_id, str(path), "evaluation")
