"""`lamina predict`: a registered model over a folder of images, a table of texts or a series.

The model says what it reads (its pyfunc input signature, never its name), and the kind of data
that reads it has the reader and the actors' batch predictor (`lamina.features.DataKind`):
- image classifiers (input column `image`): a folder of PNG/JPEG files, searched recursively and
  sorted by path. Output: `path` (relative to the folder), `prediction` (the class name),
  `probability_<class>` per class.
- text classifiers (`text`): a CSV or Parquet file with a `text` column. Output: the file's `id`
  column if it has one, else `row` (0 = the first data row), then `prediction` and the
  probabilities.
- forecasters (`value`): a CSV series with the time and value columns the model was trained on
  (its logged config names them: `date`, `co2` for gru-co2), in increasing time order. A
  rolling forecast: every time step that closes a full window of history (the `window`-th value
  and later) is a forecast origin; from the `window` values up to and including it the model
  forecasts the next `horizon` steps. Output: the time and value columns of the origin, then
  `forecast_1` .. `forecast_<horizon>`, so `forecast_1` of a row is the model's guess of the
  next row's value, and the last row forecasts past the end of the series.
GAN generators turn noise into samples and have nothing to predict: predict refuses them.

How it runs: the rows become Ray Data blocks, and `map_batches` hands batches to a fixed pool of
actors, each loading the model version once (`load_registered_model`) and keeping it for
every batch it gets. Ray starts as every Lamina command starts it (`init_ray`: a local Ray, or
the cluster at `RAY_ADDRESS`; on a cluster the input files must be where the actors run).
Everything a user can get wrong (model, alias, version, input, output name) is checked before
Ray starts; the output is never a folder or the input, and replaces an existing file only with
`--overwrite`. An image that turns out unreadable while predicting fails the whole run. The
output is streamed into a temporary file next to the target and moved into place only once
every row is written, so a failed run leaves no output file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from lamina.atomic import atomic_path, check_output_target
from lamina.errors import ConfigError, DataError, LaminaError, TrackingError, one_line

if TYPE_CHECKING:
    from lamina.config.schema import ExperimentConfig
    from lamina.features.kind import DataKind

OUTPUT_SUFFIXES = (".csv", ".parquet")
# Rows per `model.predict` call, and per Ray Data block (the unit an actor takes): one call per
# task, and blocks small enough to share out evenly (5,000 digits on 2 cores: 1,024-row blocks
# left one actor with 3 and the other with 2, 256-row ones cut the run's time by a sixth).
BATCH_ROWS = 256
BLOCK_ROWS = BATCH_ROWS
# Each actor holds half a CPU (Ray gives it one torch thread), so one CPU stays free for Ray
# Data's own tasks: with every CPU held by actors they would wait forever
# (docs/cluster-and-servers.md). On 2 cores that is 2 actors, faster than one actor holding a
# whole CPU (docs/benchmarks.md).
CPUS_PER_ACTOR = 0.5


@dataclass(frozen=True)
class RegisteredModel:
    """A version that exists in the registry, and what it reads."""

    asked: str  # the models:/ URI asked for (an alias or a version)
    name: str
    version: str
    kind: str  # the kind of data it reads: a key of `lamina.features.DATA_KINDS`

    @property
    def uri(self) -> str:
        """Pinned to the version: an alias moved mid-run must not mix two models."""
        return f"models:/{self.name}/{self.version}"


@dataclass(frozen=True)
class PredictInput:
    """The rows to predict: identifier columns, then the one column the actors feed the model."""

    table: pd.DataFrame
    id_columns: tuple[str, ...]
    input_column: str
    # Arguments every actor gets besides the model (a forecaster's whole series).
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PredictSummary:
    rows: int
    seconds: float
    output: Path
    model_uri: str  # the version that ran
    asked: str  # the models:/ URI asked for

    def line(self) -> str:
        rate = self.rows / self.seconds if self.seconds > 0 else float("inf")
        asked = f" ({self.asked})" if self.asked != self.model_uri else ""
        return (
            f"predicted {self.rows} rows in {self.seconds:.1f} s ({rate:.1f} rows/s) "
            f"with {self.model_uri}{asked} -> {self.output}"
        )


def predict(
    model_spec: str,
    input_path: Path,
    output_path: Path,
    root: Path = Path("."),
    *,
    overwrite: bool = False,
) -> PredictSummary:
    """Run the model `NAME[@ALIAS|/VERSION]` over `input_path`, write `output_path` (CSV or
    Parquet; an existing file only with `overwrite`); the store is `MLFLOW_TRACKING_URI`, else
    `<root>/mlflow.db`."""
    started = time.perf_counter()
    output_format = check_output_path(output_path, input_path, overwrite=overwrite)
    if not input_path.exists():
        raise DataError(f"{input_path}: no such file or folder")
    _quiet_mlflow()
    model, tracking = resolve_model(model_spec, root.resolve())
    rows = _data_kind(model).read_predict_input(input_path, lambda: logged_config(model.uri))
    with _ray_session(), atomic_path(output_path) as staging:
        written = _predict_into(model, rows, staging, output_format, tracking)
    seconds = time.perf_counter() - started
    return PredictSummary(written, seconds, output_path, model.uri, model.asked)


# --- before any work: output name, model ----------------------------------------------------


def check_output_path(output_path: Path, input_path: Path, *, overwrite: bool = False) -> str:
    """The output format from the name (`csv` or `parquet`); anything else is an error, as is
    an output that is a folder, the input, or an existing file without `overwrite`."""
    suffix = output_path.suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise ConfigError(
            f"{output_path}: the output is written as CSV or Parquet by its extension; "
            "name it *.csv or *.parquet"
        )
    if _same_file(output_path, input_path):
        raise ConfigError(f"{output_path}: is the input; name another file for the output")
    check_output_target(output_path, overwrite=overwrite)
    return suffix.lstrip(".")


def _same_file(output_path: Path, input_path: Path) -> bool:
    """The same path, or two names (links) of one file."""
    if output_path.resolve() == input_path.resolve():
        return True
    return output_path.exists() and input_path.exists() and output_path.samefile(input_path)


def resolve_model(model_spec: str, root: Path) -> tuple[RegisteredModel, str]:
    """The registered version `model_spec` names and what it reads; the tracking URI, which
    this process's MLflow now uses.

    A missing store, model, alias or version is one `TrackingError` naming the models:/ URI.
    """
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from lamina.serving.registry import check_model_files, find_model_version, model_uri
    from lamina.tracking.runs import existing_store, tracking_uri

    asked = model_uri(model_spec)
    # Absolute: the actors run in other folders.
    tracking = existing_store(tracking_uri(root))
    client = MlflowClient(tracking, registry_uri=tracking)
    try:
        version = find_model_version(client, asked)
    except MlflowException as exc:
        raise TrackingError(f"{asked}: the registry did not answer: {one_line(exc)}") from None
    mlflow.set_tracking_uri(tracking)
    name, number = version.name, str(version.version)
    kind = model_kind(f"models:/{name}/{number}")
    check_model_files(client, name, number)  # before Ray; each actor checks what it loads
    return RegisteredModel(asked, name, number, kind), tracking


def model_kind(uri: str) -> str:
    """What the model reads, from its pyfunc input signature: the name of a kind of data."""
    import mlflow.models
    from mlflow.exceptions import MlflowException

    from lamina.features import DATA_KINDS

    try:
        signature = mlflow.models.get_model_info(uri).signature
    except (MlflowException, OSError) as exc:
        raise TrackingError(f"{uri}: cannot read the model's metadata ({one_line(exc)})") from None
    schema = signature.inputs if signature is not None else None
    names = schema.input_names() if schema is not None and schema.has_input_names() else []
    for kind in DATA_KINDS.values():
        if kind.raw_input_column in names:
            return kind.name
    takes = f"input {schema}" if schema is not None else "no input signature"
    columns = [f"`{kind.raw_input_column}`" for kind in DATA_KINDS.values()]
    raise LaminaError(
        f"{uri}: `lamina predict` runs image and text classifiers and forecasters (a model whose "
        f"input has an {', '.join(columns[:-1])} or {columns[-1]} column); this one takes "
        f"{takes}. A GAN generator turns noise into samples: it has nothing to predict"
    )


def _data_kind(model: RegisteredModel) -> DataKind:
    from lamina.features import DATA_KINDS

    return DATA_KINDS[model.kind]


def logged_config(model_uri: str) -> ExperimentConfig:
    """The config logged with the model (its `artifacts/config.yaml`)."""
    import tempfile

    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    from lamina.config.compose import load_resolved_config

    with tempfile.TemporaryDirectory(prefix="lamina-predict-") as scratch:
        try:
            local = download_artifacts(
                artifact_uri=f"{model_uri}/artifacts/config.yaml", dst_path=scratch
            )
        except (MlflowException, OSError):
            raise LaminaError(
                f"{model_uri}: a model without its logged config (artifacts/config.yaml), so "
                "how it reads its input (a forecaster's window and series columns) is unknown; "
                "register it with `dvc repro`"
            ) from None
        return load_resolved_config(Path(local))


def read_csv_cells(path: Path) -> pd.DataFrame:
    """A CSV file the user gave, every cell as text; an unreadable one is a `DataError`."""
    if not path.is_file():
        raise DataError(f"{path}: not a file")
    try:
        # Every cell as text: an id "007" stays "007", an empty text stays "".
        return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text; save the CSV as UTF-8") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, OSError) as exc:
        raise DataError(f"{path}: not a readable CSV file ({one_line(exc)})") from None


# --- predicting with Ray Data ---------------------------------------------------------------


class BatchPredictor:
    """One per Ray actor: loads the model once, then predicts every batch it is given."""

    def __init__(
        self, model_uri: str, tracking_uri: str, id_columns: tuple[str, ...], input_column: str
    ) -> None:
        import mlflow

        from lamina.serving.packaging import load_registered_model

        _quiet_mlflow()
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
        self.model = load_registered_model(model_uri)  # its files checked against the registry
        self.id_columns = list(id_columns)
        self.input_column = input_column

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        output = self.predict(batch).reset_index(drop=True)
        ids = batch[self.id_columns].reset_index(drop=True)
        return pd.concat([ids, output], axis=1)

    def predict(self, batch: pd.DataFrame) -> pd.DataFrame:
        return self.model.predict(batch[[self.input_column]])


@contextlib.contextmanager
def _ray_session() -> Iterator[None]:
    """Ray as every Lamina command starts it; shut down after only if this call started it."""
    import ray

    from lamina.cluster.ray_runtime import configure_ray_data, init_ray
    from lamina.config.schema import ClusterConfig

    started_here = not ray.is_initialized()
    with _quiet_ray_logs():
        init_ray(ClusterConfig())
        configure_ray_data(progress_bars=sys.stderr.isatty())
        try:
            yield
        finally:
            if started_here:
                ray.shutdown()


def _below_error(record: logging.LogRecord) -> bool:
    return record.levelno < logging.ERROR


# Ray's log records that would come before the one line of a user's error: a notice that token
# auth is on (the secure default), one that progress bars are off (on purpose when stderr is no
# terminal), and Ray Data's reports of a failed task (whose error is raised anyway, a bug's
# with its traceback).
_RAY_NOISE = {
    "ray._private.authentication.authentication_token_setup": (
        lambda record: not record.getMessage().startswith("Token authentication is enabled")
    ),
    "ray.data._internal.progress": (
        lambda record: not record.getMessage().startswith("Progress bars disabled")
    ),
    "ray.data._internal.execution.streaming_executor_state": _below_error,
    "ray.data.exceptions": _below_error,
}


@contextlib.contextmanager
def _quiet_ray_logs() -> Iterator[None]:
    for name, keep in _RAY_NOISE.items():
        logging.getLogger(name).addFilter(keep)
    try:
        yield
    finally:
        for name, keep in _RAY_NOISE.items():
            logging.getLogger(name).removeFilter(keep)


def actor_pool_size(num_blocks: int) -> int:
    """As many actors as the cluster's CPUs allow, keeping one CPU free; no more than blocks."""
    import ray

    cpus = ray.cluster_resources().get("CPU", 1.0)
    return max(1, min(num_blocks, int((cpus - 1.0) / CPUS_PER_ACTOR)))


