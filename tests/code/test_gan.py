"""The DCGAN pair, its classifier-judged metrics, and one real Ray Train run of its loop."""

import uuid

import numpy as np
import pytest
import torch

from lamina.config.schema import ExperimentConfig
from lamina.errors import ConfigError
from lamina.evaluation.gan_metrics import (
    frechet_distance,
    gan_test_metrics,
    judge_features,
    plot_sample_grid,
)
from lamina.models.cnn import ConvNet
from lamina.models.dcgan import Discriminator, Generator, build_gan
from lamina.tracking.training_runs import TrackedRun
from lamina.training.context import TrainingRunContext
from lamina.training.scaffold import CHECKPOINT_FILE


def gan_config(**train: object) -> ExperimentConfig:
    return ExperimentConfig.model_validate(
        {
            "name": "gan-test",
            "data": {
                "kind": "images",
                "path": "unused",
                "image_shape": [28, 28],
                "class_names": [str(digit) for digit in range(10)],
            },
            "preprocess": {"kind": "unit_range"},
            "model": {
                "kind": "dcgan",
                "latent_dim": 16,
                "generator_channels": 8,
                "discriminator_channels": 8,
            },
            "train": {"epochs": 1, "batch_size": 32, "lr": 2e-4, "adam_betas": [0.5, 0.999]}
            | train,
        }
    )


def small_judge() -> ConvNet:
    torch.manual_seed(0)
    return ConvNet((28, 28), 10, [8], 16, 0.25, "relu", True)


def test_generator_draws_images_in_tanh_range_and_discriminator_scores_each():
    generator, discriminator = Generator(16, 8, "relu"), Discriminator(8)
    images = generator(torch.randn(5, 16))
    assert images.shape == (5, 1, 28, 28)
    assert images.min() >= -1 and images.max() <= 1
    assert discriminator(images).shape == (5,)


def test_build_gan_reads_the_dcgan_config():
    generator, discriminator = build_gan(gan_config())
    assert generator.latent_dim == 16
    assert generator(torch.randn(2, 16)).shape == (2, 1, 28, 28)
    assert discriminator.net[0].out_channels == 8
    # DCGAN's initialisation: conv weights ~ N(0, 0.02), not PyTorch's default uniform.
    assert discriminator.net[2].weight.std().item() == pytest.approx(0.02, rel=0.1)


def test_build_gan_rejects_images_it_cannot_generate():
    config = gan_config()
    other_shape = config.model_copy(
        update={"data": config.data.model_copy(update={"image_shape": (32, 32)})}
    )
    with pytest.raises(ConfigError, match="28x28"):
        build_gan(other_shape)


def test_frechet_distance_is_zero_for_identical_sets_and_symmetric():
    features = np.random.default_rng(0).normal(size=(500, 6))
    assert frechet_distance(features, features) == pytest.approx(0.0, abs=1e-6)
    shifted = features + 1.0  # same covariance, mean moved by 1 in each of 6 dimensions
    assert frechet_distance(features, shifted) == pytest.approx(6.0, rel=1e-6)
    other = np.random.default_rng(1).normal(loc=0.5, scale=2.0, size=(500, 6))
    assert frechet_distance(features, other) > 0
    assert frechet_distance(features, other) == pytest.approx(
        frechet_distance(other, features), rel=1e-6
    )


def exact_gaussian_sample(mean: np.ndarray, std: np.ndarray, rows: int, seed: int) -> np.ndarray:
    """Rows whose sample mean and covariance are exactly `mean` and diag(std**2)."""
    noise = np.random.default_rng(seed).normal(size=(rows, len(mean)))
    orthonormal, _ = np.linalg.qr(noise - noise.mean(axis=0))  # centred, orthonormal columns
    return mean + np.sqrt(rows - 1) * orthonormal * std


def test_frechet_distance_matches_the_closed_form_for_diagonal_gaussians():
    mean_a, std_a = np.array([0.0, 1.0, -2.0]), np.array([1.0, 2.0, 0.5])
    mean_b, std_b = np.array([1.0, 1.0, 0.0]), np.array([3.0, 1.0, 0.5])
    a = exact_gaussian_sample(mean_a, std_a, 400, seed=0)
    b = exact_gaussian_sample(mean_b, std_b, 300, seed=1)
    # Diagonal covariances: ||mu_a - mu_b||^2 + sum((sigma_a - sigma_b)^2) = 5 + 5.
    expected = np.sum((mean_a - mean_b) ** 2) + np.sum((std_a - std_b) ** 2)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)


