"""Typed experiment configuration, composed from the groups in `conf/`.

An experiment preset (`conf/experiment/<name>.yaml`) picks one option per group in its
`defaults` mapping (e.g. `model: cnn` -> `conf/model/cnn.yaml`) and overrides only the keys that
differ. `compose_experiment` merges them and validates the result into `ExperimentConfig`, so a
typo, a wrong type or an impossible value fails here, naming the file and the key, before any
data is read or Ray starts.

The `configure` DVC stage writes the validated config to `outputs/<name>/config.yaml`; every
later stage reads that file and declares in `dvc.yaml` the exact sections it uses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lamina.errors import ConfigError

# Groups a preset may choose from, in the order they are merged.
CONFIG_GROUPS = ("data", "model", "train", "cluster")

Activation = Literal["relu", "gelu", "tanh", "sigmoid", "leaky_relu"]
Fraction = Annotated[float, Field(gt=0.0, lt=1.0)]


class _Strict(BaseModel):
    """Unknown keys are errors: a misspelt option must not be silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Strict):
    """Raw image arrays under `path`: `images.npy` (N, H, W) uint8 and `labels.npy` (N,) int."""

    path: str
    image_shape: tuple[Annotated[int, Field(gt=0)], Annotated[int, Field(gt=0)]]
    class_names: list[str] = Field(min_length=2)
    # Stratified subsample taken before splitting; for quick runs and tests.
    max_samples: Annotated[int, Field(gt=0)] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


class SplitConfig(_Strict):
    val_fraction: Fraction = 0.1
    test_fraction: Fraction = 0.1
    seed: int = 0

    @model_validator(mode="after")
    def _leaves_training_data(self) -> SplitConfig:
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError("val_fraction + test_fraction must leave at least 10% for training")
        return self


class PreprocessConfig(_Strict):
    # Pixel standardisation with one mean and std fitted on the training split.
    method: Literal["standardize"] = "standardize"


class CNNConfig(_Strict):
    kind: Literal["cnn"] = "cnn"
    channels: list[Annotated[int, Field(gt=0)]] = Field(min_length=1, max_length=4)
    hidden_size: Annotated[int, Field(gt=0)] = 128
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.25
    activation: Activation = "relu"
    batch_norm: bool = True


ModelConfig = Annotated[CNNConfig, Field(discriminator="kind")]


class EarlyStoppingConfig(_Strict):
    monitor: str = "val/accuracy"
    mode: Literal["min", "max"] = "max"
    patience: Annotated[int, Field(gt=0)] = 4


class AugmentConfig(_Strict):
    """Random affine jitter of training images; off when both are zero."""

    max_shift_px: Annotated[float, Field(ge=0.0)] = 0.0
    max_rotation_deg: Annotated[float, Field(ge=0.0, le=180.0)] = 0.0


class TrainConfig(_Strict):
    epochs: Annotated[int, Field(gt=0)]
    batch_size: Annotated[int, Field(gt=0)] = 64
    optimizer: Literal["adam", "adamw", "sgd"] = "adamw"
    lr: Annotated[float, Field(gt=0.0)] = 1e-3
    weight_decay: Annotated[float, Field(ge=0.0)] = 0.0
    lr_schedule: Literal["constant", "cosine"] = "cosine"
    early_stopping: EarlyStoppingConfig = EarlyStoppingConfig()
    augment: AugmentConfig = AugmentConfig()
    seed: int = 0


class ClusterConfig(_Strict):
    """Where and how wide training runs. `RAY_ADDRESS` in the environment overrides `address`."""

    address: str | None = None
    num_workers: Annotated[int, Field(gt=0)] = 2
    use_gpu: bool = False
    # Fractional CPUs leave room for Ray Data: workers holding every CPU make training hang.
    cpus_per_worker: Annotated[float, Field(gt=0.0)] = 0.5
    # Logical CPUs and object store of the local Ray that a stage starts when no address is set.
    local_num_cpus: Annotated[int, Field(gt=0)] | None = None
    local_object_store_mb: Annotated[int, Field(ge=80)] = 512
    max_failures: Annotated[int, Field(ge=0)] = 0


