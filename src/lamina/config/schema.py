"""The typed experiment configuration: one pydantic model per `conf/` group, checked together.

Unknown keys, wrong types and impossible values are errors; `ExperimentConfig` also checks that
the parts fit (preprocessing and model for the kind of data, a search space that can only
produce valid configs). Reading and composing the YAML files is `lamina.config.compose`.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from lamina.config.paths import plain_name_problem

# Groups a preset may choose from, in the order they are merged.
CONFIG_GROUPS = ("data", "model", "train", "cluster", "tune")

Activation = Literal["relu", "gelu", "tanh", "sigmoid", "leaky_relu"]
# Word vectors a text model's embedding layer can start from (lamina.models.pretrained), and
# their width: the layer needs at least that many columns.
PretrainedEmbeddings = Literal["none", "glove-6b-50d"]
PRETRAINED_EMBEDDING_WIDTH = {"glove-6b-50d": 50}
Fraction = Annotated[float, Field(gt=0.0, lt=1.0)]
Task = Literal["classification", "regression", "generation"]


def _plain_name(name: str) -> str:
    problem = plain_name_problem(name)
    if problem:
        raise ValueError(problem)
    return name


# A preset's name, which names its files under conf/ and outputs/.
ExperimentName = Annotated[str, AfterValidator(_plain_name)]


class _Strict(BaseModel):
    """Unknown keys are errors: a misspelt option must not be silently ignored. Floats are
    finite: YAML reads `.inf` and `.nan` as numbers, which no setting means."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class _DataKindConfig(_Strict):
    """What every kind of data declares beside its settings: which `preprocess.kind` and
    `model.kind` apply to it and what its models learn. The kind's code, which imports this
    module, is `lamina.features.<kind>`."""

    preprocess_kinds: ClassVar[frozenset[str]]
    model_kinds: ClassVar[frozenset[str]]
    task: ClassVar[Task]
    # Rows of different lengths (texts), which `train.length_buckets` can group.
    has_lengths: ClassVar[bool] = False


class ImageDataConfig(_DataKindConfig):
    """Raw image arrays under `path`: `images.npy` (N, H, W) uint8 and `labels.npy` (N,) int."""

    preprocess_kinds = frozenset({"standardize", "unit_range"})
    model_kinds = frozenset({"cnn", "mlp", "dcgan"})
    task = "classification"  # a GAN's `dcgan` model makes it "generation"

    kind: Literal["images"] = "images"
    path: str
    image_shape: tuple[Annotated[int, Field(gt=0)], Annotated[int, Field(gt=0)]]
    class_names: list[str] = Field(min_length=2)
    # Stratified subsample taken before splitting; for quick runs and tests.
    max_samples: Annotated[int, Field(gt=0)] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


class TextDataConfig(_DataKindConfig):
    """A CSV file of labelled texts: one column of text, one of class names."""

    preprocess_kinds = frozenset({"vocabulary"})
    model_kinds = frozenset({"rnn", "transformer"})
    task = "classification"
    has_lengths = True

    kind: Literal["text"] = "text"
    path: str
    text_column: str = "text"
    label_column: str = "label"
    class_names: list[str] = Field(min_length=2)
    max_samples: Annotated[int, Field(gt=0)] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


class SeriesDataConfig(_DataKindConfig):
    """A CSV file holding one numeric time series in order (one row per time step)."""

    preprocess_kinds = frozenset({"windows"})
    model_kinds = frozenset({"forecaster"})
    task = "regression"

    kind: Literal["series"] = "series"
    path: str
    time_column: str = "date"
    value_column: str = "value"


DataConfig = Annotated[
    ImageDataConfig | TextDataConfig | SeriesDataConfig, Field(discriminator="kind")
]


class SplitConfig(_Strict):
    """Classification data is split stratified and seeded; a series chronologically."""

    val_fraction: Fraction = 0.1
    test_fraction: Fraction = 0.1
    seed: int = 0

    @model_validator(mode="after")
    def _leaves_training_data(self) -> SplitConfig:
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError("val_fraction + test_fraction must leave at least 10% for training")
        return self


class StandardizeConfig(_Strict):
    """Images: one pixel mean and std fitted on the training split."""

    kind: Literal["standardize"] = "standardize"


