"""The GPU path of the training loops: CUDA tensors, DDP over NCCL, bf16 autocast, pinned
batches, for every architecture. Runs only where a CUDA device exists (`-m gpu`).

The loops' own epoch functions run here, in one NCCL process group of one rank, on batches
served the way Ray Data's `iter_torch_batches` serves them (pinned, then copied to the
device); `test_ray_train_on_gpus` runs the same through Ray Train where Ray is installed.
"""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist

from lamina.config.compose import compose_experiment
from lamina.models import build_model
from lamina.models.dcgan import build_gan
from lamina.training import adversarial, loop
from lamina.training.distillation import TEACHER_LOGITS
from lamina.training.tasks import supervised_task
from tests.conftest import CONF_DIR, TensorBatches, pipeline_vars

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

VOCAB_SIZE = 500


def gpu_config(name: str):
    """The preset on the `gpu-cluster` settings (bf16, pinned memory, NCCL)."""
    import yaml

    cluster = yaml.safe_load((CONF_DIR / "cluster" / "gpu-cluster.yaml").read_text())
    config = compose_experiment(name, CONF_DIR)
    return config.model_copy(update={"cluster": config.cluster.model_validate(cluster)})


@pytest.fixture(scope="module")
def nccl_group():
    """A real NCCL process group (one rank), so DDP all-reduces through NCCL as on a cluster."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("nccl", rank=0, world_size=1, device_id=torch.device("cuda:0"))
    assert dist.get_backend() == "nccl"
    yield
    dist.destroy_process_group()


def _features(name: str, rows: int = 256) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    if name.endswith("mnist"):
        labels = torch.arange(rows) % 10
        # Class-dependent images, so there is something to learn.
        images = torch.randn(rows, 1, 28, 28, generator=generator) * 0.5
        images[:, 0, labels, labels] += 3.0
        return {"image": images, "label": labels}
    if name.endswith("sentiment"):
        labels = torch.arange(rows) % 2
        tokens = torch.randint(4, VOCAB_SIZE, (rows, 40), generator=generator)
        tokens[:, 0] = 2 + labels  # the first word gives the label away
        tokens[rows // 2 :, 30:] = 0  # padding
        return {"tokens": tokens, "label": labels}
    series = torch.sin(torch.arange(rows + 60, dtype=torch.float32) / 5.0)
    windows = torch.stack([series[i : i + 52] for i in range(rows)]).unsqueeze(-1)
    targets = torch.stack([series[i + 52 : i + 53] for i in range(rows)])
    return {"window": windows, "target": targets}


@pytest.mark.parametrize("name", pipeline_vars()["supervised"])
def test_supervised_epochs_learn_under_bf16_ddp(nccl_group, name):
    config = gpu_config(name)
    device = torch.device("cuda", 0)
    task = supervised_task(config)
    network = build_model(config, VOCAB_SIZE).to(device)
    model = torch.nn.parallel.DistributedDataParallel(network, device_ids=[0])
    optimizer = loop.make_optimizer(model, config)
    features = _features(name)
    if config.train.distillation is not None:  # the teacher's logits, as the driver adds them
        features[TEACHER_LOGITS] = torch.randn(len(features["label"]), 2)
    data = TensorBatches(features)

    # Autocast really runs the layers in bf16; the weights stay fp32.
    seen_dtypes = set()
    # The output layer: attention's own projections are not called as modules.
    head = [m for m in network.modules() if isinstance(m, torch.nn.Linear)][-1]
    handle = head.register_forward_hook(lambda _m, _i, out: seen_dtypes.add(out.dtype))
    generator = torch.Generator().manual_seed(0)
    losses = [
        loop._train_one_epoch(model, optimizer, data, task, config, device, generator, epoch)
        for epoch in range(4)
    ]
    handle.remove()
    assert seen_dtypes == {torch.bfloat16}
    assert all(p.dtype == torch.float32 and p.is_cuda for p in network.parameters())
    assert all(torch.isfinite(torch.tensor(losses))), losses
    assert losses[-1] < losses[0], losses

    metrics = loop._validate(model, data, task, config, device)
    assert set(metrics) >= {"val/loss"}
    assert all(value == value for value in metrics.values())


def test_gan_epoch_under_bf16_ddp(nccl_group):
    config = gpu_config("gan-mnist")
    device = torch.device("cuda", 0)
    generator_net, discriminator_net = (net.to(device) for net in build_gan(config))
    generator = torch.nn.parallel.DistributedDataParallel(generator_net, device_ids=[0])
    discriminator = torch.nn.parallel.DistributedDataParallel(discriminator_net, device_ids=[0])
    optimizer_g = torch.optim.Adam(generator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    optimizer_d = torch.optim.Adam(discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    images = _features("gan-mnist")["image"].clamp(-1, 1)
    before = [p.detach().clone() for p in generator_net.parameters()]

    metrics = adversarial._train_one_epoch(
        generator,
        discriminator,
        optimizer_g,
        optimizer_d,
        TensorBatches({"image": images}),
        config,
        device,
        torch.Generator().manual_seed(0),
    )
    assert all(value == value for value in metrics.values()), metrics
    assert 0.0 < metrics["train/d_real"] < 1.0 and 0.0 < metrics["train/d_fake"] < 1.0
    after = list(generator_net.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))


def test_ray_train_on_gpus(tmp_path):
    """The whole driver on the GPU: Ray Train gives each worker a GPU and NCCL joins them."""
    pytest.importorskip("ray")  # the device image used for checks here has no Ray
    import ray
    import ray.train
    import ray.train.torch
    from ray.train.torch import TorchTrainer

    workers = torch.cuda.device_count()
    config = gpu_config("cnn-mnist")
    config = config.model_copy(
        update={
            "cluster": config.cluster.model_copy(update={"num_workers": workers}),
            "train": config.train.model_copy(update={"epochs": 1}),
        }
    )
    features = _features("cnn-mnist")

    def per_worker(_):
        device = ray.train.torch.get_device()
        assert device.type == "cuda"
        assert dist.get_backend() == "nccl"
        model = ray.train.torch.prepare_model(build_model(config))
        optimizer = loop.make_optimizer(model, config)
        task = supervised_task(config)
        loss = loop._train_one_epoch(
            model,
            optimizer,
            TensorBatches(features),
            task,
            config,
            device,
            torch.Generator().manual_seed(0),
            0,  # epoch
        )
        ray.train.report({"loss": loss})

    ray.init(address="local", num_gpus=workers, include_dashboard=False)
    try:
        result = TorchTrainer(
            per_worker,
            torch_config=ray.train.torch.TorchConfig(backend=config.cluster.ddp_backend),
            scaling_config=ray.train.ScalingConfig(num_workers=workers, use_gpu=True),
            run_config=ray.train.RunConfig(storage_path=str(tmp_path)),
        ).fit()
    finally:
        ray.shutdown()
    assert result.error is None and result.metrics["loss"] == result.metrics["loss"]