def _predict_into(
    model: RegisteredModel, rows: PredictInput, staging: Path, output_format: str, tracking: str
) -> int:
    """Predict every row through Ray Data; stream the output into `staging`; rows written."""
    import ray.data

    table = rows.table
    blocks = [table.iloc[start : start + BLOCK_ROWS] for start in range(0, len(table), BLOCK_ROWS)]
    written = 0
    with _user_errors_from_actors(), warnings.catch_warnings():
        # Ray 2.60 deprecates passing Ray options such as `max_restarts` here (to be removed in
        # 2.64) and offers no other way to set it.
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        predicted = ray.data.from_pandas(blocks).map_batches(
            _data_kind(model).batch_predictor(),
            fn_constructor_args=(model.uri, tracking, rows.id_columns, rows.input_column),
            fn_constructor_kwargs=rows.extra,
            batch_size=BATCH_ROWS,
            batch_format="pandas",
            compute=ray.data.ActorPoolStrategy(size=actor_pool_size(len(blocks))),
            num_cpus=CPUS_PER_ACTOR,
            # An actor that dies fails the run, which writes nothing and can simply be rerun.
            # Restartable actors (Ray Data's default) make Ray's core print an error line on
            # every run, since their constructor arguments live in the object store.
            max_restarts=0,
        )
        with _TableWriter(staging, output_format) as writer:
            for batch in predicted.iter_batches(batch_size=None, batch_format="pandas"):
                writer.write(batch)
                written += len(batch)
    return written


