"""Batch inference: `lamina predict` (Ray Data actors) against a plain single-process loop over
the same pyfunc model and the same image files.

What runs, in this order (nothing else should be busy on the machine):

1. The inputs: the digits of the experiment's test split (`outputs/<exp>/splits/test.parquet`,
   written by `make run`; `--samples N` cycles through them to N files), each written as a PNG
   file into a temporary folder, spread over 10 subfolders.
2. Plain: in this process, `mlflow.pyfunc.load_model` of the registered version (timed), then
   `model.predict` on DataFrames of 256 file paths at a time until every file is done: the
   loop a user would write. torch uses its default threads (one per core).
3. `lamina predict` as a user runs it, in a subprocess, on the same folder (wall time from
   start to exit: Python and library imports, model lookup, Ray start, actors loading the
   model, predicting, writing the CSV), then again on a folder holding one of the files: its
   wall time is the fixed cost a run pays whatever its size.

How to read the results:

- `rows/s` end to end: files / wall time of each side; for plain, load + loop (no interpreter
  start). `ratio lamina/plain` is the headline: above 1 means `lamina predict` gets through a
  folder faster than the plain loop would, below 1 slower. On a small input the fixed cost
  (Ray and actors starting, tens of seconds on 2 cores) dominates; it is amortised with size.
- `steady rows/s` of lamina: (N - 1) / (wall N - wall 1), the rate once running, against the
  plain loop without its load: `steady ratio`. On 2 cores both sides have the same 2 cores to
  compute with, so the steady ratio says what Ray Data's batching and data movement cost; on a
  cluster, actors on more nodes raise lamina's side and not the plain loop's.
- `agreement`: the share of files both sides gave the same class (1.0 expected: same model).

Usage: `.venv/bin/python bench/predict_throughput.py [--model cnn-mnist] [--samples 20000]
[--root .] [--tracking-uri URI]` after `make run` (the model must be registered in the store:
`<root>/mlflow.db` or `--tracking-uri` / MLFLOW_TRACKING_URI). Results are printed and written
as JSON to `bench/results/predict_throughput.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = ROOT / "bench" / "results" / "predict_throughput.json"
PLAIN_BATCH = 256


def write_digits(split: Path, samples: int | None, folder: Path) -> list[str]:
    """The split's digits as PNG files under `folder` (cycled to `samples`); relative paths."""
    import pyarrow.parquet as pq
    from PIL import Image

    from lamina.data.image_parquet import pixels_from_arrow

    if not split.is_file():
        raise SystemExit(f"{split}: no test split; run `make run` (or `dvc repro`) first")
    table = pq.read_table(split)
    height, width = map(int, table.schema.metadata[b"lamina.image_shape"].split(b","))
    pixels = pixels_from_arrow(table.column("image"), (height, width))
    count = samples or len(pixels)
    relative = []
    for index in range(count):
        path = folder / f"{index % 10}" / f"digit-{index:06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels[index % len(pixels)]).save(path)
        relative.append(path.relative_to(folder).as_posix())
    return relative


def run_plain(uri: str, folder: Path, relative: list[str]) -> dict:
    import mlflow.pyfunc

    started = time.perf_counter()
    model = mlflow.pyfunc.load_model(uri)
    load_seconds = time.perf_counter() - started
    paths = [str(folder / name) for name in relative]
    started = time.perf_counter()
    outputs = [
        model.predict(pd.DataFrame({"image": paths[start : start + PLAIN_BATCH]}))
        for start in range(0, len(paths), PLAIN_BATCH)
    ]
    loop_seconds = time.perf_counter() - started
    predictions = pd.concat(outputs, ignore_index=True)["prediction"].astype(str)
    return {
        "load_seconds": load_seconds,
        "loop_seconds": loop_seconds,
        "rows_per_second": len(paths) / (load_seconds + loop_seconds),
        "loop_rows_per_second": len(paths) / loop_seconds,
        "predictions": dict(zip(relative, predictions, strict=True)),
    }


