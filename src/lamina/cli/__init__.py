"""`lamina`: what is not a DVC stage. One module per group of commands; heavy libraries are
imported only by the command that needs them, so `lamina --help` answers at once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup

from lamina.cli import cluster, mlflow_server, pipeline, registry
from lamina.entrypoint import configure_logging, exit_on_user_error


class _EntryPointGroup(TyperGroup):
    """Runs the chosen command as every Lamina entry point runs (`lamina.entrypoint`): a
    LaminaError is one line and exit 2, Ctrl-C exit 130. Wrapping `invoke` catches them before
    typer does, which would print a traceback for one and exit 130 silently for the other."""

    def invoke(self, ctx: typer.Context) -> None:
        configure_logging()
        run_command = super().invoke
        exit_on_user_error(lambda: run_command(ctx), "lamina")


app = typer.Typer(
    cls=_EntryPointGroup,
    help="What is not a DVC stage: raw data, configs, results, the registry, servers, Ray jobs.",
    no_args_is_help=True,
    add_completion=False,
    # Plain click help and errors: rich would add 0.2 s to every `lamina --help` and read
    # brackets in help texts (NAME[@ALIAS|/VERSION]) as markup.
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)
for commands in (pipeline.app, registry.app, mlflow_server.app, cluster.app):
    app.add_typer(commands)


@app.callback()
def _repository_root(
    ctx: typer.Context,
    root: Annotated[Path, typer.Option(help="repository root")] = Path(),
) -> None:
    # Every command reads the repository root as `ctx.obj`.
    ctx.obj = root


def main(argv: list[str] | None = None) -> None:
    """`lamina ARGS...`. Click ends even a successful command with `sys.exit(0)`; returning
    instead lets tests call `main` in-process."""
    try:
        app(argv, prog_name="lamina")
    except SystemExit as exited:
        if exited.code:
            raise