class UnitRangeConfig(_Strict):
    """Images: pixels mapped linearly from [0, 255] to [-1, 1] (a GAN generator's tanh range)."""

    kind: Literal["unit_range"] = "unit_range"


class VocabularyConfig(_Strict):
    """Text: normalise, tokenise, a vocabulary fitted on train, ids padded to `max_length`."""

    kind: Literal["vocabulary"] = "vocabulary"
    max_vocab_size: Annotated[int, Field(ge=10)] = 20000
    min_frequency: Annotated[int, Field(ge=1)] = 2
    max_length: Annotated[int, Field(ge=4)] = 64
    lowercase: bool = True


class WindowsConfig(_Strict):
    """Series: scale fitted on the training part; `window` past values predict `horizon` ahead."""

    kind: Literal["windows"] = "windows"
    window: Annotated[int, Field(ge=2)] = 52
    horizon: Annotated[int, Field(ge=1)] = 1


PreprocessConfig = Annotated[
    StandardizeConfig | UnitRangeConfig | VocabularyConfig | WindowsConfig,
    Field(discriminator="kind"),
]


class CNNConfig(_Strict):
    kind: Literal["cnn"] = "cnn"
    channels: list[Annotated[int, Field(gt=0)]] = Field(min_length=1, max_length=4)
    hidden_size: Annotated[int, Field(gt=0)] = 128
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.25
    activation: Activation = "relu"
    batch_norm: bool = True


class MLPConfig(_Strict):
    kind: Literal["mlp"] = "mlp"
    hidden_sizes: list[Annotated[int, Field(gt=0)]] = Field(min_length=1)
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.2
    activation: Activation = "relu"


def _check_embedding_width(source: str, width: int, key: str) -> None:
    needed = PRETRAINED_EMBEDDING_WIDTH.get(source, 0)
    if width < needed:
        raise ValueError(f"{key} ({width}) is narrower than {source}'s {needed}-wide vectors")


class RNNConfig(_Strict):
    """Text classifier: embeddings -> LSTM or GRU -> pooled -> head."""

    kind: Literal["rnn"] = "rnn"
    cell: Literal["lstm", "gru"] = "lstm"
    embedding_dim: Annotated[int, Field(gt=0)] = 128
    hidden_size: Annotated[int, Field(gt=0)] = 128
    num_layers: Annotated[int, Field(gt=0)] = 1
    bidirectional: bool = True
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.3
    # In training, each real token becomes <unk> with this probability: the model cannot lean
    # on a few memorised words, and learns what to do with words it has never seen.
    word_dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    activation: Activation = "relu"
    pretrained_embeddings: PretrainedEmbeddings = "none"

    @model_validator(mode="after")
    def _room_for_pretrained_vectors(self) -> RNNConfig:
        _check_embedding_width(self.pretrained_embeddings, self.embedding_dim, "embedding_dim")
        return self


class TransformerConfig(_Strict):
    """Text classifier: embeddings + positions -> self-attention encoder -> pooled -> head."""

    kind: Literal["transformer"] = "transformer"
    d_model: Annotated[int, Field(gt=0)] = 128
    num_heads: Annotated[int, Field(gt=0)] = 4
    num_layers: Annotated[int, Field(gt=0)] = 2
    feedforward_dim: Annotated[int, Field(gt=0)] = 256
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.2
    activation: Activation = "gelu"
    pretrained_embeddings: PretrainedEmbeddings = "none"

    @model_validator(mode="after")
    def _heads_divide_width(self) -> TransformerConfig:
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by num_heads")
        _check_embedding_width(self.pretrained_embeddings, self.d_model, "d_model")
        return self


class ForecasterConfig(_Strict):
    """Series regressor: a window of past values -> GRU (or LSTM) -> the next value(s)."""

    kind: Literal["forecaster"] = "forecaster"
    cell: Literal["lstm", "gru"] = "gru"
    hidden_size: Annotated[int, Field(gt=0)] = 64
    num_layers: Annotated[int, Field(gt=0)] = 1
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    activation: Activation = "tanh"


