"""Bad input, command by command: one readable line, exit code 2, and nothing written.

`COMMAND_CASES` is the second half of docs/reliability.md's bad-input table (the first is
`CASES` in test_bad_input.py, for the stages): each case prepares a workspace (`breaks`: a
file to read, a folder in the way, a broken store), runs `lamina ARGS...` in it and expects,
on stderr, exactly one line without a traceback that starts `lamina: error: ` (the CLI's
program name) and holds the given fragments, exit code 2, and the workspace exactly as
`breaks` left it: no file written, changed or deleted, not even a temporary one.

Adding a case: a row `"command: what breaks": CommandCase(args, says, breaks, env)`. `args`
and `env` values may hold `{workspace}`, the workspace's absolute path. Without
`needs_model`, the command sees no tracking store (`MLFLOW_TRACKING_URI` unset, no
`mlflow.db`), so a case that must fail before any model is loaded shows it does. With
`needs_model=True` it reads the models the session's `dvc repro` registered (slow).
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import CONF_DIR, run
from tests.pipeline.test_model_trust import generator_with_a_changed_file, generator_without_digests

ERROR_PREFIX = "lamina: error: "
SECRET = "s3cret"  # a password a case may put in a URI: it must not be printed


def _nothing(workspace: Path) -> None:
    pass


@dataclass(frozen=True)
class CommandCase:
    args: tuple[str, ...]  # after `lamina`
    says: tuple[str, ...]  # fragments of the one error line
    breaks: Callable[[Path], None] = _nothing  # puts the bad input into the workspace
    env: dict[str, str] = field(default_factory=dict)
    needs_model: bool = False  # reads the session's registered models: slow


def _file(relative: str, body: bytes = b"keep me\n") -> Callable[[Path], None]:
    """A file of the user's at `relative`, which the command must leave as it is."""

    def breaks(workspace: Path) -> None:
        path = workspace / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)

    return breaks


def _all(*steps: Callable[[Path], None]) -> Callable[[Path], None]:
    def breaks(workspace: Path) -> None:
        for step in steps:
            step(workspace)

    return breaks


TEXTS = _file("texts.csv", b"text\nfine\n")
PREDICT_TEXTS = ("predict", "--model", "lstm-sentiment", "--input", "texts.csv", "--output")


def _int_texts(workspace: Path) -> None:
    pd.DataFrame({"text": [5, 7, 9]}).to_parquet(workspace / "texts.parquet")


def _series_in_two_zones(workspace: Path) -> None:
    dates = pd.date_range("1990-01-07", periods=120, freq="W").strftime("%Y-%m-%d").tolist()
    dates[60] += "T00:00:00+02:00"
    values = 350 + np.sin(np.arange(120) / 8.0)
    pd.DataFrame({"date": dates, "co2": values}).to_csv(workspace / "co2.csv", index=False)


def _other_sqlite(workspace: Path) -> None:
    """A SQLite database of the user's that is no MLflow store."""
    import sqlite3
    from contextlib import closing

    with closing(sqlite3.connect(workspace / "other.db")) as connection:
        connection.execute("CREATE TABLE notes (text TEXT)")
        connection.commit()


def _empty_mlflow_store(workspace: Path) -> None:
    from mlflow.tracking import MlflowClient

    MlflowClient(f"sqlite:///{workspace / 'mlflow.db'}").search_experiments()  # makes the tables


