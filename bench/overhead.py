"""Ray Train's overhead over plain PyTorch: same model, data, batch size, optimizer and epochs.

What runs, in this order, in one process (nothing else should be busy on the machine):

1. Plain PyTorch: the `cnn-mnist` CNN (`lamina.models.build_model`), one thread
   (`torch.set_num_threads(1)`, like one Ray worker holding 1 CPU), the standardised MNIST digits
   held as one in-memory tensor, shuffled each epoch by a random permutation, no augmentation.
2. `ray.init(num_cpus=2)` (timed; Ray Train's preemption watcher off, as in Lamina's own local
   Ray: `lamina.cluster.ray_runtime.ONE_MACHINE_RAY_ENV`), the same tensors as a materialized Ray
   Dataset (timed).
3. Pure data iteration, no model: one epoch of batches from Ray Data's `iter_torch_batches`
   against slicing / gathering the in-memory tensor and against a `DataLoader`.
4. Ray Train: a `TorchTrainer` with one worker holding 1 CPU (the second logical CPU stays free
   for Ray Data, or training hangs: see docs/cluster-and-servers.md), fed through
   `get_dataset_shard("train").iter_torch_batches(...)` with the local shuffle buffer that
   `lamina.training.loop` uses. The worker times each epoch and sends it with `ray.train.report`.
5. Ray Train again, the worker training on the in-memory tensors exactly as the plain loop does
   (no Ray Data): splits the overhead into Ray Train's own and Ray Data's feeding.
6. Plain PyTorch again after `ray.shutdown()`: two plain runs bracket the Ray runs, so a machine
   that drifts (thermal, other load) shows up as a gap between them instead of as overhead.

How to read the results:

- Epoch time is the median over the epochs after the first (the first pays warm-up: thread
  pools, allocator, Ray Data's first pull); for plain, over both runs. `ratio ray/plain` is the
  steady-state cost per epoch of training under Ray Train: 1.00 means no overhead; Ray's own
  release test allows 1.15. This is the number that grows with the length of training. Run to
  run noise on a shared 2-core machine is several percent: compare the two plain runs.
- `ray fixed start-up` is `trainer.fit()` wall time minus the sum of its epoch times: starting
  the controller and worker group, setting up the process group, `report` round trips, tearing
  down. It is paid once per `fit`, so it matters for short runs, tests and Tune trials, not for
  long training. `ray.init` and building the dataset are timed separately.
- The iteration ratio (Ray Data `iter_torch_batches` / slicing an in-memory tensor) is large
  because slicing returns views and costs almost nothing; what matters is the absolute time
  next to the epoch time, i.e. the share of an epoch spent feeding data.

Usage: `.venv/bin/python bench/overhead.py [--epochs 4] [--samples N]` (about 2-3 minutes with
the defaults on 2 cores); results are printed and written as JSON to
`bench/results/overhead.json`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lamina.cluster.ray_runtime import ONE_MACHINE_RAY_ENV
from lamina.config.compose import compose_experiment
from lamina.config.schema import ExperimentConfig
from lamina.data.image_arrays import read_image_arrays
from lamina.models import build_model

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = "cnn-mnist"
DEFAULT_OUTPUT = ROOT / "bench" / "results" / "overhead.json"
QUIET_RAY_DATA = {"RAY_DATA_DISABLE_PROGRESS_BARS": "1"}


# --- shared by both sides -------------------------------------------------------------------


def make_optimizer(model: torch.nn.Module, config: ExperimentConfig) -> torch.optim.Optimizer:
    """The optimizer the config names, built as `lamina.training.loop` builds it."""
    train = config.train
    if train.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=train.lr, momentum=0.9, weight_decay=train.weight_decay
        )
    optimizer_class = torch.optim.AdamW if train.optimizer == "adamw" else torch.optim.Adam
    return optimizer_class(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
) -> float:
    """One optimisation step; returns the summed loss of the batch (as the real loop does)."""
    loss = F.cross_entropy(model(images), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item() * len(images)


def shuffled_batches(
    x: torch.Tensor, y: torch.Tensor, batch_size: int, generator: torch.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of batches from in-memory tensors, in a fresh random order."""
    order = torch.randperm(len(x), generator=generator)
    for start in range(0, len(x), batch_size):
        index = order[start : start + batch_size]
        yield x[index], y[index]


