"""The MLflow model registry: log a trained model, register it, decide its alias, name it.

A new version becomes `champion` only when it beats the current champion on the experiment's
primary test metric by the configured margin; otherwise it is the `challenger`. Registry stages
are deprecated in MLflow, so aliases carry this (`models:/<name>@champion`).

Every version carries its lineage as tags (training run, git commit, the DVC hashes of the raw
data and of `dvc.lock`, its headline test metrics, the promotion decision) and a short model
card as its description, so a champion leads back to the exact data and code.

Every version logged by Lamina also carries the SHA-256 of each of its files (`MODEL_FILES_TAG`),
recorded when it is registered: `lamina predict` and `lamina generate` check the files they
download against it before loading any, so the registry (the tracking database) is what a model
is trusted by, not whoever can write to the artifact store.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from lamina.config.compose import flatten_config
from lamina.config.schema import (
    DataConfig,
    ExperimentConfig,
    ImageDataConfig,
    RegistryConfig,
    SeriesDataConfig,
)
from lamina.errors import TrackingError
from lamina.redaction import redacted
from lamina.tracking.runs import (
    dvc_data_hash,
    existing_store,
    git_commit,
    tracking_uri,
)

logger = logging.getLogger("lamina.serving.registry")

CHAMPION = "champion"
CHALLENGER = "challenger"
PRIMARY_METRIC_TAG = "lamina.primary_metric"
# {relative path: SHA-256} of every file of a version, as JSON: about 10 kB for a pyfunc model
# with the Lamina code it carries, within MLflow's 100,000 characters for a version's tag.
MODEL_FILES_TAG = "lamina.model_files_sha256"
# MLflow's SQL schema stores a version's description as VARCHAR(5000); PostgreSQL enforces it.
MAX_DESCRIPTION_CHARS = 5000
# The training knobs a model card lists beside every `model.*` and `preprocess.*` setting.
KEY_TRAIN_SETTINGS = (
    "train.epochs",
    "train.batch_size",
    "train.optimizer",
    "train.lr",
    "train.weight_decay",
    "train.lr_schedule",
    "train.seed",
)


@dataclass(frozen=True)
class Registration:
    model_name: str
    version: int
    alias: str
    primary_metric: str
    value: float
    champion_value_before: float | None
    model_uri: str
    decision: str

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")


def model_uri(spec: str) -> str:
    """`NAME` -> `models:/NAME@champion`; `NAME@ALIAS` and `NAME/VERSION` -> their URIs.

    A `models:/` prefix is optional. Anything else is a `TrackingError` saying what to write.
    """
    name, alias, version = _parse_model_spec(spec)
    return f"models:/{name}/{version}" if version else f"models:/{name}@{alias}"


def _parse_model_spec(spec: str) -> tuple[str, str | None, str | None]:
    """(name, alias, version) of `NAME`, `NAME@ALIAS`, `NAME/VERSION` (`models:/` optional);
    exactly one of alias and version is set."""
    body = spec.removeprefix("models:/")
    if "@" in body:
        name, _, alias = body.partition("@")
        valid, version = bool(alias) and "/" not in body and "@" not in alias, None
    elif "/" in body:
        name, _, version = body.partition("/")
        valid, alias = version.isdigit(), None
    else:
        name, alias, version, valid = body, CHAMPION, None, True
    if not valid or not name.strip():
        raise TrackingError(
            f"{spec!r} does not name a registered model: use NAME, NAME@ALIAS or NAME/VERSION "
            "(`lamina models` lists them)"
        )
    return name, alias, version


def dvc_lock_hash(root: Path) -> str:
    """md5 of `dvc.lock` as it is when the version is registered; `unknown` without one."""
    try:
        return hashlib.md5((root / "dvc.lock").read_bytes()).hexdigest()
    except OSError:
        return "unknown"


def headline_test_metrics(metrics: dict[str, float], primary_metric: str) -> dict[str, float]:
    """The primary metric and every `test/<name>` (not the per-class `test/<name>/<class>`)."""
    keys = [key for key in metrics if key.startswith("test/") and key.count("/") == 1]
    if primary_metric in metrics and primary_metric not in keys:
        keys.insert(0, primary_metric)
    return {key: float(metrics[key]) for key in keys}


def beats_champion(value: float, champion: float | None, rule: RegistryConfig) -> bool:
    if champion is None:
        return True
    if rule.greater_is_better:
        return value > champion + rule.promotion_margin
    return value < champion - rule.promotion_margin


def _champion_value(client, model_name: str, metric: str) -> float | None:
    from mlflow.exceptions import MlflowException

    try:
        champion = client.get_model_version_by_alias(model_name, CHAMPION)
    except MlflowException:
        return None  # no such model yet, or no champion alias
    return float(champion.tags[metric]) if metric in champion.tags else None


def promotion_decision(
    alias: str, value: float, champion_before: float | None, rule: RegistryConfig
) -> str:
    """One line with both numbers, e.g. `challenger: test/accuracy 0.9712 vs champion 0.9800`."""
    before = "none" if champion_before is None else f"{champion_before:.4f}"
    return (
        f"{alias}: {rule.primary_metric} {value:.4f} vs champion {before} "
        f"(margin {rule.promotion_margin}, "
        f"{'higher' if rule.greater_is_better else 'lower'} is better)"
    )


def promote_version(
    config: ExperimentConfig,
    version: int,
    run_id: str,
    metrics: dict[str, float],
    root: Path,
    *,
    split_sizes: dict[str, int] | None = None,
) -> Registration:
    """Tag a freshly registered version of `config`'s model (trained with `config`, under its
    name) with its lineage, write its model card, give it its alias by `config.registry`."""
    from mlflow.tracking import MlflowClient

    model_name, rule = config.name, config.registry
    client = MlflowClient(tracking_uri(root))
    value = float(metrics[rule.primary_metric])
    champion_before = _champion_value(client, model_name, rule.primary_metric)
    alias = CHAMPION if beats_champion(value, champion_before, rule) else CHALLENGER
    decision = promotion_decision(alias, value, champion_before, rule)
    test_metrics = headline_test_metrics(metrics, rule.primary_metric)

    commit, data_hash, lock_hash = git_commit(root), dvc_data_hash(root), dvc_lock_hash(root)
    lineage = {
        "lamina.run_id": run_id,
        "mlflow.source.git.commit": commit,
        "lamina.dvc_data_hash": data_hash,
        "lamina.dvc_lock_hash": lock_hash,
        PRIMARY_METRIC_TAG: rule.primary_metric,
        "lamina.promotion": decision,
        **{key: str(metric) for key, metric in test_metrics.items()},
    }
    for key, tag_value in lineage.items():
        client.set_model_version_tag(model_name, str(version), key, tag_value)
    plots = [item.path for item in client.list_artifacts(run_id, "evaluation/plots")]
    card = model_card(
        config=config,
        version=version,
        run_id=run_id,
        metrics=test_metrics,
        decision=decision,
        plots=plots,
        commit=commit,
        data_hash=data_hash,
        lock_hash=lock_hash,
        split_sizes=split_sizes,
    )
    client.update_model_version(model_name, str(version), description=card)
    client.set_registered_model_alias(model_name, alias, str(version))
    client.set_tag(run_id, "lamina.promotion", decision)
    logger.info("%s version %d -> %s", model_name, version, decision)
    return Registration(
        model_name=model_name,
        version=version,
        alias=alias,
        primary_metric=rule.primary_metric,
        value=value,
        champion_value_before=champion_before,
        model_uri=f"models:/{model_name}/{version}",
        decision=decision,
    )


def model_card(
    *,
    config: ExperimentConfig,
    version: int,
    run_id: str,
    metrics: dict[str, float],
    decision: str,
    plots: list[str],
    commit: str,
    data_hash: str,
    lock_hash: str,
    split_sizes: dict[str, int] | None = None,
) -> str:
    """A version's description: what it was trained on, how, how well, and how to get back to
    its data and code. Markdown, as the MLflow UI renders it; at most 5000 characters."""
    model_name = config.name
    data = _data_facts(config.data)
    if split_sizes:
        data.append("split " + " / ".join(f"{n} {split}" for split, n in split_sizes.items()))
    # Written as MLflow params are (`flatten_config`), so the card reads like the run.
    key_settings = {
        key: value
        for key, value in flatten_config(config).items()
        if key.startswith(("model.", "preprocess.")) or key in KEY_TRAIN_SETTINGS
    }
    clean_commit = commit.removesuffix("-dirty")
    lines = [
        f"### {model_name} v{version}",
        "",
        f"**Experiment** `{model_name}`, MLflow run `{run_id}`.",
        "",
        f"**Data**: {'; '.join(data)}. DVC data hash (`data.dvc`): `{data_hash}`.",
        "",
        "**Model & key params**: "
        + ", ".join(f"`{key}={value}`" for key, value in key_settings.items()),
        "",
        "**Test metrics**: "
        + (", ".join(f"{key} = {value:.4f}" for key, value in metrics.items()) or "none"),
        "",
        f"**Promotion**: {decision}",
        "",
        "**Plots**: "
        + (", ".join(f"`runs:/{run_id}/{path}`" for path in plots) or "none logged")
        + f" (locally `outputs/{model_name}/plots/`, a DVC output).",
        "",
        f"**Code & data**: git commit `{commit}`, `dvc.lock` md5 `{lock_hash}`.",
    ]
    if commit.endswith("-dirty"):
        lines.append(
            "Tracked files differed from that commit when registered (`dvc repro` itself "
            "rewrites `dvc.lock`; anything else was uncommitted code or config)."
        )
    if commit != "unknown":
        lines += [
            "To get back to them:",
            "",
            f"    git checkout {clean_commit} && dvc checkout   # `dvc pull` if not cached",
        ]
    card = "\n".join(lines) + "\n"
    if len(card) > MAX_DESCRIPTION_CHARS:  # a very long params list; the tags keep the rest
        card = card[: MAX_DESCRIPTION_CHARS - 2] + "…\n"
    return card


def _data_facts(data: DataConfig) -> list[str]:
    """What the model was trained on, e.g. `images from `data/mnist``, `10 classes (0, ...)`."""
    facts = [f"{data.kind} from `{data.path}`"]
    if isinstance(data, SeriesDataConfig):
        return facts
    facts.append(f"{len(data.class_names)} classes ({', '.join(data.class_names)})")
    if isinstance(data, ImageDataConfig):
        facts.append("images " + "x".join(str(side) for side in data.image_shape))
    if data.max_samples is not None:
        facts.append(f"subsampled to {data.max_samples} rows")
    return facts


def registry_client(root: Path):
    """An `MlflowClient` on the store `tracking_uri(root)` names, to read: fails in seconds, in
    one line, when a tracking server does not answer or the SQLite store is not one (see
    `existing_store`)."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(existing_store(tracking_uri(root)))