COMMAND_CASES: dict[str, CommandCase] = {
    "models: no store yet": CommandCase(("models",), ("mlflow.db", "no MLflow store")),
    "predict: no store yet": CommandCase(
        ("predict", "--model", "cnn-mnist", "--input", "texts.csv", "--output", "out.csv"),
        ("mlflow.db", "no MLflow store", "MLFLOW_TRACKING_URI"),
        _file("texts.csv", b"text\nfine\n"),
    ),
    "generate: output format": CommandCase(
        ("generate", "--output", "grid.jpg"), ("--output grid.jpg", ".png", ".npy")
    ),
    "predict: Parquet text column of ints": CommandCase(
        ("predict", "--model", "lstm-sentiment", "--input", "texts.parquet", "--output", "o.csv"),
        ("texts.parquet", "column 'text' are not text", "5", "store the texts as strings"),
        _int_texts,
        needs_model=True,
    ),
    "predict: series in mixed time zones": CommandCase(
        ("predict", "--model", "gru-co2", "--input", "co2.csv", "--output", "o.csv"),
        ("co2.csv", "mixes time zones", "at line 62", "UTC"),
        _series_in_two_zones,
        needs_model=True,
    ),
    "models: SQLite file that is no MLflow store": CommandCase(
        ("models",),
        ("other.db", "not an MLflow store", "MLFLOW_TRACKING_URI"),
        _other_sqlite,
        {"MLFLOW_TRACKING_URI": "sqlite:///{workspace}/other.db"},
    ),
    "models: corrupt mlflow.db": CommandCase(
        ("models",),
        ("mlflow.db", "not a readable SQLite database", "backup"),
        _file("mlflow.db", b"SQLite format 3\0" + bytes(range(256)) * 8),
    ),
    "models: --name with a quote": CommandCase(
        ("models", "--name", "a'b"), ("no registered model named 'a'b'",), _empty_mlflow_store
    ),
    "models: # unencoded in the tracking URI's password": CommandCase(
        ("models",),
        ("MLFLOW_TRACKING_URI=http://lamina:***@127.0.0.1:9", "percent-encoded", "%23"),
        env={"MLFLOW_TRACKING_URI": f"http://lamina:{SECRET}#x@127.0.0.1:9"},
    ),
    "report: # unencoded in the tracking URI's password": CommandCase(
        ("report",),
        ("MLFLOW_TRACKING_URI=http://lamina:***@127.0.0.1:9", "percent-encoded", "%23"),
        env={"MLFLOW_TRACKING_URI": f"http://lamina:{SECRET}#x@127.0.0.1:9"},
    ),
    # Outputs: never a folder (`name/keep.txt` is a folder holding a file), the input, or an
    # existing file without --overwrite; refused before any store or model is looked at.
    "generate: output is a folder": CommandCase(
        ("generate", "--output", "samples.npy"),
        ("samples.npy: is a folder", "name a file"),
        _file("samples.npy/keep.txt"),
    ),
    "generate: output exists": CommandCase(
        ("generate", "--output", "grid.png"), ("grid.png: exists", "--overwrite"), _file("grid.png")
    ),
    "generate: negative seed": CommandCase(
        ("generate", "--seed", "-1", "--output", "grid.png"), ("--seed -1", "0 or more")
    ),
    "generate: a million samples": CommandCase(
        ("generate", "-n", "1000000", "--output", "samples.npy"), ("-n 1000000", "1 to 1024")
    ),
    "predict: output is a folder": CommandCase(
        (*PREDICT_TEXTS, "out.csv"),
        ("out.csv: is a folder", "name a file"),
        _all(TEXTS, _file("out.csv/keep.txt")),
    ),
    "predict: output is the input": CommandCase(
        (*PREDICT_TEXTS, "texts.csv"), ("texts.csv: is the input", "another file"), TEXTS
    ),
    "predict: output exists": CommandCase(
        (*PREDICT_TEXTS, "out.csv"),
        ("out.csv: exists", "--overwrite"),
        _all(TEXTS, _file("out.csv")),
    ),
    # A store beside the workspace (`breaks` registers a tiny generator there, then spoils it).
    "generate: a model file changed in the artifact store": CommandCase(
        ("generate", "--model", "gan-tiny/1", "--output", "grid.png"),
        ("models:/gan-tiny/1: its file data/model.pt2 was changed", "lamina.model_files_sha256"),
        lambda workspace: generator_with_a_changed_file(workspace.parent),
        {"MLFLOW_TRACKING_URI": "sqlite:///{workspace}/../mlflow.db"},
    ),
    "generate: a model without recorded SHA-256": CommandCase(
        ("generate", "--model", "gan-tiny/1", "--output", "grid.png"),
        ("models:/gan-tiny/1: the registry holds no SHA-256 of its files", "dvc repro"),
        lambda workspace: generator_without_digests(workspace.parent),
        {"MLFLOW_TRACKING_URI": "sqlite:///{workspace}/../mlflow.db"},
    ),
}


def _snapshot(workspace: Path) -> dict[str, str]:
    """Every path under the workspace -> its content's digest ('dir' for a folder)."""
    return {
        path.relative_to(workspace).as_posix(): (
            "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
        )
        for path in sorted(workspace.rglob("*"))
    }


def _params() -> list:
    slow = pytest.mark.slow
    return [
        pytest.param(case_id, marks=[slow] if case.needs_model else [])
        for case_id, case in COMMAND_CASES.items()
    ]


@pytest.mark.parametrize("case_id", _params())
def test_bad_command_is_one_line_and_writes_nothing(request, tmp_path, case_id):
    case = COMMAND_CASES[case_id]
    workspace = tmp_path / "workspace"
    shutil.copytree(CONF_DIR, workspace / "conf")
    case.breaks(workspace)
    env = {"MLFLOW_TRACKING_URI": ""}  # the workspace's own store, which does not exist
    if case.needs_model:
        request.getfixturevalue("first_repro")
        env = dict(request.getfixturevalue("tracking"))
    env.update({key: value.format(workspace=workspace) for key, value in case.env.items()})
    args = [arg.format(workspace=workspace) for arg in case.args]
    before = _snapshot(workspace)

    result = run(["lamina", *args], workspace, **env)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert lines[0].startswith(ERROR_PREFIX), lines[0]
    for fragment in case.says:
        assert fragment in lines[0], (fragment, lines[0])
    assert SECRET not in result.stderr + result.stdout
    assert _snapshot(workspace) == before  # nothing written, changed or deleted
