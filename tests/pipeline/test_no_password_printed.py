"""No password printed or logged: stages, `report`, `models` and `predict` against a tracking
server whose URI carries a password with `#`, `@` and `%` in it (percent-encoded, as a URI
must), and nothing of it in their output, the files they write, or the runs' params and tags.

A copy of the shared pipeline run's workspace retrains, evaluates and registers gru-co2 (the
quickest experiment) into a real MLflow server, whose client prints "View run ... at: URL".
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.conftest import run
from tests.servers.conftest import mlflow_server  # noqa: F401 (a fixture this module uses)

pytestmark = pytest.mark.slow

PASSWORD = "pw#of@lamina%test"
EXPERIMENT = "gru-co2"


def _secrets() -> list[str]:
    # The password as the URI spells it, and as an HTTP client decodes it.
    return [PASSWORD, quote(PASSWORD, safe="")]


def _leaks(text: str) -> list[str]:
    return [secret for secret in _secrets() if secret in text]


def _files(folder: Path) -> dict[Path, int]:
    """Every plain file under `folder`, with the time it was last written."""
    return {
        path: path.stat().st_mtime_ns
        for path in folder.rglob("*")
        if path.is_file() and not path.is_symlink()
    }


def test_no_password_in_output_files_params_or_tags(
    clone,
    first_repro,
    mlflow_server,  # noqa: F811 (the fixture imported above)
    tmp_path,
):
    from mlflow.tracking import MlflowClient

    workspace = tmp_path / "lamina"
    # The shared workspace stays as the other modules expect it; DVC's cache is not needed.
    shutil.copytree(clone, workspace, ignore=shutil.ignore_patterns("cache"))
    uri = mlflow_server.uri.replace("http://", f"http://lamina:{quote(PASSWORD, safe='')}@")
    commands = [
        [sys.executable, f"pipelines/{stage}.py", EXPERIMENT]
        for stage in ("train", "evaluate", "register")
    ]
    commands += [
        ["lamina", "report"],
        ["lamina", "models"],
        ["lamina", "predict", "--model", EXPERIMENT]
        + ["--input", "data/co2/co2.csv", "--output", str(tmp_path / "forecast.csv")],
    ]
    before = _files(workspace)
    said = []
    for command in commands:
        result = run(command, workspace, MLFLOW_TRACKING_URI=uri)
        assert result.returncode == 0, (command, result.stderr[-3000:])
        said.append(result.stdout + result.stderr)
    output = "\n".join(said)
    assert "View run" in output and "http://lamina:***@127.0.0.1" in output  # MLflow's line
    assert "MLflow store: http://lamina:***@" in output  # `lamina report`
    assert _leaks(output) == []

    # What the commands wrote or rewrote (this test's own source, in the copy, holds it).
    after = _files(workspace)
    written = [path for path, stamp in after.items() if before.get(path) != stamp]
    written.append(tmp_path / "forecast.csv")
    assert len(written) > 3, written
    leaking = [path for path in written if _leaks(path.read_bytes().decode(errors="replace"))]
    assert leaking == []

    client = MlflowClient(mlflow_server.uri)
    recorded = []
    for experiment in client.search_experiments():
        for tracked in client.search_runs([experiment.experiment_id]):
            recorded += [*tracked.data.params.values(), *tracked.data.tags.values()]
    for version in client.search_model_versions(f"name = '{EXPERIMENT}'"):
        recorded += [version.description or "", *version.tags.values()]
    assert recorded and _leaks("\n".join(recorded)) == []
