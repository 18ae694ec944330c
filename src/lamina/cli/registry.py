"""The registered models: `lamina models`, `generate`, `predict`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lamina.cli.table import print_table

app = typer.Typer()

GENERATED_FORMATS = {".png": "a grid image", ".npy": "uint8 pixels (N, H, W) in 0..255"}
# The generator draws all samples in one batch, and its memory grows with them: the bound keeps
# gan-mnist's under a few hundred MB and a .png grid quick to draw (docs/benchmarks.md).
MAX_GENERATED = 1024
OVERWRITE_HELP = "replace --output if it exists (never a folder)"


@app.command()
def models(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Option(help="only this model", show_default=False)] = None,
) -> None:
    """registered models: versions, aliases, primary test metric"""
    from lamina.errors import TrackingError
    from lamina.redaction import redacted
    from lamina.serving.registry import list_model_versions, registry_client

    client = registry_client(ctx.obj.resolve())
    rows = list_model_versions(client, name)
    where = redacted(client.tracking_uri)
    if rows:
        print_table(rows)
    elif name:
        raise TrackingError(f"no registered model named '{name}' in {where}")
    else:
        print(f"no registered models in {where} (`dvc repro` trains and registers them)")


@app.command(
    short_help="draw samples from a registered GAN generator into a .png grid or a .npy array"
)
def generate(
    ctx: typer.Context,
    *,
    model: Annotated[
        str,
        typer.Option(help="NAME, NAME@ALIAS or NAME/VERSION; NAME alone is NAME@champion"),
    ] = "gan-mnist",
    num_samples: Annotated[
        int, typer.Option("-n", "--num-samples", help=f"how many, 1 to {MAX_GENERATED}")
    ] = 64,
    output: Annotated[
        Path, typer.Option(help="grid.png (an image grid) or samples.npy (uint8 pixels)")
    ],
    seed: Annotated[int, typer.Option(help="noise seed, 0 or more")] = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help=OVERWRITE_HELP)] = False,
) -> None:
    """Load a registered generator and draw N samples; the output is written only once all of
    them are drawn. Example: lamina generate --model gan-mnist -n 64 --output grid.png"""
    import mlflow
    import numpy as np

    from lamina.atomic import atomic_path
    from lamina.serving.packaging import sample_generator
    from lamina.serving.registry import find_model_version, registry_client

    _check_generate_args(output, num_samples, seed, overwrite)
    client = registry_client(ctx.obj.resolve())
    version = find_model_version(client, model)
    uri = f"models:/{version.name}/{version.version}"
    mlflow.set_tracking_uri(client.tracking_uri)
    pixels = sample_generator(uri, num_samples, seed)
    # The staging file's name has no image suffix: both writers get an open file instead.
    with atomic_path(output) as staging, staging.open("wb") as handle:
        if output.suffix.lower() == ".npy":
            np.save(handle, pixels)
        else:
            from lamina.evaluation.gan_metrics import plot_sample_grid

            title = f"{version.name} v{version.version}, seed {seed}"
            plot_sample_grid(pixels[:, np.newaxis] / 127.5 - 1.0, handle, title)
    print(f"{output}: {len(pixels)} samples {pixels.shape[1:]} from {uri} (seed {seed})")


def _check_generate_args(output: Path, num_samples: int, seed: int, overwrite: bool) -> None:
    """Everything `generate` can refuse, before it loads a model. Checked here rather than by
    typer's `min`/`max`, whose usage errors take several lines."""
    from lamina.atomic import check_output_target
    from lamina.errors import LaminaError

    if output.suffix.lower() not in GENERATED_FORMATS:
        formats = ", ".join(f"{suffix} ({what})" for suffix, what in GENERATED_FORMATS.items())
        raise LaminaError(f"--output {output}: write one of {formats}")
    if not 1 <= num_samples <= MAX_GENERATED:
        raise LaminaError(
            f"-n {num_samples}: draw 1 to {MAX_GENERATED} samples per call; for more, call "
            "again with another --seed"
        )
    if seed < 0:
        raise LaminaError(f"--seed {seed}: a seed is a whole number, 0 or more")
    check_output_target(output, overwrite=overwrite)


@app.command(short_help="batch inference with a registered model (Ray Data)")
def predict(
    ctx: typer.Context,
    model: Annotated[
        str,
        typer.Option(
            metavar="NAME[@ALIAS|/VERSION]", help="a registered model; default alias: champion"
        ),
    ],
    source: Annotated[Path, typer.Option("--input", metavar="PATH", help="folder or file to read")],
    output: Annotated[Path, typer.Option(metavar="PATH", help="*.csv or *.parquet")],
    overwrite: Annotated[bool, typer.Option("--overwrite", help=OVERWRITE_HELP)] = False,
) -> None:
    """Run a registered model over a folder of PNG/JPEG images (image classifiers), a CSV or
    Parquet file with a `text` column (text classifiers) or a CSV series (forecasters: a
    rolling forecast from every full window); write the input's identifiers and the
    predictions as CSV or Parquet, by the output's extension."""
    from lamina.serving.predict import predict as predict_batch

    print(predict_batch(model, source, output, ctx.obj, overwrite=overwrite).line())