def find_model_version(client, spec: str):
    """The registered `ModelVersion` that `spec` (see `model_uri`) names, or a `TrackingError`
    that says what is missing and where to look."""
    from mlflow.exceptions import MlflowException

    name, alias, version = _parse_model_spec(model_uri(spec))
    where = f"{model_uri(spec)} (in {redacted(client.tracking_uri)})"
    hint = "`lamina models` lists the registered models, versions and aliases"
    try:
        registered = client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        raise TrackingError(f"{where}: no registered model named '{name}'; {hint}") from None
    if alias is not None:
        if alias not in registered.aliases:
            raise TrackingError(f"{where}: model '{name}' has no alias '{alias}'; {hint}")
        version = str(registered.aliases[alias])
    try:
        return client.get_model_version(name, version)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        raise TrackingError(f"{where}: model '{name}' has no version {version}; {hint}") from None


def list_model_versions(client, name: str | None = None) -> list[dict[str, str]]:
    """One row per registered version: model, version, aliases, primary metric, created (UTC).

    Models by name, each model's newest version first.
    """
    filter_string = _name_is(name) if name else None
    models, token = [], None
    while True:
        page = client.search_registered_models(filter_string=filter_string, page_token=token)
        models.extend(page)
        token = page.token
        if not token:
            break
    rows = []
    for model in sorted(models, key=lambda m: m.name):
        aliases: dict[str, list[str]] = {}
        for alias, version in model.aliases.items():
            aliases.setdefault(str(version), []).append(alias)
        versions = client.search_model_versions(_name_is(model.name))
        for version in sorted(versions, key=lambda v: int(v.version), reverse=True):
            created = datetime.fromtimestamp(version.creation_timestamp / 1000, tz=UTC)
            rows.append(
                {
                    "model": model.name,
                    "version": str(version.version),
                    "aliases": ",".join(sorted(aliases.get(str(version.version), []))) or "-",
                    "primary metric": _primary_metric(version.tags),
                    "created (UTC)": created.strftime("%Y-%m-%d %H:%M"),
                }
            )
    return rows