def steady_state(epoch_seconds: list[float]) -> float:
    """Median epoch time after the first (warm-up) epoch; the only epoch if there is one."""
    return statistics.median(epoch_seconds[1:] or epoch_seconds)


# --- data -----------------------------------------------------------------------------------


def load_config_and_data(
    samples: int | None, scratch: Path
) -> tuple[ExperimentConfig, np.ndarray, np.ndarray]:
    """The experiment config and (images (N, 1, H, W) float32 standardised, labels (N,) int64).

    Standardised with one pixel mean and std over the images used, as `ImageStandardizer` does.
    """
    config = compose_experiment(EXPERIMENT, ROOT / "conf")
    data_dir = ROOT / config.data.path
    if not (data_dir / "images.npy").is_file():
        from lamina.data.raw_sources import build_mnist_5k

        data_dir = scratch / "mnist"
        print(f"{ROOT / config.data.path} is missing: building MNIST 5k into {data_dir}")
        build_mnist_5k(data_dir)
    config = config.model_copy(
        update={"data": config.data.model_copy(update={"path": str(data_dir)})}
    )
    pixels, labels = read_image_arrays(config.data)
    if samples is not None:
        pixels, labels = pixels[:samples], labels[:samples]
    as_float = pixels.astype(np.float64)
    mean, std = as_float.mean(), as_float.std()
    images = ((pixels.astype(np.float32) - np.float32(mean)) / np.float32(std))[:, np.newaxis]
    return config, np.ascontiguousarray(images), labels


def to_ray_dataset(images: np.ndarray, labels: np.ndarray, block_rows: int = 1000):
    """The arrays as a materialized Ray Dataset with `image` and `label` columns."""
    import pyarrow as pa
    import ray.data
    from ray.data.extensions import ArrowTensorArray

    table = pa.table({"image": ArrowTensorArray.from_numpy(images), "label": labels})
    blocks = [table.slice(start, block_rows) for start in range(0, len(table), block_rows)]
    return ray.data.from_arrow(blocks).materialize()


# --- plain PyTorch --------------------------------------------------------------------------


def run_plain(config: ExperimentConfig, images: np.ndarray, labels: np.ndarray, epochs: int):
    """Per-epoch seconds and mean losses of a single-process, single-thread training run."""
    torch.manual_seed(config.train.seed)
    generator = torch.Generator().manual_seed(config.train.seed)
    model = build_model(config)
    optimizer = make_optimizer(model, config)
    x, y = torch.from_numpy(images), torch.from_numpy(labels)
    batch_size = config.train.batch_size
    seconds, losses = [], []
    for _ in range(epochs):
        started = time.perf_counter()
        model.train()
        total = 0.0
        for images_batch, labels_batch in shuffled_batches(x, y, batch_size, generator):
            total += train_step(model, optimizer, images_batch, labels_batch)
        seconds.append(time.perf_counter() - started)
        losses.append(total / len(x))
    return seconds, losses


# --- Ray Train ------------------------------------------------------------------------------


