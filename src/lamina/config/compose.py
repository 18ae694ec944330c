"""Reading presets and resolved configs: compose `conf/` groups, apply overrides, write back.

An experiment preset (`conf/experiment/<name>.yaml`) picks one option per group in its
`defaults` mapping (e.g. `model: cnn` -> `conf/model/cnn.yaml`) and overrides only the keys that
differ. `compose_experiment` merges them and validates the result into `ExperimentConfig`
(`lamina.config.schema`), so a typo, a wrong type or an impossible value fails here, naming the
file and the key, before any data is read or Ray starts.

The `configure` DVC stage writes the validated config to `outputs/<name>/config.yaml`; every
later stage reads that file and declares in `dvc.yaml` the exact sections it uses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from lamina.config.schema import CONFIG_GROUPS, ExperimentConfig, set_dotted
from lamina.errors import ConfigError


def with_overrides(config: ExperimentConfig, overrides: dict[str, Any]) -> ExperimentConfig:
    """`config` with dotted keys replaced (a trial's sample, the best trial's params)."""
    tree = config.model_dump(mode="json")
    for key, value in overrides.items():
        try:
            tree = set_dotted(tree, key, value)
        except KeyError:
            raise ConfigError(f"{key}: no such config key to override") from None
    try:
        return ExperimentConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(Path("<overrides>"), exc)) from None


def load_best_params(path: Path) -> dict[str, Any]:
    """The `params` the `tune` stage wrote: dotted keys -> values (empty without a search)."""
    if not path.is_file():
        raise ConfigError(f"{path}: not found; run the `tune` stage first (`dvc repro`)")
    params = _read_yaml_mapping(path).get("params", {})
    if not isinstance(params, dict):
        raise ConfigError(f"{path}: `params` must map config keys to values")
    return params


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


# pydantic puts the chosen union member's tag in error paths (model.cnn.lr); users never see it.
_UNION_TAGS = {
    "images",
    "text",
    "series",
    "standardize",
    "unit_range",
    "vocabulary",
    "windows",
    "cnn",
    "mlp",
    "rnn",
    "transformer",
    "forecaster",
    "dcgan",
}


def _format_validation_error(source: Path, error: ValidationError) -> str:
    problems = []
    for item in error.errors():
        # Drop the discriminator tag pydantic inserts into union paths (model.cnn.x -> model.x).
        location = [str(part) for part in item["loc"] if part not in _UNION_TAGS]
        key = ".".join(location) or "<root>"
        given = item.get("input")
        shown = "" if isinstance(given, dict) or item["type"] == "missing" else f" (got {given!r})"
        # Our own validators' messages name their keys already; pydantic prefixes them.
        message = item["msg"].removeprefix("Value error, ")
        problems.append(f"{message}{shown}" if key == "<root>" else f"{key}: {message}{shown}")
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