def _name_is(name: str) -> str:
    """MLflow's search filter for one model name. Its strings have no escapes: the name is
    quoted with the quote it does not hold."""
    quote = '"' if "'" in name else "'"
    if quote in name:
        raise TrackingError(
            f"model name {name}: MLflow cannot search for a name with both ' and \""
        )
    return f"name = {quote}{name}{quote}"


def _primary_metric(tags: dict[str, str]) -> str:
    # Versions registered before the `lamina.primary_metric` tag carried one `test/` tag only.
    key = tags.get(PRIMARY_METRIC_TAG) or next(
        (k for k in sorted(tags) if k.startswith("test/")), None
    )
    if key is None or key not in tags:
        return "-"
    try:
        return f"{key}={float(tags[key]):.4f}"
    except ValueError:
        return f"{key}={tags[key]}"


# --- the files of a version, as registered ---------------------------------------------------


def model_file_digests(folder: Path) -> dict[str, str]:
    """The SHA-256 of every file under `folder`, by its path relative to it, but the one the
    MLflow client writes itself into a model it downloads through the registry (its name and
    version, rewritten on every download): it is not in the artifact store."""
    from mlflow.store.artifact.models_artifact_repo import REGISTERED_MODEL_META_FILE_NAME

    digests = {}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder).as_posix()
        if path.is_file() and relative != REGISTERED_MODEL_META_FILE_NAME:
            digests[relative] = _sha256(path)
    return digests


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_model_version(client, name: str, version: str, destination: Path) -> Path:
    """The version's files, downloaded from the artifact store under `destination`; the model's
    folder (the one holding `MLmodel`)."""
    import os
    from unittest import mock

    from mlflow.artifacts import download_artifacts
    from mlflow.environment_variables import MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR

    source = client.get_model_version_download_uri(name, version)
    # No progress bars: a refused model must be one line on stderr.
    with mock.patch.dict(os.environ, {MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.name: "false"}):
        local = download_artifacts(
            artifact_uri=source, dst_path=str(destination), tracking_uri=client.tracking_uri
        )
    return Path(local)