def run_lamina(spec: str, folder: Path, output: Path, root: Path, env: dict) -> float:
    """Wall seconds of `lamina predict`, from the command's start to its exit."""
    lamina = Path(sys.executable).parent / "lamina"
    command = [str(lamina), "--root", str(root), "predict", "--model", spec]
    command += ["--input", str(folder), "--output", str(output)]
    started = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"lamina predict failed ({result.returncode}): {result.stderr[-2000:]}")
    print(f"  {result.stdout.strip()}", flush=True)
    return seconds


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="cnn-mnist", help="NAME[@ALIAS|/VERSION] (%(default)s)")
    parser.add_argument(
        "--samples", type=int, default=20000, help="files to predict, cycling the test digits"
    )
    parser.add_argument("--root", type=Path, default=ROOT, help="repository with outputs/")
    parser.add_argument("--tracking-uri", help="MLflow store (default: <root>/mlflow.db)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON results file")
    args = parser.parse_args()
    if args.samples < 2:
        parser.error("--samples must be at least 2")
    return args


def main() -> None:
    args = parse_args()
    root = args.root.resolve()
    if args.tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = args.tracking_uri
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)  # both sides on this machine

    import mlflow

    from lamina.serving.registry import find_model_version, registry_client

    client = registry_client(root)
    version = find_model_version(client, args.model)
    uri = f"models:/{version.name}/{version.version}"
    mlflow.set_tracking_uri(client.tracking_uri)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="lamina-bench-predict-") as scratch:
        scratch_dir = Path(scratch)
        folder, single = scratch_dir / "digits", scratch_dir / "one"
        split = root / "outputs" / version.name / "splits" / "test.parquet"
        relative = write_digits(split, args.samples, folder)
        (single / "0").mkdir(parents=True)
        (single / relative[0]).write_bytes((folder / relative[0]).read_bytes())
        print(f"{uri}: {len(relative)} PNG files", flush=True)

        print("plain loop ...", flush=True)
        plain = run_plain(uri, folder, relative)
        print("lamina predict, all files ...", flush=True)
        output = scratch_dir / "predictions.csv"
        lamina_seconds = run_lamina(uri.removeprefix("models:/"), folder, output, root, env)
        print("lamina predict, one file ...", flush=True)
        one_seconds = run_lamina(
            uri.removeprefix("models:/"), single, scratch_dir / "one.csv", root, env
        )
        table = pd.read_csv(output, dtype={"prediction": str})

    plain_predictions = plain.pop("predictions")
    agreement = float(np.mean([plain_predictions[p] == c for p, c in table.values[:, :2]]))
    rows = len(relative)
    lamina = {
        "wall_seconds": lamina_seconds,
        "rows_per_second": rows / lamina_seconds,
        "fixed_seconds_one_row": one_seconds,
        "steady_rows_per_second": (rows - 1) / max(lamina_seconds - one_seconds, 1e-9),
        "output_rows": len(table),
    }
    results = {
        "model_uri": uri,
        "rows": rows,
        "plain_batch_rows": PLAIN_BATCH,
        "plain": plain,
        "lamina": lamina,
        "ratio_lamina_over_plain": lamina["rows_per_second"] / plain["rows_per_second"],
        "steady_ratio_lamina_over_plain": (
            lamina["steady_rows_per_second"] / plain["loop_rows_per_second"]
        ),
        "agreement": agreement,
        "cpu_count": os.cpu_count(),
        "load_average_before_after": [load_before, os.getloadavg()[0]],
        "versions": {"python": platform.python_version(), "mlflow": mlflow.__version__},
    }
    rows_out = [
        ("plain: load model s", f"{plain['load_seconds']:.2f}"),
        ("plain: loop s", f"{plain['loop_seconds']:.2f}"),
        ("plain rows/s (load + loop)", f"{plain['rows_per_second']:.1f}"),
        ("plain rows/s (loop only)", f"{plain['loop_rows_per_second']:.1f}"),
        ("lamina predict wall s", f"{lamina_seconds:.2f}"),
        ("lamina rows/s (wall)", f"{lamina['rows_per_second']:.1f}"),
        ("lamina fixed cost s (1 row)", f"{one_seconds:.2f}"),
        ("lamina steady rows/s", f"{lamina['steady_rows_per_second']:.1f}"),
        ("ratio lamina/plain", f"{results['ratio_lamina_over_plain']:.2f}"),
        ("steady ratio lamina/plain (loop)", f"{results['steady_ratio_lamina_over_plain']:.2f}"),
        ("agreement", f"{agreement:.4f}"),
    ]
    width = max(len(name) for name, _ in rows_out)
    print(f"\n{uri}: {rows} files")
    for name, value in rows_out:
        print(f"  {name:<{width}}  {value:>10}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