class DCGANConfig(_Strict):
    """Generator (noise -> image) and discriminator (image -> real/fake), both convolutional."""

    kind: Literal["dcgan"] = "dcgan"
    latent_dim: Annotated[int, Field(gt=0)] = 64
    generator_channels: Annotated[int, Field(gt=0)] = 64
    discriminator_channels: Annotated[int, Field(gt=0)] = 64
    activation: Activation = "relu"
    # The classifier whose features score the generated digits (FID, class coverage).
    judge_experiment: ExperimentName = "cnn-mnist"


ModelConfig = Annotated[
    CNNConfig | MLPConfig | RNNConfig | TransformerConfig | ForecasterConfig | DCGANConfig,
    Field(discriminator="kind"),
]


class EarlyStoppingConfig(_Strict):
    monitor: str = "val/accuracy"
    mode: Literal["min", "max"] = "max"
    patience: Annotated[int, Field(gt=0)] = 4


class AugmentConfig(_Strict):
    """Random affine jitter of training images; off when both are zero."""

    max_shift_px: Annotated[float, Field(ge=0.0)] = 0.0
    max_rotation_deg: Annotated[float, Field(ge=0.0, le=180.0)] = 0.0


class DistillationConfig(_Strict):
    """Knowledge distillation (Hinton et al., 2015): besides the labels, the training split's
    rows are fitted to the predictions of another experiment's trained classifier, softened by
    `temperature`. The loss is (1 - weight) x cross-entropy with the labels + weight x T^2 x
    KL(teacher || student) at temperature T. The teacher predicts on this experiment's own
    training rows only, so it must have been trained on the same split, preprocessed alike."""

    teacher: ExperimentName  # an experiment (preset) name; its `train` stage must have run
    weight: Annotated[float, Field(gt=0.0, le=1.0)] = 0.5
    temperature: Annotated[float, Field(gt=0.0)] = 2.0


class TrainConfig(_Strict):
    epochs: Annotated[int, Field(gt=0)]
    batch_size: Annotated[int, Field(gt=0)] = 64
    optimizer: Literal["adam", "adamw", "sgd"] = "adamw"
    lr: Annotated[float, Field(gt=0.0)] = 1e-3
    weight_decay: Annotated[float, Field(ge=0.0)] = 0.0
    lr_schedule: Literal["constant", "cosine"] = "cosine"
    # Adam's (beta1, beta2); GANs train better with beta1 = 0.5.
    adam_betas: tuple[
        Annotated[float, Field(ge=0.0, lt=1.0)], Annotated[float, Field(ge=0.0, lt=1.0)]
    ] = (0.9, 0.999)
    gradient_clip_norm: Annotated[float, Field(gt=0.0)] | None = None
    # Text only: draw this many batches' worth of rows at a time, cut them into batches of
    # texts of similar length and train on those in random order (0: plain random batches).
    # A batch costs as much as its longest text, so this halves a Transformer's epoch on
    # short snippets (training.loop.length_buckets).
    length_buckets: Annotated[int, Field(ge=0)] = 0
    early_stopping: EarlyStoppingConfig = EarlyStoppingConfig()
    augment: AugmentConfig = AugmentConfig()
    # Classifiers only: also fit a trained teacher's predictions (null: the labels only).
    distillation: DistillationConfig | None = None
    seed: int = 0
    # GPUs only: deterministic kernels (cuDNN, cuBLAS), slower. On CPU the same seed, data and
    # config give identical metrics without it.
    deterministic: bool = False


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
    # How Ray places the workers: PACK fills one node first; SPREAD puts them on different
    # nodes where it can (STRICT_*: must, or the run waits for nodes).
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"
    # bf16: forward passes and losses under bf16 autocast (weights and optimizer stay fp32; no
    # loss scaling needed, unlike fp16). GPUs only; fast on those with bf16 units (Ampere on).
    precision: Literal["fp32", "bf16"] = "fp32"
    # Page-locked host memory for batches, so their copy to the GPU can overlap compute.
    pin_memory: bool = False
    # torch.distributed backend; null: Ray's choice (nccl with GPUs, gloo without).
    ddp_backend: Literal["nccl", "gloo"] | None = None
    # Where Ray Train keeps checkpoints while a run is in progress; null: under the repo's
    # `.lamina/`. On a multi-node cluster every node must reach it: a shared filesystem path
    # or a URI Ray reads (s3://, gs://), or a worker on another node cannot save its checkpoint.
    storage_path: str | None = None
    # Hold the preprocessed training split in Ray's object store (epochs then skip re-reading
    # Parquet: seconds per epoch on small data; the stage's process reads it to put it there);
    # false streams it from Parquet every epoch, for data larger than memory.
    materialize_train: bool = True

    @model_validator(mode="after")
    def _gpu_options_need_gpus(self) -> ClusterConfig:
        if not self.use_gpu:
            if self.pin_memory:
                raise ValueError("pin_memory speeds up copies to a GPU: set use_gpu: true too")
            if self.ddp_backend == "nccl":
                raise ValueError("ddp_backend nccl runs between GPUs: set use_gpu: true or gloo")
            # CPU autocast has no bf16 LSTM/GRU kernel (oneDNN refuses it), and gains little.
            if self.precision == "bf16":
                raise ValueError("precision bf16 is for GPUs: set use_gpu: true, or fp32")
        return self