class RegistryConfig(_Strict):
    """Which test metric decides the `champion` alias, and by how much a version must win."""

    primary_metric: str = "test/accuracy"
    greater_is_better: bool = True
    promotion_margin: Annotated[float, Field(ge=0.0)] = 0.0


class ExperimentConfig(_Strict):
    name: str
    data: DataConfig
    split: SplitConfig = SplitConfig()
    preprocess: PreprocessConfig = PreprocessConfig()
    model: ModelConfig
    train: TrainConfig
    cluster: ClusterConfig = ClusterConfig()
    registry: RegistryConfig = RegistryConfig()


def _read_yaml_mapping(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc.__class__.__name__}: {exc})") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping of keys, got {type(loaded).__name__}")
    return loaded


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _format_validation_error(source: Path, error: ValidationError) -> str:
    problems = []
    for item in error.errors():
        # Drop the discriminator tag pydantic inserts into union paths (model.cnn.x -> model.x).
        location = [str(part) for part in item["loc"] if part not in ("cnn",)]
        key = ".".join(location) or "<root>"
        given = item.get("input")
        shown = "" if isinstance(given, dict) or item["type"] == "missing" else f" (got {given!r})"
        problems.append(f"{key}: {item['msg']}{shown}")
    return f"{source}: invalid config: " + "; ".join(problems)


def available_experiments(conf_dir: Path) -> list[str]:
    return sorted(path.stem for path in (conf_dir / "experiment").glob("*.yaml"))


def compose_experiment(name: str, conf_dir: Path) -> ExperimentConfig:
    """Merge the preset `conf/experiment/<name>.yaml` over its chosen groups and validate."""
    preset_path = conf_dir / "experiment" / f"{name}.yaml"
    if not preset_path.is_file():
        known = ", ".join(available_experiments(conf_dir)) or "none"
        raise ConfigError(f"{preset_path}: no such experiment preset (known: {known})")
    preset = _read_yaml_mapping(preset_path)

    choices = preset.pop("defaults", {})
    if not isinstance(choices, dict):
        raise ConfigError(f"{preset_path}: 'defaults' must map group -> option, e.g. model: cnn")
    unknown_groups = sorted(set(choices) - set(CONFIG_GROUPS))
    if unknown_groups:
        raise ConfigError(
            f"{preset_path}: defaults.{unknown_groups[0]}: unknown config group "
            f"(groups: {', '.join(CONFIG_GROUPS)})"
        )

    composed: dict[str, Any] = {"name": name}
    for group in CONFIG_GROUPS:
        option = choices.get(group)
        if option is None:
            continue
        group_path = conf_dir / group / f"{option}.yaml"
        if not group_path.is_file():
            options = sorted(p.stem for p in (conf_dir / group).glob("*.yaml"))
            raise ConfigError(
                f"{preset_path}: defaults.{group}: no option '{option}' "
                f"(available in {conf_dir / group}: {', '.join(options) or 'none'})"
            )
        composed[group] = _read_yaml_mapping(group_path)
    composed = _deep_merge(composed, preset)

    try:
        return ExperimentConfig.model_validate(composed)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(preset_path, exc)) from None


def load_resolved_config(path: Path) -> ExperimentConfig:
    """Read a config written by the `configure` stage (already composed; validated again)."""
    if not path.is_file():
        raise ConfigError(
            f"{path}: resolved config not found; run `dvc repro` (its `configure` stage writes it)"
        )
    try:
        return ExperimentConfig.model_validate(_read_yaml_mapping(path))
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(path, exc)) from None


def dump_config(config: ExperimentConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def flatten_config(config: ExperimentConfig) -> dict[str, str]:
    """`{"train.lr": "0.001", ...}`: the form MLflow params need (pitfall: nested dicts)."""
    flat: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else key, inner)
        else:
            flat[prefix] = str(value)

    walk("", config.model_dump(mode="json"))
    return flat
