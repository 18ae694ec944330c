"""How long a stage's process takes to exit once its work is done, with and without
`lamina.entrypoint.exit_on_user_error` freezing the garbage collector first.

What runs (nothing else should be busy on the machine): `--repeats` times each, alternating,
a child process that imports what a training or registering stage imports (torch, MLflow,
`ray.train.torch`, Lamina's training driver), builds the `cnn-mnist` model, then returns from
its main function either plainly or through `exit_on_user_error`. Each child prints the time
when its last exit handler runs; the parent notes when the process is gone.

How to read the results:

- `exit s`: the median time from the last exit handler to the end of the process: the
  interpreter tearing down modules and collecting garbage. Every DVC stage pays it once, so
  `make run` pays it 42 times.
- `ratio lamina/plain`: below 1 means the frozen exit is faster; `saved per stage s` is the
  difference of the medians.

Usage: `.venv/bin/python bench/stage_exit.py [--repeats 5]` (about a minute on 2 cores);
results are printed and written as JSON to `bench/results/stage_exit.json`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = ROOT / "bench" / "results" / "stage_exit.json"

# The child: `sys.argv[1]` is "plain" or "lamina". Exit handlers run last-registered first, so
# the one registered first prints after all the others (MLflow's, Ray's, logging's) are done.
CHILD = """
import atexit, sys, time
from pathlib import Path
atexit.register(lambda: print(f"LAST_EXIT_HANDLER {time.time():.4f}", flush=True))

import mlflow  # noqa: F401
import ray.train.torch  # noqa: F401
import torch  # noqa: F401

import lamina.training.driver  # noqa: F401
from lamina.config.compose import compose_experiment
from lamina.entrypoint import exit_on_user_error
from lamina.models import build_model


def main():
    build_model(compose_experiment("cnn-mnist", Path("conf")))


if sys.argv[1] == "lamina":
    exit_on_user_error(main, "bench")
else:
    main()
"""


def exit_seconds(variant: str) -> float:
    """Seconds from the child's last exit handler to the end of its process."""
    child = subprocess.run(
        [sys.executable, "-c", CHILD, variant],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    gone = time.time()
    last_handler = float(child.stdout.split("LAST_EXIT_HANDLER ")[1].split()[0])
    return gone - last_handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()

    seconds: dict[str, list[float]] = {"plain": [], "lamina": []}
    for repeat in range(args.repeats):
        for variant in seconds:
            seconds[variant].append(exit_seconds(variant))
        print(
            f"repeat {repeat + 1}/{args.repeats}: exit plain {seconds['plain'][-1]:.2f} s, "
            f"lamina {seconds['lamina'][-1]:.2f} s",
            flush=True,
        )
    plain, lamina = (statistics.median(seconds[v]) for v in ("plain", "lamina"))
    results = {
        "repeats": args.repeats,
        "exit_s": {"plain": plain, "lamina": lamina},
        "all_exit_s": seconds,
        "ratio_lamina_over_plain": lamina / plain,
        "saved_per_stage_s": plain - lamina,
    }
    print(
        f"exit s (median): plain {plain:.2f}, lamina {lamina:.2f}; "
        f"ratio lamina/plain {lamina / plain:.2f}; saved per stage {plain - lamina:.2f} s"
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
