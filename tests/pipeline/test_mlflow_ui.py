"""The MLflow UI as a user browses it, over the store the shared pipeline run filled.

A real `mlflow server` on 127.0.0.1 and Debian's Chromium, headless, driven by Playwright (no
browser download: it launches /usr/bin/chromium). Each test asserts what the page renders, not
what the REST API returns, and saves a screenshot (paths printed; see them with `pytest -s`).
The UI is a React app with hash routes (`/#/experiments`, `/#/models`); locators wait for
text to appear, with a generous timeout, because the first render is slow on 2 cores.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.conftest import venv_env
from tests.pipeline.conftest import EXPERIMENTS

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")  # Debian's `chromium`, installed by `make system-packages`
# As root Chromium needs --no-sandbox. The machine's network is closed: without the
# background-networking flags Chromium keeps trying (and failing) to reach Google's hosts.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
UI_TIMEOUT_MS = 60_000
SERVER_START_S = 120


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _answers_health(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _stop_group(process: subprocess.Popen) -> None:
    """The server and the uvicorn worker it started: its whole process group, by its PID."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def mlflow_ui(first_repro, tracking, tmp_path_factory) -> Iterator[str]:
    """`mlflow server` over the pipeline's SQLite store; yields its base URL.

    Artifacts stay the local paths the store records: enough to browse runs and models.
    """
    folder = tmp_path_factory.mktemp("mlflow-ui-server")
    url = f"http://127.0.0.1:{_free_port()}"
    command = [sys.executable, "-m", "mlflow", "server"]
    command += ["--backend-store-uri", tracking["MLFLOW_TRACKING_URI"]]
    command += ["--host", "127.0.0.1", "--port", url.rsplit(":", 1)[1], "--workers", "1"]
    log_path = folder / "mlflow-server.log"
    with log_path.open("w") as log:
        # Without job execution the server starts 2 processes instead of 15.
        process = subprocess.Popen(
            command,
            cwd=folder,
            env=venv_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + SERVER_START_S
        while not _answers_health(url):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    f"mlflow server did not answer {url}/health:\n{log_path.read_text()[-3000:]}"
                )
            time.sleep(0.5)
        yield url
    finally:
        _stop_group(process)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing; run `make system-packages` (Debian's chromium)")
    # Playwright gives the launch a fresh, empty --user-data-dir and removes it on close; each
    # test then opens its own context (fresh cookies and local storage).
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("mlflow-ui-screenshots")


@pytest.fixture
def page(browser, mlflow_ui) -> Iterator[Page]:
    context = browser.new_context(base_url=mlflow_ui, viewport={"width": 1800, "height": 1000})
    context.set_default_timeout(UI_TIMEOUT_MS)
    expect.set_options(timeout=UI_TIMEOUT_MS)  # `expect` has its own default: 5 s
    page = context.new_page()
    yield page
    context.close()


def _screenshot(page: Page, folder: Path, name: str) -> Path:
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


def _open_experiment_runs(page: Page, name: str) -> None:
    """As a user does: switch the sidebar from GenAI (MLflow 3's default, which opens an
    experiment on a traces overview) to "Model training", then click the experiment's name."""
    page.goto("/#/experiments")
    page.get_by_role("button", name="Model training", exact=True).click()
    page.get_by_role("link", name=name, exact=True).click()
    expect(page).to_have_url(re.compile(r"#/experiments/\d+/runs"))


def test_experiments_page_lists_every_experiment(page, screenshots):
    page.goto("/#/experiments")
    for name in EXPERIMENTS:
        expect(page.get_by_role("link", name=name, exact=True)).to_be_visible()
    _screenshot(page, screenshots, "experiments")


def test_training_run_shows_its_metrics_with_values(page, screenshots, tracking):
    from mlflow.tracking import MlflowClient

    # What the pages should show, read from the store; the assertions read the rendered pages.
    # The champion's run: test_end_to_end.py (before this module) trains more `cnn-mnist-train`
    # runs, and only a run that was evaluated and registered surely has its test metrics.
    client = MlflowClient(tracking["MLFLOW_TRACKING_URI"])
    run_id = client.get_model_version_by_alias("cnn-mnist", "champion").run_id
    logged = client.get_run(run_id).data.metrics

    _open_experiment_runs(page, "cnn-mnist")
    train_run = page.get_by_role("link", name="cnn-mnist-train", exact=True)
    train_run = train_run.and_(page.locator(f'[href$="/runs/{run_id}"]'))
    expect(train_run).to_be_visible()
    _screenshot(page, screenshots, "cnn-mnist-runs")

    train_run.click()
    expect(page).to_have_url(re.compile(f"/runs/{run_id}"))
    expect(page.get_by_role("heading", name="cnn-mnist-train", exact=True)).to_be_visible()
    # The overview's Metrics table (dozens of rows in a scrolling box): a user types the key in
    # its search field and reads the value beside it, the latest one logged.
    # (The Parameters table below it holds `test/accuracy` too, as the registry's metric.)
    search = page.get_by_role("textbox", name="Search metrics")
    metrics = page.get_by_role("table").filter(
        has=page.get_by_role("columnheader", name=re.compile(r"^Metric\b"))
    )
    for key in ("test/accuracy", "val/accuracy"):
        search.fill(key)
        row = metrics.get_by_role("row").filter(has=page.get_by_role("cell", name=key, exact=True))
        value = row.get_by_role("cell").nth(1)
        expect(value).to_have_text(re.compile(r"^\d"))
        assert float(value.inner_text()) == pytest.approx(logged[key], abs=1e-3), key
    search.clear()
    expect(metrics.get_by_role("cell", name="test/accuracy", exact=True)).to_be_visible()
    _screenshot(page, screenshots, "cnn-mnist-train-run")


def test_models_page_shows_every_model_and_the_champion(page, screenshots):
    page.goto("/#/models")
    # A fresh browser profile is shown the new registry UI's promotion once; a user dismisses it.
    page.get_by_role("button", name="Try it now", exact=True).click()
    expect(page.get_by_role("dialog", name=re.compile("new Model Registry UI"))).to_be_hidden()
    for name in EXPERIMENTS:
        expect(page.get_by_role("link", name=name, exact=True)).to_be_visible()
    # Not the aliases here: the list shows one alias per model ("@ challenger : Version 2 +1").
    _screenshot(page, screenshots, "models")

    page.get_by_role("link", name="cnn-mnist", exact=True).click()
    expect(page).to_have_url(re.compile(r"#/models/cnn-mnist$"))
    # The versions table: every alias of every version, each an "@ <alias>" tag.
    champion = page.get_by_role("status", name="champion", exact=True)
    champion_version = page.get_by_role("row").filter(has=champion)
    expect(champion_version).to_have_count(1)
    expect(champion_version).to_contain_text(re.compile(r"Version \d+"))
    _screenshot(page, screenshots, "cnn-mnist-model")
