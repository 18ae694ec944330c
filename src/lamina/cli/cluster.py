"""Ray: `lamina with-local-ray`, and jobs on a cluster (`submit`, `jobs`, `logs`, `stop`)."""

from __future__ import annotations

from typing import Annotated

import typer

from lamina.cli.table import print_table

app = typer.Typer()

ADDRESS_HELP = "the head's dashboard URL, e.g. http://HEAD:8265 (default: RAY_ADDRESS)"
Address = Annotated[str | None, typer.Option(help=ADDRESS_HELP, show_default=False)]
JobId = Annotated[str, typer.Argument(metavar="JOB_ID")]
# COMMAND is everything after `--`, or from its first word on: its own options stay its own.
COMMAND_SETTINGS = {"ignore_unknown_options": True, "allow_interspersed_args": False}
Command = Annotated[
    list[str] | None,
    typer.Argument(
        metavar="-- COMMAND", help="what to run, with its arguments", show_default=False
    ),
]


@app.command(
    short_help="run a command (dvc repro, one stage) as a Ray job on a cluster",
    context_settings=COMMAND_SETTINGS,
)
def submit(
    ctx: typer.Context,
    address: Address = None,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="print the job id and return")] = False,
    job_command: Command = None,
) -> None:
    """Submit COMMAND as a Ray job with this repository as its working directory and this
    shell's MLFLOW_* settings; stream its logs and exit with its status. Example: lamina
    submit --address http://head:8265 -- dvc repro"""
    from lamina.cluster.jobs import submit as submit_job

    raise typer.Exit(submit_job(address, job_command or [], ctx.obj, wait=not no_wait))


@app.command(
    short_help="run a command (dvc repro) with one local Ray that all its stages join",
    context_settings=COMMAND_SETTINGS,
)
def with_local_ray(ctx: typer.Context, stage_command: Command = None) -> None:
    """Start one local Ray (dashboard on 127.0.0.1), run COMMAND with RAY_ADDRESS pointing at
    it, stop it when COMMAND ends; exit with COMMAND's status. Saves each stage starting a Ray
    of its own. With RAY_ADDRESS set, only runs COMMAND. Example: lamina with-local-ray -- dvc
    repro"""
    from lamina.cluster.local_ray import run_on_one_local_ray

    log_dir = ctx.obj / ".lamina" / "local-ray"
    raise typer.Exit(run_on_one_local_ray(stage_command or [], log_dir))


@app.command()
def jobs(address: Address = None) -> None:
    """the cluster's jobs, oldest first"""
    from lamina.cluster.jobs import list_jobs

    rows = list_jobs(address)
    if not rows:
        print("no jobs on this cluster")
        return
    print_table(rows)


@app.command()
def logs(
    job_id: JobId,
    address: Address = None,
    follow: Annotated[bool, typer.Option("-f", "--follow", help="until the job ends")] = False,
) -> None:
    """a job's logs"""
    from lamina.cluster.jobs import job_logs

    job_logs(address, job_id, follow=follow)


@app.command()
def stop(job_id: JobId, address: Address = None) -> None:
    """stop a running job"""
    from lamina.cluster.jobs import stop_job

    print(f"{job_id}: {stop_job(address, job_id)}")
