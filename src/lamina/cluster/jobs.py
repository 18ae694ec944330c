"""Ray Jobs: run a command (`dvc repro`, one stage) on a Ray cluster and follow it from here.

A job gets the repository as its working directory (Ray uploads it with `.git`, which DVC
needs, and without what `.gitignore` names: data/, outputs/, .venv/), imports Lamina from
that checkout (and each stage ships it to the workers: `ray_runtime.init_ray`), so the cluster
runs this checkout's code, not whatever Lamina it has installed; and it gets this shell's
tracking settings, so its runs land in the same MLflow server.
Ray's token auth works as Ray documents it: `RAY_AUTH_MODE=token` and the cluster's token
(`~/.ray/auth_token`, or `RAY_AUTH_TOKEN` / `RAY_AUTH_TOKEN_PATH`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import sys
import time
from pathlib import Path

from lamina.errors import LaminaError
from lamina.redaction import redacted

logger = logging.getLogger(__name__)

# What a job must see of this shell's tracking settings (MLflow reads these itself).
FORWARDED_ENV_PREFIXES = ("MLFLOW_", "AWS_", "GOOGLE_APPLICATION_CREDENTIALS", "AZURE_")
FINAL_STATES = {"SUCCEEDED", "FAILED", "STOPPED"}
# Not needed by a job and possibly large; `.gitignore` already keeps out data/ and outputs/.
EXTRA_EXCLUDES = [".dvc/cache", ".dvc/tmp", "bench/results"]


class JobError(LaminaError):
    """The cluster cannot be reached, or refused the job."""


def dashboard_address(address: str | None) -> str:
    """`--address`, else RAY_ADDRESS; the Jobs API is served by the head's dashboard."""
    address = address or os.environ.get("RAY_ADDRESS")
    if not address:
        raise JobError(
            "no Ray cluster named: pass --address http://HEAD:8265 (the head's dashboard) "
            "or set RAY_ADDRESS"
        )
    if "://" not in address:
        raise JobError(
            f"{address}: give the dashboard's URL, e.g. http://{address.split(':')[0]}:8265 "
            "(the Jobs API is served there, not on the GCS port)"
        )
    return address


def client(address: str | None):
    from ray.job_submission import JobSubmissionClient

    url = dashboard_address(address)
    try:
        return JobSubmissionClient(url)
    except Exception as exc:  # noqa: BLE001 (connection refused, auth, bad URL: all one story)
        raise JobError(
            f"cannot reach the Ray Jobs API at {redacted(url)} ({_first_line(exc)}); check the "
            "cluster is up and the address is the head's dashboard (port 8265 by default)"
        ) from None


def job_runtime_env(root: Path) -> dict:
    root = root.resolve()
    env_vars = {
        key: value for key, value in os.environ.items() if key.startswith(FORWARDED_ENV_PREFIXES)
    }
    return {"working_dir": str(root), "excludes": EXTRA_EXCLUDES, "env_vars": env_vars}


_PREPEND_SRC = 'export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"; exec "$@"'
_ENTRYPOINT_WRAPPER = ["sh", "-c", _PREPEND_SRC, "lamina-job"]


def job_entrypoint(command: list[str]) -> str:
    """`command`, importing Lamina from the uploaded checkout's `src/` before any installed
    copy (the job's working directory is known only once the job runs, hence `$PWD`)."""
    return shlex.join([*_ENTRYPOINT_WRAPPER, *command])


def user_command(entrypoint: str) -> str:
    """The command as the user gave it, without the wrapper `job_entrypoint` adds."""
    parts = shlex.split(entrypoint)
    wrapped = parts[: len(_ENTRYPOINT_WRAPPER)] == _ENTRYPOINT_WRAPPER
    return shlex.join(parts[len(_ENTRYPOINT_WRAPPER) :]) if wrapped else entrypoint


