"""Scaling out: training throughput with 1 and 2 Ray Train workers on a two-node Ray cluster,
and the fixed cost of submitting a job to it.

What runs, in one process (nothing else should be busy on the machine):

1. A two-node Ray cluster on 127.0.0.1 (`lamina.cluster.local_ray`: two `ray start` nodes, 2
   logical CPUs each), the same kind the cluster tests use.
2. The real `train` driver (`lamina.training.driver.run_training`: MLflow run, Ray Data
   features, TorchTrainer) of one experiment (default `cnn-mnist`, its preprocessed features
   from `make run`), connected to that cluster through RAY_ADDRESS: first 1 worker, then 2
   workers placed SPREAD (one per node), each holding 1 CPU, same epochs and batch size.
   Throughput is training rows / the median epoch time after the first epoch.
3. `lamina submit -- python -c pass` a few times: wall time from the command's start to its
   exit, what a user pays per job before any work (upload of the repository, job driver
   start-up, log streaming).

On this machine both "nodes" share 2 physical cores, so 2 workers can at best double the
throughput of 1; on real nodes each brings its own cores. Writes bench/results/scaling.json.
Usage: `.venv/bin/python bench/scaling.py [--experiment cnn-mnist] [--epochs 4]`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def train_throughput(experiment: str, workers: int, epochs: int, cluster) -> dict:
    import ray

    from lamina.config.compose import compose_experiment
    from lamina.config.paths import ExperimentPaths
    from lamina.features import kind_for
    from lamina.training.driver import run_training

    config = compose_experiment(experiment, ROOT / "conf")
    cluster_settings = config.cluster.model_copy(
        update={"num_workers": workers, "cpus_per_worker": 1, "placement_strategy": "SPREAD"}
    )
    stopping = config.train.early_stopping.model_copy(update={"patience": epochs})
    train = config.train.model_copy(update={"epochs": epochs, "early_stopping": stopping})
    config = config.model_copy(update={"cluster": cluster_settings, "train": train})
    paths = ExperimentPaths(experiment, ROOT)
    if not (paths.features / "train").is_dir():
        raise SystemExit(f"{paths.features}: no features; run `make run` (or dvc repro) first")
    vocabulary = kind_for(config).vocabulary(paths.preprocessor)

    started = time.perf_counter()
    outcome = run_training(config, paths, vocabulary)
    fit_seconds = time.perf_counter() - started
    ray.shutdown()
    epoch_seconds = list(outcome.history["epoch_seconds"])
    steady = statistics.median(epoch_seconds[1:]) if len(epoch_seconds) > 1 else epoch_seconds[0]
    import pyarrow.parquet as pq

    rows = pq.read_table(paths.features / "train").num_rows
    return {
        "workers": workers,
        "epoch_seconds": epoch_seconds,
        "steady_epoch_seconds": steady,
        "samples_per_second": rows / steady,
        "train_rows": rows,
        "fit_seconds": fit_seconds,
    }


def job_submission_seconds(cluster, repeats: int) -> list[float]:
    env = {**os.environ, **cluster.client_env}
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.pop("MLFLOW_TRACKING_URI", None)
    command = ["lamina", "submit", "--address", cluster.dashboard_url, "--", "python", "-c", "pass"]
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True)
        seconds.append(time.perf_counter() - started)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="cnn-mnist")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--submissions", type=int, default=3)
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    from lamina.cluster.local_ray import LocalCluster

    with tempfile.TemporaryDirectory(prefix="lamina-scaling-") as scratch:
        scratch = Path(scratch)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{scratch / 'mlflow.db'}"
        started = time.perf_counter()
        with LocalCluster(scratch / "cluster", nodes=(2, 2)) as cluster:
            cluster_start = time.perf_counter() - started
            print(f"two-node cluster up in {cluster_start:.1f} s ({cluster.dashboard_url})")
            os.environ.update(cluster.client_env)
            os.environ["RAY_ADDRESS"] = cluster.address
            runs = []
            for workers in (1, 2):
                run = train_throughput(args.experiment, workers, args.epochs, cluster)
                runs.append(run)
                print(
                    f"{workers} worker(s): {run['samples_per_second']:.0f} samples/s "
                    f"(epoch {run['steady_epoch_seconds']:.2f} s; fit {run['fit_seconds']:.1f} s)"
                )
            submissions = job_submission_seconds(cluster, args.submissions)
    ratio = runs[1]["samples_per_second"] / runs[0]["samples_per_second"]
    print(f"throughput 2 workers / 1 worker: {ratio:.2f}")
    print(
        "job submission fixed cost: "
        + ", ".join(f"{s:.1f}" for s in submissions)
        + f" s (median {statistics.median(submissions):.1f} s)"
    )
    results = {
        "experiment": args.experiment,
        "cpu_count": os.cpu_count(),
        "cluster_start_seconds": cluster_start,
        "runs": runs,
        "throughput_ratio_2_over_1": ratio,
        "job_submission_seconds": submissions,
        "job_submission_median_seconds": statistics.median(submissions),
    }
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "scaling.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