class RegistryConfig(_Strict):
    """Which test metric decides the `champion` alias, and by how much a version must win."""

    primary_metric: str = "test/accuracy"
    greater_is_better: bool = True
    promotion_margin: Annotated[float, Field(ge=0.0)] = 0.0


class SearchDimension(_Strict):
    """One searched hyperparameter: a range (uniform, loguniform, int) or a list (choice)."""

    distribution: Literal["uniform", "loguniform", "int", "choice"]
    low: float | None = None
    high: float | None = None
    values: list[Any] | None = None

    @model_validator(mode="after")
    def _well_formed(self) -> SearchDimension:
        if self.distribution == "choice":
            if not self.values:
                raise ValueError("a choice needs a non-empty list of `values`")
            if self.low is not None or self.high is not None:
                raise ValueError("a choice takes `values`, not `low` / `high`")
            return self
        if self.values is not None:
            raise ValueError(f"{self.distribution} takes `low` and `high`, not `values`")
        if self.low is None or self.high is None:
            raise ValueError(f"{self.distribution} needs both `low` and `high`")
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.distribution == "loguniform" and self.low <= 0:
            raise ValueError(f"loguniform needs low > 0 (got {self.low})")
        if self.distribution == "int" and not (self.low.is_integer() and self.high.is_integer()):
            raise ValueError("int needs whole-number `low` and `high`")
        return self

    def extremes(self) -> list[Any]:
        """The values at the edges of the space: if these validate, every sample does."""
        if self.distribution == "choice":
            return list(self.values)
        if self.distribution == "int":
            return [int(self.low), int(self.high)]
        return [self.low, self.high]

    def holds(self, value: Any) -> bool:
        """Whether the search could sample `value`."""
        if self.distribution == "choice":
            return value in self.values
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if self.distribution == "int" and not float(value).is_integer():
            return False
        return self.low <= value <= self.high


class TuneConfig(_Strict):
    """A Ray Tune search over `space` (dotted config keys) before the `train` stage.

    Trials optimise `train.early_stopping.monitor` (in its mode), the metric training itself
    keeps its best epoch by. The best trial's values are what `train` then trains with.
    """

    space: dict[str, SearchDimension] = Field(min_length=1)
    num_trials: Annotated[int, Field(gt=0)] = 8
    max_epochs_per_trial: Annotated[int, Field(gt=0)] = 4
    # Stops launching new trials after this long; running ones finish their current epoch.
    time_budget_s: Annotated[float, Field(gt=0.0)] | None = None
    searcher: Literal["optuna", "random"] = "optuna"
    scheduler: Literal["asha", "fifo"] = "asha"
    # ASHA: every trial gets `grace_period` epochs; then only the best 1/reduction_factor of
    # the trials at each rung go on training.
    grace_period: Annotated[int, Field(gt=0)] = 1
    reduction_factor: Annotated[float, Field(gt=1.0)] = 3.0
    max_concurrent_trials: Annotated[int, Field(gt=0)] = 2
    # Per trial: training workers (each holds a GPU when `cluster.use_gpu`) and the CPUs each
    # one holds. Concurrent trials x workers x CPUs must leave room for Ray Data, as for a
    # single training run. On 2 cores one worker per trial is faster than two: two trials of
    # two DDP workers each put four processes on two cores, and every step waits on the
    # slowest (docs/benchmarks.md).
    workers_per_trial: Annotated[int, Field(gt=0)] = 1
    cpus_per_worker: Annotated[float, Field(gt=0.0)] = 0.5
    seed: int = 0
    # Trial 1 trains the config's own values of the searched keys, the other trials sample:
    # the search can then only pick values that score at least as well on validation as the
    # config as written (at the search's budget of epochs).
    try_config_first: bool = False


