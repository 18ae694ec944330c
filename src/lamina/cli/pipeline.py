"""What `dvc repro` reads and makes: `lamina data ensure`, `config`, `experiments`, `report`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer()
data = typer.Typer(help="raw data under data/", no_args_is_help=True)
app.add_typer(data, name="data")


@data.command(short_help="make data/ match data.dvc")
def ensure(ctx: typer.Context) -> None:
    """make data/ match data.dvc: pull it, or rebuild it from its packages"""
    from lamina.data.ensure import ensure_raw_data

    how = ensure_raw_data(ctx.obj)
    print(f"data/: {how} (matches data.dvc)")


@app.command()
def config(
    ctx: typer.Context, experiment: Annotated[str, typer.Argument(metavar="EXPERIMENT")]
) -> None:
    """show an experiment's composed, validated config"""
    from lamina.config.compose import compose_experiment, dump_config

    print(dump_config(compose_experiment(experiment, ctx.obj / "conf")), end="")


@app.command()
def experiments(ctx: typer.Context) -> None:
    """list the experiment presets"""
    from lamina.config.compose import available_experiments

    print("\n".join(available_experiments(ctx.obj / "conf")))


@app.command()
def report(ctx: typer.Context) -> None:
    """test metrics and registered models per experiment"""
    # What `make run` ends with: each experiment's test metrics, its model, where to look.
    import json

    from lamina.config.paths import ExperimentPaths
    from lamina.redaction import redacted
    from lamina.tracking.runs import tracking_uri

    root = ctx.obj.resolve()
    uri = tracking_uri(root)  # a URI MLflow cannot read is refused before anything is printed
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
    print(f"\nMLflow store: {redacted(uri)}")
    if uri.startswith("sqlite:"):
        print(f"Browse runs and models: mlflow ui --backend-store-uri {uri} --host 127.0.0.1")
    print("Compare with the last commit: dvc metrics diff; dvc plots diff")


def _experiment_names(root: Path) -> list[str]:
    import yaml

    return list(yaml.safe_load((root / "dvc.yaml").read_text())["vars"][0]["experiments"])