def submit(address: str | None, command: list[str], root: Path, wait: bool = True) -> int:
    """Submit `command`; with `wait`, stream its logs and return the exit code to use."""
    if not command:
        raise JobError("nothing to run: give the command after `--`, e.g. -- dvc repro")
    jobs = client(address)
    runtime_env = job_runtime_env(root)
    if "MLFLOW_TRACKING_URI" not in runtime_env["env_vars"]:
        logger.warning(
            "MLFLOW_TRACKING_URI is not set: the job will log to a SQLite file inside its "
            "working directory on the cluster, which Ray deletes later; point it at a tracking "
            "server (`lamina mlflow-server start` starts one)"
        )
    # Ray leaves `.git` out of a working dir by default, but DVC runs only inside a git
    # repository (`dvc repro` in a job needs it); keep Ray's other default excludes.
    os.environ.setdefault("RAY_OVERRIDE_RUNTIME_ENV_DEFAULT_EXCLUDES", ".venv,venv,__pycache__")
    # Ray logs a line per .gitignore it honours while packaging, and one when the log stream
    # closes; keep its "Uploading package" line, which says where the wait goes.
    for name in ("ray._private.runtime_env.packaging", "ray.dashboard.modules.job.sdk"):
        logging.getLogger(name).setLevel(logging.WARNING)
    entrypoint = job_entrypoint(command)
    started = time.monotonic()
    try:
        job_id = jobs.submit_job(entrypoint=entrypoint, runtime_env=runtime_env)
    except Exception as exc:  # noqa: BLE001 (the SDK raises RuntimeError, HTTP and OS errors)
        raise JobError(f"the cluster refused the job ({_first_line(exc)})") from None
    print(f"submitted {job_id}: {shlex.join(command)}", file=sys.stderr, flush=True)
    if not wait:
        print(job_id)
        return 0
    try:
        asyncio.run(_stream_logs(jobs, job_id))
        status = _wait_for_final_status(jobs, job_id)
    except KeyboardInterrupt:
        print(
            f"\nstopped following; the job goes on: `lamina logs {job_id}`, `lamina stop {job_id}`",
            file=sys.stderr,
        )
        return 130
    info = jobs.get_job_info(job_id)
    seconds = time.monotonic() - started
    if status == "SUCCEEDED":
        print(f"job {job_id} SUCCEEDED in {seconds:.0f} s", file=sys.stderr)
        return 0
    code = info.driver_exit_code
    exit_text = f" (exit code {code})" if code is not None else ""
    print(f"job {job_id} {status}{exit_text}: {_failure_line(jobs, job_id, info)}", file=sys.stderr)
    return code or 1


async def _stream_logs(jobs, job_id: str) -> None:
    async for lines in jobs.tail_job_logs(job_id):
        print(lines, end="", flush=True)


def _wait_for_final_status(jobs, job_id: str, timeout_s: float = 60.0) -> str:
    """The log stream ends when the job does; its final status follows within moments."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = str(jobs.get_job_status(job_id).value)
        if status in FINAL_STATES or time.monotonic() > deadline:
            return status
        time.sleep(0.2)


def _failure_line(jobs, job_id: str, info) -> str:
    """The job's own last log line (a traceback ends with its error), else Ray's message."""
    lines = [line for line in jobs.get_job_logs(job_id).splitlines() if line.strip()]
    if lines:
        return lines[-1].strip()
    message = (info.message or "").strip()
    return message.splitlines()[0] if message else "no message from Ray"


def list_jobs(address: str | None) -> list[dict[str, str]]:
    rows = []
    for info in sorted(client(address).list_jobs(), key=lambda job: job.start_time or 0):
        started = (
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.start_time / 1000))
            if info.start_time
            else "-"
        )
        ended = info.end_time or (time.time() * 1000 if info.start_time else None)
        duration = f"{(ended - info.start_time) / 1000:.0f} s" if info.start_time else "-"
        rows.append(
            {
                "id": info.submission_id or info.job_id or "-",
                "status": str(info.status.value),
                "started": started,
                "duration": duration,
                "command": user_command(info.entrypoint),
            }
        )
    return rows


def job_logs(address: str | None, job_id: str, follow: bool) -> None:
    jobs = client(address)
    _check_job_exists(jobs, job_id)
    if follow:
        asyncio.run(_stream_logs(jobs, job_id))
    else:
        print(jobs.get_job_logs(job_id), end="")


def stop_job(address: str | None, job_id: str) -> str:
    jobs = client(address)
    _check_job_exists(jobs, job_id)
    jobs.stop_job(job_id)
    return _wait_for_final_status(jobs, job_id, timeout_s=30.0)


def _check_job_exists(jobs, job_id: str) -> None:
    try:
        jobs.get_job_info(job_id)
    except RuntimeError:
        raise JobError(f"no job {job_id} on this cluster (`lamina jobs` lists them)") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
