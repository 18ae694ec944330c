"""bf16 autocast against fp32 on one GPU: the same model, batch and optimizer steps, timed side
by side for each architecture, as `cluster.precision` switches them in the training loop.

Prints ms per training step and the fp32 / bf16 ratio; writes bench/results/gpu_precision.json.
Needs a CUDA device (exits 2 without one). Synthetic batches: this times the step, not data.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from lamina.config.compose import compose_experiment  # noqa: E402
from lamina.models import build_model  # noqa: E402
from lamina.training.loop import make_optimizer  # noqa: E402
from lamina.training.scaffold import autocast  # noqa: E402
from lamina.training.tasks import supervised_task  # noqa: E402

VOCAB_SIZE = 20_000
CONF_DIR = ROOT / "conf"


def batch_for(name: str, size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    if name.endswith("mnist"):
        return torch.randn(size, 1, 28, 28, device=device), torch.randint(
            0, 10, (size,), device=device
        )
    if name.endswith("sentiment"):
        tokens = torch.randint(2, VOCAB_SIZE, (size, 64), device=device)
        return tokens, torch.randint(0, 2, (size,), device=device)
    return torch.randn(size, 52, 1, device=device), torch.randn(size, 1, device=device)


def ms_per_step(name: str, precision: str, batch_size: int, steps: int) -> float:
    config = compose_experiment(name, CONF_DIR)
    config = config.model_copy(
        update={"cluster": config.cluster.model_copy(update={"precision": precision})}
    )
    device = torch.device("cuda", 0)
    torch.manual_seed(0)
    model = build_model(config, VOCAB_SIZE).to(device).train()
    optimizer = make_optimizer(model, config)
    task = supervised_task(config)
    inputs, targets = batch_for(name, batch_size, device)

    def step() -> None:
        with autocast(config, device):
            loss = task.loss(model(inputs), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(10):  # warm-up: cuDNN autotuning, allocator
        step()
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return (time.perf_counter() - started) / steps * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu_precision: no CUDA device here", file=sys.stderr)
        raise SystemExit(2)

    results = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "models": {}}
    print(f"{results['device']}, batch {args.batch_size}, {args.steps} timed steps")
    for name in ("cnn-mnist", "mlp-mnist", "lstm-sentiment", "transformer-sentiment", "gru-co2"):
        fp32 = ms_per_step(name, "fp32", args.batch_size, args.steps)
        bf16 = ms_per_step(name, "bf16", args.batch_size, args.steps)
        results["models"][name] = {"fp32_ms": fp32, "bf16_ms": bf16, "fp32_over_bf16": fp32 / bf16}
        print(f"{name:24s} fp32 {fp32:7.2f} ms  bf16 {bf16:7.2f} ms  ratio {fp32 / bf16:5.2f}")
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "gpu_precision.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