def ray_train_fn(loop_config: dict[str, Any]) -> dict[str, Any]:
    """Runs on the Ray Train worker: the same steps as `run_plain`.

    Batches come from the Ray Data shard, or from `loop_config["arrays"]` (images, labels) when
    given, exactly as in `run_plain`.
    """
    import ray.train
    import ray.train.torch

    entered = time.time()
    threads_by_default = torch.get_num_threads()  # what Ray set up for a 1-CPU worker
    torch.set_num_threads(1)
    config = ExperimentConfig.model_validate(loop_config["experiment"])
    torch.manual_seed(config.train.seed)
    model = ray.train.torch.prepare_model(build_model(config))
    optimizer = make_optimizer(model, config)
    batch_size = config.train.batch_size
    if loop_config.get("arrays") is not None:
        x, y = (torch.from_numpy(array) for array in loop_config["arrays"])
        generator = torch.Generator().manual_seed(config.train.seed)

        def batches(epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            return shuffled_batches(x, y, batch_size, generator)
    else:
        shard = ray.train.get_dataset_shard("train")

        def batches(epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            for batch in shard.iter_torch_batches(
                batch_size=batch_size,
                local_shuffle_buffer_size=4 * batch_size,
                local_shuffle_seed=config.train.seed + epoch,
            ):
                yield batch["image"], batch["label"]

    seconds: list[float] = []
    losses: list[float] = []
    first_epoch_started = time.time()
    for epoch in range(loop_config["epochs"]):
        started = time.perf_counter()
        model.train()
        total, seen = 0.0, 0
        for images_batch, labels_batch in batches(epoch):
            total += train_step(model, optimizer, images_batch, labels_batch)
            seen += len(labels_batch)
        seconds.append(time.perf_counter() - started)
        losses.append(total / seen)
        ray.train.report({"epoch": epoch, "epoch_seconds": seconds[-1], "loss": losses[-1]})
    # The whole run goes back as `Result.return_value` (Train V2 keeps `Result.metrics` only for
    # reports with a checkpoint). `time.time()` instants compare with the driver's (same
    # machine): they split the fixed cost into before the first and after the last epoch.
    return {
        "all_epoch_seconds": seconds,
        "all_losses": losses,
        "samples_seen_per_epoch": seen,
        "worker_threads_by_default": threads_by_default,
        "worker_nice": os.nice(0),
        "worker_entered": entered,
        "first_epoch_started": first_epoch_started,
        "last_epoch_ended": time.time(),
    }


def run_ray_train(
    config: ExperimentConfig,
    epochs: int,
    dataset=None,
    arrays: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, Any]:
    """One `trainer.fit()` fed from the Ray `dataset`, or from in-memory `arrays` when given."""
    import ray.train
    from ray.train.torch import TorchTrainer

    storage = tempfile.mkdtemp(prefix="lamina-bench-ray-")
    try:
        trainer = TorchTrainer(
            ray_train_fn,
            train_loop_config={
                "experiment": config.model_dump(mode="json"),
                "epochs": epochs,
                "arrays": arrays,
            },
            scaling_config=ray.train.ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1}),
            # A fresh name and folder per run: a reused name silently resumes the old run.
            run_config=ray.train.RunConfig(
                name=f"overhead-{uuid.uuid4().hex[:8]}", storage_path=storage
            ),
            datasets={"train": dataset} if arrays is None else {},
        )
        fit_started = time.time()
        started = time.perf_counter()
        result = trainer.fit()
        fit_seconds = time.perf_counter() - started
        fit_ended = time.time()
    finally:
        shutil.rmtree(storage, ignore_errors=True)
    if result.error is not None:
        raise RuntimeError(f"Ray Train failed: {result.error}")
    final = result.return_value
    epoch_seconds = [float(s) for s in final["all_epoch_seconds"]]
    return {
        "epoch_seconds": epoch_seconds,
        "loss": final["all_losses"],
        "fit_seconds": fit_seconds,
        "fixed_seconds": fit_seconds - sum(epoch_seconds),
        "fit_to_worker_entered_seconds": final["worker_entered"] - fit_started,
        "fit_to_first_epoch_seconds": final["first_epoch_started"] - fit_started,
        "last_epoch_to_fit_return_seconds": fit_ended - final["last_epoch_ended"],
        "samples_seen_per_epoch": final["samples_seen_per_epoch"],
        "worker_threads_by_default": final["worker_threads_by_default"],
        "worker_nice": final["worker_nice"],
    }


# --- data iteration only --------------------------------------------------------------------