class ExperimentConfig(_Strict):
    name: ExperimentName
    data: DataConfig
    split: SplitConfig = SplitConfig()
    preprocess: PreprocessConfig = StandardizeConfig()
    model: ModelConfig
    train: TrainConfig
    cluster: ClusterConfig = ClusterConfig()
    registry: RegistryConfig = RegistryConfig()
    # None: no search; `train` uses the config as written.
    tune: TuneConfig | None = None

    @model_validator(mode="after")
    def _parts_fit_together(self) -> ExperimentConfig:
        preprocessors, models = self.data.preprocess_kinds, self.data.model_kinds
        if self.preprocess.kind not in preprocessors:
            raise ValueError(
                f"preprocess.kind '{self.preprocess.kind}' does not apply to {self.data.kind} "
                f"data (use one of: {', '.join(sorted(preprocessors))})"
            )
        if self.model.kind not in models:
            raise ValueError(
                f"model.kind '{self.model.kind}' does not apply to {self.data.kind} data "
                f"(use one of: {', '.join(sorted(models))})"
            )
        if self.train.length_buckets and not self.data.has_lengths:
            raise ValueError(
                f"train.length_buckets groups texts by length; {self.data.kind} data has none "
                "(set it to 0)"
            )
        if self.train.distillation is not None:
            _check_distillation(self)
        if self.tune is not None:
            _check_search_space(self)
        return self

    @property
    def task(self) -> Task:
        if self.model.kind == "dcgan":
            return "generation"
        return self.data.task


def _check_distillation(config: ExperimentConfig) -> None:
    teacher = config.train.distillation.teacher
    if config.task != "classification":
        raise ValueError(
            f"train.distillation fits a classifier to its teacher's class probabilities; "
            f"{config.name} is a {config.task} experiment (remove train.distillation)"
        )
    if teacher == config.name:
        raise ValueError(f"train.distillation.teacher: {config.name} cannot be its own teacher")
    if not config.cluster.materialize_train:
        raise ValueError(
            "train.distillation adds the teacher's predictions to the training rows held in "
            "memory: set cluster.materialize_train: true"
        )


def _check_search_space(config: ExperimentConfig) -> None:
    """Every searched key exists, the space's edge values give a valid config, and with
    `try_config_first` the config's own values lie in the space.

    So a bad space fails when the config is composed, before any trial starts.
    """
    base = config.model_dump(mode="json")
    base.pop("tune")
    for key, dimension in config.tune.space.items():
        if key.split(".")[0] in ("name", "data", "split", "tune"):
            raise ValueError(f"tune.space.{key}: only model, train, preprocess, cluster can vary")
        for value in dimension.extremes():
            try:
                ExperimentConfig.model_validate(set_dotted(base, key, value))
            except KeyError:
                raise ValueError(f"tune.space.{key}: no such config key") from None
            except ValidationError as exc:
                problem = exc.errors()[0]["msg"]
                raise ValueError(
                    f"tune.space.{key}: value {value!r} is invalid: {problem}"
                ) from None
        written = get_dotted(base, key)
        if config.tune.try_config_first and not dimension.holds(written):
            raise ValueError(
                f"tune.try_config_first: {key} is {written!r}, which tune.space.{key} cannot "
                "sample; widen the space or change the value"
            )


def get_dotted(tree: dict[str, Any], key: str) -> Any:
    """`tree`'s value at `key` ("train.lr"); the key must exist."""
    for part in key.split("."):
        if not isinstance(tree, dict) or part not in tree:
            raise KeyError(key)
        tree = tree[part]
    return tree


def set_dotted(tree: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """A copy of `tree` with `key` ("train.lr") set; the key must already exist."""
    head, _, rest = key.partition(".")
    if not isinstance(tree, dict) or head not in tree:
        raise KeyError(key)
    copy = dict(tree)
    copy[head] = set_dotted(tree[head], rest, value) if rest else value
    return copy