@contextlib.contextmanager
def _user_errors_from_actors() -> Iterator[None]:
    """A `LaminaError` an actor raises (an unreadable image) reaches the user as itself.

    Ray Data would wrap it in its `UserCodeException`, which keeps only the text of the
    original; told to raise the original, Ray wraps that in a `RayTaskError` whose `cause` it
    is.
    """
    import ray.data
    from ray.exceptions import RayTaskError

    context = ray.data.DataContext.get_current()
    raise_original = context.raise_original_map_exception
    context.raise_original_map_exception = True
    try:
        yield
    except RayTaskError as exc:
        if not isinstance(exc.cause, LaminaError):
            raise
        # Ray Data appends its retry advice to the message, after a line break.
        message = str(exc.cause).split("\n", 1)[0]
        raise type(exc.cause)(message) from None
    finally:
        context.raise_original_map_exception = raise_original


class _TableWriter:
    """Batches appended to one CSV (header once) or one Parquet file."""

    def __init__(self, path: Path, output_format: str) -> None:
        self.path = path
        self.output_format = output_format
        self._csv = None
        self._parquet = None

    def __enter__(self) -> _TableWriter:
        return self

    def write(self, batch: pd.DataFrame) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self.output_format == "csv":
            first = self._csv is None
            if first:
                self._csv = self.path.open("w", encoding="utf-8", newline="")
            batch.to_csv(self._csv, header=first, index=False, lineterminator="\n")
            return
        table = pa.Table.from_pandas(batch, preserve_index=False)
        if self._parquet is None:
            self._parquet = pq.ParquetWriter(self.path, table.schema)
        self._parquet.write_table(table.cast(self._parquet.schema))

    def __exit__(self, *exc_info: object) -> None:
        for handle in (self._csv, self._parquet):
            if handle is not None:
                handle.close()


def _quiet_mlflow() -> None:
    """No artifact download bars: a failure must be one line on stderr, and actors' output
    reaches the driver's stderr."""
    from mlflow.environment_variables import MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR

    os.environ[MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.name] = "false"