def time_epochs(iterate: Callable[[], Iterable[Any]], repeats: int) -> float:
    """Median seconds to exhaust `iterate()` (one epoch of batches), after one warm-up pass."""
    for _ in iterate():
        pass
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in iterate():
            pass
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def time_iteration(
    images: np.ndarray, labels: np.ndarray, dataset, batch_size: int, repeats: int
) -> dict[str, float]:
    """Seconds per epoch of batches, no model, from each source (in this driver process)."""
    from torch.utils.data import DataLoader, TensorDataset

    x, y = torch.from_numpy(images), torch.from_numpy(labels)

    def tensor_slices():
        for start in range(0, len(x), batch_size):
            yield x[start : start + batch_size], y[start : start + batch_size]

    generator = torch.Generator().manual_seed(0)
    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True)
    return {
        "tensor_slicing": time_epochs(tensor_slices, repeats),
        # What `run_plain` does: a gather (copy) per batch.
        "tensor_shuffled_gather": time_epochs(
            lambda: shuffled_batches(x, y, batch_size, generator), repeats
        ),
        "dataloader_shuffled": time_epochs(lambda: loader, repeats),
        "ray_iter_torch_batches": time_epochs(
            lambda: dataset.iter_torch_batches(batch_size=batch_size), repeats
        ),
        "ray_iter_torch_batches_local_shuffle": time_epochs(
            lambda: dataset.iter_torch_batches(
                batch_size=batch_size, local_shuffle_buffer_size=4 * batch_size
            ),
            repeats,
        ),
    }


# --- report ---------------------------------------------------------------------------------


