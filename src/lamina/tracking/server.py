"""A local MLflow tracking server backed by PostgreSQL: start it, stop it, say what runs.

`start` runs Debian's PostgreSQL (a cluster of the project's own, not the system's) and
`mlflow server --serve-artifacts` in front of it, both on 127.0.0.1 (MLflow elsewhere only when
`host` says so); the pipeline then logs and registers through
`MLFLOW_TRACKING_URI=http://127.0.0.1:PORT` with no code change. Everything lives under
`<root>/.lamina/mlflow-server/`:

    postgres/     PostgreSQL's data folder (its own `postmaster.pid` names its PID and port)
    socket/       PostgreSQL's unix socket (the system's /var/run/postgresql may not exist)
    artifacts/    what clients upload through the server (`mlflow-artifacts:` URIs)
    pgpass        the generated database password, mode 0600, in libpq's `.pgpass` format
    server.json   the MLflow server's PID and addresses
    postgres.log, mlflow.log

PostgreSQL refuses to run as root: as root, its folders belong to the `postgres` system user
and its programs run through `runuser -u postgres --`.
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path

from lamina.errors import TrackingError

logger = logging.getLogger(__name__)

STATE_DIR = Path(".lamina") / "mlflow-server"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5001
DEFAULT_PG_PORT = 5433
DATABASE = "mlflow"
DB_USER = "lamina"
SERVER_USER = "postgres"  # who runs PostgreSQL when Lamina runs as root
# `mlflow server` is slow to answer /health on a busy machine, slower on a fresh database.
HEALTH_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 15.0
UNIX_SOCKET_PATH_MAX = 107  # sun_path is 108 bytes on Linux, one of them the NUL


@dataclass(frozen=True)
class ServerFiles:
    """Where the pair keeps its state for one project root."""

    state: Path

    @classmethod
    def for_root(cls, root: Path) -> ServerFiles:
        return cls(root.resolve() / STATE_DIR)

    @property
    def root(self) -> Path:
        return self.state.parents[len(STATE_DIR.parts) - 1]

    @property
    def data(self) -> Path:
        return self.state / "postgres"

    @property
    def socket(self) -> Path:
        return self.state / "socket"

    @property
    def artifacts(self) -> Path:
        return self.state / "artifacts"

    @property
    def pgpass(self) -> Path:
        return self.state / "pgpass"

    @property
    def server_json(self) -> Path:
        return self.state / "server.json"

    @property
    def postgres_log(self) -> Path:
        return self.state / "postgres.log"

    @property
    def mlflow_log(self) -> Path:
        return self.state / "mlflow.log"


@dataclass(frozen=True)
class ServerStatus:
    """What runs now. A PID is None when that process does not run."""

    files: ServerFiles
    mlflow_pid: int | None
    host: str | None
    port: int | None
    postgres_pid: int | None
    pg_port: int | None
    healthy: bool

    @property
    def running(self) -> bool:
        return self.mlflow_pid is not None and self.postgres_pid is not None

    @property
    def uri(self) -> str:
        """The tracking URI clients use (a wildcard bind is reached through 127.0.0.1)."""
        host = DEFAULT_HOST if self.host in (None, "0.0.0.0") else self.host
        return f"http://{host}:{self.port}"

    @property
    def backend_uri(self) -> str:
        # No password in it: libpq reads it from the `pgpass` file (PGPASSFILE).
        return f"postgresql+psycopg2://{DB_USER}@127.0.0.1:{self.pg_port}/{DATABASE}"


def status(root: Path) -> ServerStatus:
    files = ServerFiles.for_root(root)
    postgres_pid, pg_port = _postgres_process(files)
    server = _read_server_json(files)
    mlflow_pid = server.get("pid")
    if mlflow_pid is not None and not _is_mlflow(mlflow_pid):
        mlflow_pid = None
    result = ServerStatus(
        files=files,
        mlflow_pid=mlflow_pid,
        host=server.get("host"),
        port=server.get("port"),
        postgres_pid=postgres_pid,
        pg_port=pg_port,
        healthy=False,
    )
    if mlflow_pid is None:
        return result
    return replace(result, healthy=_answers_health(result.uri, 2.0))


def start(
    root: Path,
    port: int = DEFAULT_PORT,
    pg_port: int = DEFAULT_PG_PORT,
    host: str = DEFAULT_HOST,
    timeout_s: float = HEALTH_TIMEOUT_S,
) -> ServerStatus:
    """Start PostgreSQL and `mlflow server` unless they run already; return what runs."""
    current = status(root)
    if current.running:
        logger.info("MLflow server already running at %s (pid %d)", current.uri, current.mlflow_pid)
        return current if current.healthy else _wait_for_health(current, timeout_s)
    _require_free_port(host, port, "--port")  # before PostgreSQL starts, not after
    files = current.files
    files.state.mkdir(parents=True, exist_ok=True)
    if current.postgres_pid is None:
        _start_postgres(files, pg_port)
        current = status(root)
    _ensure_database(files, current.pg_port)
    return _start_mlflow(files, current, host, port, timeout_s)


def stop(root: Path) -> ServerStatus:
    """Stop the MLflow server (its whole process group), then PostgreSQL; return what ran."""
    before = status(root)
    files = before.files
    if before.mlflow_pid is not None:
        _stop_process_group(before.mlflow_pid)
    files.server_json.unlink(missing_ok=True)
    if before.postgres_pid is not None:
        pg_ctl = _postgres_bin() / "pg_ctl"
        _run_server_tool([str(pg_ctl), "stop", "-D", str(files.data), "-m", "fast", "-w"], files)
        # pg_ctl returns once postmaster.pid is gone, which the postmaster removes just
        # before it exits: wait for the process itself, so "stopped" means stopped.
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while _alive(before.postgres_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
    return before


def _start_postgres(files: ServerFiles, pg_port: int) -> None:
    socket_file = files.socket / f".s.PGSQL.{pg_port}"
    if len(str(socket_file)) > UNIX_SOCKET_PATH_MAX:
        raise TrackingError(
            f"PostgreSQL's socket path {socket_file} is longer than {UNIX_SOCKET_PATH_MAX} "
            "characters; run from a project folder with a shorter path"
        )
    _require_free_port("127.0.0.1", pg_port, "--pg-port")
    bin_dir = _postgres_bin()
    for folder in (files.data, files.socket):
        folder.mkdir(mode=0o700, exist_ok=True)
    files.postgres_log.touch()
    _give_to_server_user(files.data, files.socket, files.postgres_log)
    if not (files.data / "PG_VERSION").is_file():
        _init_cluster(files, bin_dir)
    # PostgreSQL listens on 127.0.0.1 whatever `--host` says: only the MLflow server talks to it.
    # pg_ctl hands -o to /bin/sh, hence the quoting.
    options = f"-c listen_addresses=127.0.0.1 -p {pg_port} -k {shlex.quote(str(files.socket))}"
    logger.info("starting PostgreSQL on 127.0.0.1:%d (data in %s)", pg_port, files.data)
    _run_server_tool(
        [str(bin_dir / "pg_ctl"), "start", "-D", str(files.data), "-l", str(files.postgres_log)]
        + ["-w", "-t", "60", "-o", options],
        files,
    )


def _init_cluster(files: ServerFiles, bin_dir: Path) -> None:
    # A generated password, not `trust`: with trust, any local user could connect as the
    # database superuser, who can run programs as the server's OS user (COPY ... TO PROGRAM).
    # libpq reads the password from a 0600 file (PGPASSFILE), so it is on no command line,
    # in no URI and in no log.
    password = secrets.token_urlsafe(24)
    fd = os.open(files.pgpass, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as pgpass:
        pgpass.write(f"127.0.0.1:*:*:{DB_USER}:{password}\n")
    # initdb reads the password from a file the server's user can read; it is gone after.
    pwfile = files.socket / "initdb-password"
    pwfile.write_text(password + "\n")
    pwfile.chmod(0o600)
    _give_to_server_user(pwfile)
    logger.info("initialising a PostgreSQL cluster in %s", files.data)
    try:
        _run_server_tool(
            [str(bin_dir / "initdb"), "-D", str(files.data), "-U", DB_USER]
            + ["--auth=scram-sha-256", f"--pwfile={pwfile}", "--encoding=UTF8", "--locale=C"],
            files,
        )
    finally:
        pwfile.unlink(missing_ok=True)


def _ensure_database(files: ServerFiles, pg_port: int) -> None:
    import psycopg2

    try:
        connection = psycopg2.connect(
            host="127.0.0.1",
            port=pg_port,
            user=DB_USER,
            dbname="postgres",
            passfile=str(files.pgpass),
            connect_timeout=10,
        )
    except psycopg2.OperationalError as exc:
        raise TrackingError(
            f"cannot connect to PostgreSQL on 127.0.0.1:{pg_port} ({str(exc).strip()}); "
            f"see {files.postgres_log}"
        ) from None
    try:
        connection.autocommit = True  # CREATE DATABASE cannot run inside a transaction
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
            if cursor.fetchone() is None:
                cursor.execute(f"CREATE DATABASE {DATABASE}")
    finally:
        connection.close()


def _start_mlflow(
    files: ServerFiles, current: ServerStatus, host: str, port: int, timeout_s: float
) -> ServerStatus:
    files.artifacts.mkdir(exist_ok=True)
    command = [sys.executable, "-m", "mlflow", "server"]
    command += ["--backend-store-uri", current.backend_uri, "--serve-artifacts"]
    command += ["--artifacts-destination", str(files.artifacts)]
    command += ["--host", host, "--port", str(port), "--workers", "1"]
    env = dict(os.environ)
    env["PGPASSFILE"] = str(files.pgpass)
    # Without this the server starts job runners too: 15 processes (2.3 GiB) instead of 2.
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    logger.info("starting the MLflow server on %s:%d (answers in 13-25 s)", host, port)
    with files.mlflow_log.open("w") as log:
        # Its own session: it outlives this command, and stop ends its whole process group.
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    server = {"pid": process.pid, "host": host, "port": port}
    files.server_json.write_text(json.dumps(server) + "\n")
    return _wait_for_health(
        replace(current, mlflow_pid=process.pid, host=host, port=port), timeout_s
    )


def _wait_for_health(server: ServerStatus, timeout_s: float) -> ServerStatus:
    log = server.files.mlflow_log
    deadline = time.monotonic() + timeout_s
    while not _answers_health(server.uri, 2.0):
        if not _alive(server.mlflow_pid):
            server.files.server_json.unlink(missing_ok=True)
            raise TrackingError(f"the MLflow server exited before answering; see {log}")
        if time.monotonic() > deadline:
            raise TrackingError(
                f"the MLflow server (pid {server.mlflow_pid}) did not answer {server.uri}/health "
                f"within {timeout_s:.0f} s; see {log}, then `lamina mlflow-server stop`"
            )
        time.sleep(0.5)
    return replace(server, healthy=True)


def _postgres_bin() -> Path:
    """Debian's newest PostgreSQL server programs, else those on PATH."""
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
        key=lambda path: int(path.parents[1].name) if path.parents[1].name.isdigit() else 0,
    )
    if candidates:
        return candidates[-1].parent
    on_path = shutil.which("pg_ctl")
    if on_path:
        return Path(on_path).parent
    raise TrackingError(
        "PostgreSQL's server programs are not installed (no /usr/lib/postgresql/*/bin/pg_ctl); "
        "run `make system-packages` (Debian's `postgresql` package)"
    )


