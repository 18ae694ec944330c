"""ASHA against no early stopping: the same trials, how many epochs each needs to find the best.

One experiment's real search space (its `tune` section, or `--space conf/tune/<model>.yaml`
for an experiment that does not search by default), run twice through
`lamina.tuning.search.run_search`, the code the `tune` stage runs:

1. scheduler `asha`: weak trials stop at the rungs (grace period, then x reduction factor);
2. scheduler `fifo`: every trial trains `max_epochs_per_trial` epochs (no early stopping, and
   the experiment's own early stopping switched off for both runs).

Both use the random searcher with the same seed, so both runs train exactly the same sampled
configurations and the comparison isolates the scheduler. Printed: total epochs trained, wall
time and the best validation metric of each, and the ratios. Goal (issue 4): ASHA's best within
1% of the no-stopping best with at most 40% of its epochs.

Both searches optimise `--metric` (default `val/accuracy`, the metric a classifier's registry
gate and bars use) instead of the preset's early-stopping monitor; `--metric val/loss --mode
min` judges by loss, a far stricter 1% (relative to a loss near 0.18).

Needs the experiment's preprocessed features (`make run`, or `dvc repro preprocess@NAME`).
Tracking goes to a throwaway SQLite store. Usage:
`.venv/bin/python bench/tune_efficiency.py [--experiment mlp-mnist] [--space FILE] [--trials 16]
[--epochs 9] [--metric val/accuracy --mode max]` (the defaults: conf/tune/mlp.yaml's space;
about 10 minutes on 2 cores).
Results: printed, and written to `bench/results/tune_efficiency.json`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import yaml

from lamina.config.compose import load_resolved_config, with_overrides
from lamina.config.paths import ExperimentPaths
from lamina.config.schema import ExperimentConfig
from lamina.features import kind_for

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "tune_efficiency.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--experiment", default="mlp-mnist")
    parser.add_argument(
        "--space",
        type=Path,
        help="a conf/tune/ file; default: the experiment's own `tune` section, else "
        "conf/tune/<model kind>.yaml",
    )
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=9, help="max epochs per trial")
    parser.add_argument("--metric", default="val/accuracy", help="what both searches optimise")
    parser.add_argument("--mode", choices=("max", "min"), default="max")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    source = ExperimentPaths(args.experiment, REPO)
    config = load_resolved_config(source.config)
    space = args.space
    if space is None and config.tune is None:
        space = REPO / "conf" / "tune" / f"{config.model.kind}.yaml"
    if space is not None:
        search = yaml.safe_load(space.read_text())
        config = ExperimentConfig.model_validate({**config.model_dump(mode="json"), "tune": search})
    if config.tune is None:
        raise SystemExit(f"{args.experiment} has no `tune` section; pass --space")
    if not source.features.is_dir():
        raise SystemExit(
            f"{source.features}: not found; run `dvc repro preprocess@{args.experiment}`"
        )

    with tempfile.TemporaryDirectory(prefix="lamina-tune-bench-") as scratch:
        root = Path(scratch)
        paths = ExperimentPaths(args.experiment, root)
        shutil.copytree(source.features, paths.features)
        shutil.copy(source.preprocessor, paths.preprocessor)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
        vocab = kind_for(config).vocabulary(paths.preprocessor)

        runs = {}
        for scheduler in ("asha", "fifo"):
            tuned = with_overrides(
                config,
                {
                    "tune.scheduler": scheduler,
                    "tune.searcher": "random",
                    "tune.num_trials": args.trials,
                    "tune.max_epochs_per_trial": args.epochs,
                    # Only the scheduler may stop a trial early here.
                    "train.early_stopping.patience": args.epochs + 1,
                    "train.early_stopping.monitor": args.metric,
                    "train.early_stopping.mode": args.mode,
                },
            )
            from lamina.tuning.search import forget_search, run_search

            started = time.perf_counter()
            outcome = run_search(tuned, paths, vocab)
            wall = time.perf_counter() - started
            forget_search(tuned, paths)
            runs[scheduler] = {
                "epochs_trained": int(outcome.trials["epochs"].sum()),
                "wall_s": round(wall, 1),
                "best_value": outcome.best_value,
                "best_trial": outcome.best_trial,
                "epochs_per_trial": outcome.trials["epochs"].tolist(),
            }

    monitor, mode = args.metric, args.mode
    fifo, asha = runs["fifo"], runs["asha"]
    # "Within 1%": relative gap of ASHA's best to the no-stopping best, in the metric's direction.
    gap = (asha["best_value"] - fifo["best_value"]) / abs(fifo["best_value"])
    if mode == "max":
        gap = -gap
    summary = {
        "experiment": args.experiment,
        "metric": monitor,
        "mode": mode,
        "trials": args.trials,
        "max_epochs_per_trial": args.epochs,
        "runs": runs,
        "epoch_ratio_asha_over_fifo": round(asha["epochs_trained"] / fifo["epochs_trained"], 3),
        "wall_ratio_asha_over_fifo": round(asha["wall_s"] / fifo["wall_s"], 3),
        "best_gap_relative": round(gap, 4),  # > 0: ASHA's best is worse by this fraction
        "goal_met": gap <= 0.01 and asha["epochs_trained"] <= 0.4 * fifo["epochs_trained"],
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    print(f"\n{args.experiment}: {args.trials} trials, up to {args.epochs} epochs, by {monitor}")
    for name, run in runs.items():
        print(
            f"  {name:5s} epochs {run['epochs_trained']:4d}  wall {run['wall_s']:7.1f} s  "
            f"best {run['best_value']:.4f} (trial {run['best_trial']})"
        )
    print(
        f"  asha/fifo: epochs {summary['epoch_ratio_asha_over_fifo']:.2f}, "
        f"wall {summary['wall_ratio_asha_over_fifo']:.2f}, best worse by {gap:+.2%}; "
        f"goal (<= 1% worse, <= 40% epochs) {'met' if summary['goal_met'] else 'NOT met'}"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"written to {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