def print_table(results: dict[str, Any]) -> None:
    plain, ray_run, in_memory = results["plain"], results["ray"], results["ray_in_memory"]
    it = results["iteration_seconds"]

    def ms(key: str) -> str:
        return f"{1000 * it[key]:.2f}"

    rows = [
        ("plain epoch s", f"{plain['steady_epoch_seconds']:.3f}"),
        ("ray epoch s (Ray Data)", f"{ray_run['steady_epoch_seconds']:.3f}"),
        ("ratio ray/plain", f"{results['ratio_ray_over_plain']:.3f}"),
        ("ray epoch s (in-memory data)", f"{in_memory['steady_epoch_seconds']:.3f}"),
        ("ratio ray in-memory/plain", f"{results['ratio_ray_in_memory_over_plain']:.3f}"),
        ("ray fixed start-up s (fit - epochs)", f"{ray_run['fixed_seconds']:.2f}"),
        ("  fit() -> train fn entered", f"{ray_run['fit_to_worker_entered_seconds']:.2f}"),
        ("  fit() -> first epoch starts", f"{ray_run['fit_to_first_epoch_seconds']:.2f}"),
        (
            "  last epoch ends -> fit() returns",
            f"{ray_run['last_epoch_to_fit_return_seconds']:.2f}",
        ),
        ("ray fixed s, in-memory run", f"{in_memory['fixed_seconds']:.2f}"),
        ("ray.init s", f"{results['ray_init_seconds']:.2f}"),
        ("build + materialize dataset s", f"{results['dataset_seconds']:.2f}"),
        ("iteration ms/epoch: tensor slicing", ms("tensor_slicing")),
        ("iteration ms/epoch: shuffled gather", ms("tensor_shuffled_gather")),
        ("iteration ms/epoch: DataLoader", ms("dataloader_shuffled")),
        ("iteration ms/epoch: iter_torch_batches", ms("ray_iter_torch_batches")),
        ("iteration ms/epoch: + local shuffle", ms("ray_iter_torch_batches_local_shuffle")),
        ("iteration ratio ray/slicing", f"{results['iteration_ratio_ray_over_slicing']:.0f}"),
        ("iteration ratio ray/DataLoader", f"{results['iteration_ratio_ray_over_dataloader']:.2f}"),
    ]
    width = max(len(name) for name, _ in rows)
    print(
        f"\n{EXPERIMENT}: {results['samples']} samples, {results['epochs']} epochs, "
        f"batch {results['batch_size']}; steady = median of epochs after the first"
    )
    for name, seconds in [
        ("plain before Ray", plain["epoch_seconds_before_ray"]),
        ("plain after Ray", plain["epoch_seconds_after_ray"]),
        ("ray, Ray Data", ray_run["epoch_seconds"]),
        ("ray, in-memory", in_memory["epoch_seconds"]),
    ]:
        print(f"  {name + ' epochs s:':<28}{', '.join(f'{s:.2f}' for s in seconds)}")
    for name, value in rows:
        print(f"  {name:<{width}}  {value:>8}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=4, help="epochs per side (default 4)")
    parser.add_argument(
        "--samples", type=int, default=None, help="use only the first N digits (default: all)"
    )
    parser.add_argument(
        "--iter-repeats", type=int, default=5, help="timed passes per iteration source"
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON results file")
    args = parser.parse_args()
    if args.epochs < 1 or (args.samples is not None and args.samples < 1):
        parser.error("--epochs and --samples must be positive")
    return args


def main() -> None:
    args = parse_args()
    load_before = os.getloadavg()
    torch.set_num_threads(1)  # the plain side gets what one Ray worker with 1 CPU gets
    with tempfile.TemporaryDirectory(prefix="lamina-bench-data-") as scratch:
        config, images, labels = load_config_and_data(args.samples, Path(scratch))
    batch_size = config.train.batch_size
    print(f"plain PyTorch: {len(images)} samples, {args.epochs} epochs ...", flush=True)
    plain_before, losses_before = run_plain(config, images, labels, args.epochs)

    import ray
    import ray.data

    os.environ.update(QUIET_RAY_DATA)
    # As every Lamina stage runs a Ray of its own (lamina.cluster.ray_runtime.init_ray).
    for name, value in ONE_MACHINE_RAY_ENV.items():
        os.environ.setdefault(name, value)
    started = time.perf_counter()
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        logging_level=logging.WARNING,
        runtime_env={"env_vars": QUIET_RAY_DATA},
    )
    ray_init_seconds = time.perf_counter() - started
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        started = time.perf_counter()
        dataset = to_ray_dataset(images, labels)
        dataset_seconds = time.perf_counter() - started
        print("data iteration only ...", flush=True)
        iteration = time_iteration(images, labels, dataset, batch_size, args.iter_repeats)
        print(f"Ray Train, Ray Data: 1 worker x 1 CPU, {args.epochs} epochs ...", flush=True)
        ray_run = run_ray_train(config, args.epochs, dataset=dataset)
        print(f"Ray Train, in-memory data: {args.epochs} epochs ...", flush=True)
        in_memory = run_ray_train(config, args.epochs, arrays=(images, labels))
    finally:
        ray.shutdown()
    print(f"plain PyTorch again: {args.epochs} epochs ...", flush=True)
    plain_after, losses_after = run_plain(config, images, labels, args.epochs)

    plain_steady = statistics.median(plain_before[1:] + plain_after[1:] or plain_before)
    for run in (ray_run, in_memory):
        run["steady_epoch_seconds"] = steady_state(run["epoch_seconds"])
    results = {
        "experiment": EXPERIMENT,
        "epochs": args.epochs,
        "samples": len(images),
        "batch_size": batch_size,
        "optimizer": config.train.optimizer,
        "torch_threads": 1,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "ray": ray.__version__,
        },
        "cpu_count": os.cpu_count(),
        "load_average_before_after": [load_before[0], os.getloadavg()[0]],
        "plain": {
            "epoch_seconds_before_ray": plain_before,
            "epoch_seconds_after_ray": plain_after,
            "loss_before_ray": losses_before,
            "loss_after_ray": losses_after,
            "steady_epoch_seconds": plain_steady,
        },
        "ray": ray_run,
        "ray_in_memory": in_memory,
        "ratio_ray_over_plain": ray_run["steady_epoch_seconds"] / plain_steady,
        "ratio_ray_in_memory_over_plain": in_memory["steady_epoch_seconds"] / plain_steady,
        "ray_init_seconds": ray_init_seconds,
        "dataset_seconds": dataset_seconds,
        "iteration_seconds": iteration,
        "iteration_ratio_ray_over_slicing": (
            iteration["ray_iter_torch_batches"] / iteration["tensor_slicing"]
        ),
        "iteration_ratio_ray_over_dataloader": (
            iteration["ray_iter_torch_batches"] / iteration["dataloader_shuffled"]
        ),
    }
    print_table(results)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