def record_model_files(client, name: str, version: str) -> None:
    """Tag the just-registered version with the SHA-256 of each of its files, as stored."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="lamina-register-") as scratch:
        folder = download_model_version(client, name, version, Path(scratch))
        digests = model_file_digests(folder)
    client.set_model_version_tag(name, version, MODEL_FILES_TAG, json.dumps(digests))


def check_model_files(client, name: str, version: str) -> None:
    """`download_checked_model` into a scratch folder: a version whose files changed is refused
    before any work starts."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="lamina-check-") as scratch:
        download_checked_model(client, name, version, Path(scratch))


def download_checked_model(client, name: str, version: str, destination: Path) -> Path:
    """The version's files downloaded under `destination`, each checked against the SHA-256
    the registry recorded; a file added, missing or changed since is a `TrackingError` naming
    it, raised before anything is loaded."""
    uri = f"models:/{name}/{version}"
    recorded = client.get_model_version(name, version).tags.get(MODEL_FILES_TAG)
    if recorded is None:
        raise TrackingError(
            f"{uri}: the registry holds no SHA-256 of its files (tag {MODEL_FILES_TAG}), so "
            "they cannot be checked before loading; register it again with `dvc repro`"
        )
    folder = download_model_version(client, name, version, destination)
    expected, found = json.loads(recorded), model_file_digests(folder)
    for path in sorted(expected.keys() | found.keys()):
        if expected.get(path) != found.get(path):
            raise TrackingError(
                f"{uri}: its file {path} {_change(path, expected, found)} in the artifact store "
                f"since it was registered (SHA-256 in tag {MODEL_FILES_TAG}); refusing to load "
                "it: restore the file or register the model again"
            )
    return folder


def _change(path: str, expected: dict[str, str], found: dict[str, str]) -> str:
    if path not in found:
        return "is missing"
    return "was added" if path not in expected else "was changed"
