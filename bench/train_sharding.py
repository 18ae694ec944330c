"""Feeding a fit's workers: Ray Train's streaming split against a dataset per worker.

`lamina.training.driver.TrainingData` gives each worker a dataset of its own rows when the
training split is held in memory (the default), and leaves the split to Ray Train
(`DataConfig(datasets_to_split=["train"])`, a streaming split with a coordinator actor) only
when it streams from Parquet. This measures what that choice buys.

What runs, in one local Ray (2 logical CPUs; nothing else should be busy on the machine):
`--repeats` times each, alternating, a `TorchTrainer` fit of 2 workers at 0.5 CPU each, as
`conf/cluster/local.yaml` has them, over the same in-memory table (`--rows` rows shaped like
`lstm-sentiment`'s features: 64 token ids and a label). The workers only iterate their shard
(`lamina.training.scaffold.training_shard`, the loops' own call), `--epochs` times, in batches of
64: no model, so the times are the data feeding's alone.

How to read the results:

- `first batch s`: from the worker asking for its first batch of the fit to getting it, the
  median over fits (rank 0). The streaming split pays its coordinator's start here, once per
  fit; `make run` has 14 fits (6 `train` stages, 8 search trials).
- `later epochs s`: one whole epoch of batches after the first, the median: the cost per
  epoch, which grows with the length of training.
- `fit s`: `trainer.fit()` wall time, start-up and tear-down included.
- ratios are per worker / streaming split: below 1 means the per-worker datasets are faster.

Usage: `.venv/bin/python bench/train_sharding.py [--repeats 3]` (about 2 minutes on 2 cores);
results are printed and written as JSON to `bench/results/train_sharding.json`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from lamina.cluster.ray_runtime import ONE_MACHINE_RAY_ENV
from lamina.training.driver import TrainingData
from lamina.training.scaffold import training_shard

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = ROOT / "bench" / "results" / "train_sharding.json"
MODES = ("streaming split", "per worker")


def feature_table(rows: int) -> pa.Table:
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, 20_000, size=(rows, 64), dtype=np.int64)
    return pa.table({"tokens": list(tokens), "label": rng.integers(0, 2, size=rows)})


def iterate_shard(loop_config: dict) -> None:
    """Each epoch: time to the first batch, then the whole epoch; rank 0 writes them to a file
    (a fit's result holds metrics only with a checkpoint)."""
    import ray.train

    rank = ray.train.get_context().get_world_rank()
    shard = training_shard(loop_config["train_split_by_ray"], rank)
    first_batch, epoch_times = [], []
    for _epoch in range(loop_config["epochs"]):
        started = time.perf_counter()
        for index, _batch in enumerate(
            shard.iter_torch_batches(batch_size=64, local_shuffle_buffer_size=256)
        ):
            if index == 0:
                first_batch.append(time.perf_counter() - started)
        epoch_times.append(time.perf_counter() - started)
    if rank == 0:
        measured = {
            "first_batch_s": first_batch[0],
            "later_epoch_s": statistics.median(epoch_times[1:]),
        }
        Path(loop_config["measured"]).write_text(json.dumps(measured))


def fit_once(data: TrainingData, epochs: int, storage: str) -> dict:
    import ray.train
    from ray.train.torch import TorchTrainer

    datasets, split_by_ray = data.for_workers(2)
    measured = Path(storage) / "measured.json"
    started = time.perf_counter()
    TorchTrainer(
        iterate_shard,
        train_loop_config={
            "epochs": epochs,
            "train_split_by_ray": bool(split_by_ray),
            "measured": str(measured),
        },
        scaling_config=ray.train.ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}),
        run_config=ray.train.RunConfig(
            storage_path=storage, logging_config=ray.train.LoggingConfig(log_level="WARNING")
        ),
        datasets=datasets,
        dataset_config=ray.train.DataConfig(datasets_to_split=split_by_ray),
    ).fit()
    return {"fit_s": time.perf_counter() - started, **json.loads(measured.read_text())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rows", type=int, default=10_248)  # lstm-sentiment's training split
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()

    import ray
    import ray.data

    os.environ.update(ONE_MACHINE_RAY_ENV)
    ray.init(
        address="local",
        num_cpus=2,
        object_store_memory=512 * 1024**2,
        include_dashboard=False,
        logging_level=logging.WARNING,
        runtime_env={"env_vars": {"RAY_DATA_DISABLE_PROGRESS_BARS": "1"}},
    )
    ray.data.DataContext.get_current().enable_progress_bars = False
    table = feature_table(args.rows)
    val = ray.data.from_items([{"tokens": np.zeros(64, dtype=np.int64), "label": 0}])
    data = {
        "streaming split": TrainingData(val, train_stream=ray.data.from_arrow(table)),
        "per worker": TrainingData(val, train_rows=table),
    }
    runs: dict[str, list[dict]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory() as storage:
        for repeat in range(args.repeats):
            for mode in MODES:
                runs[mode].append(fit_once(data[mode], args.epochs, storage))
                print(f"repeat {repeat + 1} {mode}: {runs[mode][-1]}", flush=True)
    ray.shutdown()

    summary = {
        mode: {
            key: statistics.median(run[key] for run in runs[mode])
            for key in ("first_batch_s", "later_epoch_s", "fit_s")
        }
        for mode in MODES
    }
    ratios = {
        f"{key} per worker/streaming split": summary["per worker"][key]
        / summary["streaming split"][key]
        for key in ("first_batch_s", "later_epoch_s", "fit_s")
    }
    print(f"{'':16s} {'first batch s':>14s} {'later epochs s':>15s} {'fit s':>8s}")
    for mode in MODES:
        row = summary[mode]
        print(
            f"{mode:16s} {row['first_batch_s']:14.2f} {row['later_epoch_s']:15.2f} "
            f"{row['fit_s']:8.1f}"
        )
    for name, ratio in ratios.items():
        print(f"ratio {name}: {ratio:.2f}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(
            {
                "args": {k: str(v) for k, v in vars(args).items()},
                "runs": runs,
                "summary": summary,
                "ratios": ratios,
            },
            indent=2,
        )
    )
    print(f"written: {args.output}")


if __name__ == "__main__":
    main()