def _as_server_user(command: list[str]) -> list[str]:
    return ["runuser", "-u", SERVER_USER, "--", *command] if os.geteuid() == 0 else command


def _give_to_server_user(*paths: Path) -> None:
    if os.geteuid() != 0:
        return
    try:
        user = pwd.getpwnam(SERVER_USER)
    except KeyError:
        raise TrackingError(
            f"running as root, but there is no `{SERVER_USER}` user to run PostgreSQL as; "
            "run `make system-packages`, or start the server as an ordinary user"
        ) from None
    for path in paths:
        os.chown(path, user.pw_uid, user.pw_gid)
    # The user must also reach those folders through every parent (a 0700 home or pytest's
    # /tmp/pytest-of-root stops it); initdb would fail later with a less helpful message.
    probe = subprocess.run(_as_server_user(["test", "-w", str(paths[0])]), capture_output=True)
    if probe.returncode != 0:
        raise TrackingError(
            f"PostgreSQL refuses to run as root and runs as `{SERVER_USER}`, who cannot write "
            f"to {paths[0]}; make its parent folders searchable by others (chmod o+x) or use "
            "a project folder outside /root"
        )


def _run_server_tool(command: list[str], files: ServerFiles) -> None:
    """Run initdb or pg_ctl as PostgreSQL's user; their output goes to the PostgreSQL log."""
    result = subprocess.run(
        _as_server_user(command), stderr=subprocess.STDOUT, stdout=subprocess.PIPE, text=True
    )
    with files.postgres_log.open("a") as log:
        log.write(result.stdout)
    if result.returncode != 0:
        said = result.stdout.strip().splitlines()
        action = "" if command[1].startswith("-") else f" {command[1]}"  # pg_ctl's start/stop
        tool = Path(command[0]).name + action
        raise TrackingError(
            f"{tool} failed ({said[-1] if said else 'no output'}); see {files.postgres_log}"
        )


