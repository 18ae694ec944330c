"""`lamina mlflow-server start|status|stop`: a local MLflow tracking server on PostgreSQL."""

from __future__ import annotations

from typing import Annotated

import typer

from lamina.tracking.server import (
    DEFAULT_HOST,
    DEFAULT_PG_PORT,
    DEFAULT_PORT,
    ServerStatus,
    start,
    status,
    stop,
)

app = typer.Typer()
server = typer.Typer(
    help="a local MLflow tracking server backed by PostgreSQL", no_args_is_help=True
)
app.add_typer(server, name="mlflow-server")


@server.command("start", short_help="start PostgreSQL and `mlflow server`")
def start_server(
    ctx: typer.Context,
    port: Annotated[int, typer.Option(help="the MLflow server's")] = DEFAULT_PORT,
    pg_port: Annotated[int, typer.Option(help="PostgreSQL's")] = DEFAULT_PG_PORT,
    host: Annotated[
        str,
        typer.Option(
            help="address MLflow binds (127.0.0.1: this machine only); "
            "PostgreSQL stays on 127.0.0.1"
        ),
    ] = DEFAULT_HOST,
) -> None:
    """start PostgreSQL and `mlflow server` (state in .lamina/mlflow-server/)"""
    started = start(ctx.obj, port=port, pg_port=pg_port, host=host)
    # Shell-readable, so `eval "$(lamina mlflow-server start)"` points this shell at it.
    print(f"# MLflow server pid {started.mlflow_pid}, PostgreSQL pid {started.postgres_pid}")
    print(f"# state and logs: {started.files.state}")
    print(f"export MLFLOW_TRACKING_URI={started.uri}")


@server.command("stop")
def stop_server(ctx: typer.Context) -> None:
    """stop the MLflow server and PostgreSQL"""
    stopped = stop(ctx.obj)
    if stopped.mlflow_pid is None and stopped.postgres_pid is None:
        print("MLflow server: not running")
    if stopped.mlflow_pid is not None:
        print(f"MLflow server: stopped (pid {stopped.mlflow_pid})")
    if stopped.postgres_pid is not None:
        print(f"PostgreSQL: stopped (pid {stopped.postgres_pid})")


@server.command("status")
def server_status(ctx: typer.Context) -> None:
    """what runs, and its URIs"""
    _print_server(status(ctx.obj))


def _print_server(running: ServerStatus) -> None:
    if running.mlflow_pid is None:
        print("MLflow server: not running")
    else:
        answers = "answers /health" if running.healthy else "does not answer /health yet"
        print(f"MLflow server: {running.uri}, pid {running.mlflow_pid}, {answers}")
    if running.postgres_pid is None:
        print("PostgreSQL: not running")
    else:
        print(f"PostgreSQL: {running.backend_uri}, pid {running.postgres_pid}")
    print(f"state and logs: {running.files.state}")