def test_judge_features_are_the_penultimate_layer_and_probabilities_sum_to_one():
    judge = small_judge()
    pixels = torch.randint(0, 256, (7, 1, 28, 28)).float()
    features, probabilities = judge_features(judge, 33.0, 78.0, pixels, batch_size=3)
    assert features.shape == (7, 16) and (features >= 0).all()  # after the hidden ReLU
    assert probabilities.shape == (7, 10)
    assert torch.allclose(probabilities.sum(dim=1), torch.ones(7))
    with torch.no_grad():
        direct = torch.softmax(judge((pixels - 33.0) / 78.0), dim=1)
    assert torch.allclose(probabilities, direct, atol=1e-6)


def test_gan_test_metrics_are_bounded_and_seeded():
    torch.manual_seed(0)
    generator = Generator(16, 8, "relu")
    real = np.random.default_rng(0).integers(0, 256, size=(60, 28, 28), dtype=np.uint8)
    metrics = gan_test_metrics(generator, small_judge(), 33.0, 78.0, real, num_samples=100)
    assert set(metrics) == {"test/fid", "test/min_class_share", "test/mean_confidence"}
    assert metrics["test/fid"] >= 0
    # The share of the rarest predicted class among 100 samples: k/100, at most 1/10 of them.
    share = metrics["test/min_class_share"]
    assert share <= 0.1 and share * 100 == pytest.approx(round(share * 100))
    assert 0.1 <= metrics["test/mean_confidence"] <= 1
    again = gan_test_metrics(generator, small_judge(), 33.0, 78.0, real[:, None], num_samples=100)
    assert again == metrics


def test_plot_sample_grid_writes_a_png(tmp_path):
    path = tmp_path / "grid.png"
    plot_sample_grid(torch.rand(10, 1, 28, 28) * 2 - 1, path, "ten samples")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_gan_trains_under_ray_train_with_checkpoint_and_mlflow_run(local_ray, tmp_path):
    import ray.data
    import ray.train
    from mlflow.tracking import MlflowClient
    from ray.train.torch import TorchTrainer

    from lamina.training.adversarial import train_gan_per_worker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment(
        "gan-test", artifact_location=(tmp_path / "artifacts").as_uri()
    )
    run_id = client.create_run(experiment_id).info.run_id
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, size=(200, 1, 28, 28)).astype(np.float32)
    dataset = ray.data.from_items([{"image": image, "label": 0} for image in images])

    context = TrainingRunContext(gan_config(), TrackedRun(uri, run_id))
    trainer = TorchTrainer(
        train_gan_per_worker,
        train_loop_config=context.as_loop_config(),
        scaling_config=ray.train.ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}),
        run_config=ray.train.RunConfig(
            name=f"gan-test-{uuid.uuid4().hex[:8]}", storage_path=str(tmp_path / "ray")
        ),
        datasets={"train": dataset, "val": dataset.materialize()},
        dataset_config=ray.train.DataConfig(datasets_to_split=["train"]),
    )
    result = trainer.fit()

    for key in ("epoch", "train/d_loss", "train/g_loss", "train/d_real", "train/d_fake"):
        assert key in result.metrics
    assert 0 < result.metrics["train/d_fake"] < result.metrics["train/d_real"] < 1
    with result.checkpoint.as_directory() as folder:
        state = torch.load(f"{folder}/{CHECKPOINT_FILE}", weights_only=True)
    assert state["epoch"] == 0 and state["mlflow_run_id"] == run_id
    assert state["model"].keys() == state["generator"].keys()
    generator, discriminator = build_gan(gan_config())
    generator.load_state_dict(state["generator"])
    discriminator.load_state_dict(state["discriminator"])
    assert state["optimizer_g"]["state"] and state["optimizer_d"]["state"]  # both took steps

    logged = client.get_run(run_id).data.metrics
    assert {"train/d_loss", "train/g_loss", "train/d_real", "train/d_fake"} <= logged.keys()
    assert [m.step for m in client.get_metric_history(run_id, "train/g_loss")] == [0]
    samples = [artifact.path for artifact in client.list_artifacts(run_id, "samples")]
    assert samples == ["samples/epoch_000.png"]