def _postgres_process(files: ServerFiles) -> tuple[int | None, int | None]:
    """PostgreSQL's PID and port from its `postmaster.pid`, when that process still runs."""
    try:
        lines = (files.data / "postmaster.pid").read_text().splitlines()
        pid, port = int(lines[0]), int(lines[3])
    except (OSError, IndexError, ValueError):
        return None, None
    return (pid, port) if _alive(pid) else (None, None)


def _read_server_json(files: ServerFiles) -> dict:
    try:
        return json.loads(files.server_json.read_text())
    except (OSError, ValueError):
        return {}


def _alive(pid: int) -> bool:
    """Runs, zombies excepted: a container's PID 1 may never reap the processes it inherits."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:  # our own child (a test started it)
            return False
    except ChildProcessError:
        pass
    stat = _proc_stat(pid)
    return stat is not None and stat[0] != "Z"


def _proc_stat(pid: int) -> list[str] | None:
    """`/proc/<pid>/stat` from the state field on: [state, ppid, pgrp, ...] (Linux, like the
    Debian PostgreSQL this module runs)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def _is_mlflow(pid: int) -> bool:
    """Alive and still the MLflow server: a stale PID may belong to another process now."""
    try:
        return _alive(pid) and b"mlflow" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _stop_process_group(pgid: int) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while time.monotonic() < deadline:
            if not _alive(pgid) and not _group_members(pgid):
                return
            time.sleep(0.1)
        logger.warning("the MLflow server's processes (group %d) ignored %s", pgid, sig.name)


def _group_members(pgid: int) -> list[int]:
    """The live processes of a process group (the server's uvicorn outlives its parent)."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _proc_stat(int(entry.name))
            if stat is not None and stat[2] == str(pgid) and stat[0] != "Z":
                members.append(int(entry.name))
    return members


def _answers_health(uri: str, timeout_s: float) -> bool:
    try:
        with urllib.request.urlopen(uri + "/health", timeout=timeout_s) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _require_free_port(host: str, port: int, option: str) -> None:
    with socket.socket() as probe:
        # SO_REUSEADDR: a port left in TIME_WAIT by a server just stopped is free to reuse.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise TrackingError(
                f"cannot listen on {host}:{port} ({exc.strerror}); free it or pick another "
                f"port with {option}"
            ) from None
