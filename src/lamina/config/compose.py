"""Reading presets and resolved configs: compose `conf/` groups, apply overrides, write back.

An experiment preset (`conf/experiment/<name>.yaml`) picks one option per group in its
`defaults` mapping (e.g. `model: cnn` -> `conf/model/cnn.yaml`) and overrides only the keys that
differ. `compose_experiment` merges them and validates the result into `ExperimentConfig`
(`lamina.config.schema`), so a typo, a wrong type or an impossible value fails here, naming the
file and the key, before any data is read or Ray starts.

The `configure` DVC stage writes the validated config to `outputs/<name>/config.yaml`; every
later stage reads that file and declares in `dvc.yaml` the exact sections it uses.

Every YAML file here may come from a user, so it is read with limits (`read_limited_yaml`): a
few hundred KB at most, UTF-8, no aliases and a bounded nesting depth. An alias bomb (each
list repeating the one before it ten times) is a small file that expands to billions of
values once pydantic or an error message walks it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from lamina.config.paths import check_experiment_name, plain_name_problem
from lamina.config.schema import CONFIG_GROUPS, ExperimentConfig, set_dotted
from lamina.errors import ConfigError, one_line

# A preset or resolved config is a few KB; the largest search space a few more.
MAX_YAML_BYTES = 256 * 1024
MAX_YAML_DEPTH = 32
# An invalid value is quoted in the error line up to this many characters.
MAX_SHOWN_INPUT = 80


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


class _LimitedLoader(yaml.SafeLoader):
    """`yaml.safe_load`'s loader refusing aliases (`*name`) and nesting deeper than
    MAX_YAML_DEPTH (the composer recurses once per level)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise yaml.composer.ComposerError(
                None,
                None,
                f"an alias (*{event.anchor}): config files allow none, write the value out",
                event.start_mark,
            )
        if self._depth >= MAX_YAML_DEPTH:
            raise yaml.composer.ComposerError(
                None, None, f"nested deeper than {MAX_YAML_DEPTH} levels", event.start_mark
            )
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _yaml_problem(error: yaml.YAMLError) -> str:
    """PyYAML's message on one line: what is wrong and where, without its source excerpt."""
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        mark = error.problem_mark
        return f"{error.problem} (line {mark.line + 1}, column {mark.column + 1})"
    return one_line(error)


def _read_config_text(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_YAML_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror or one_line(exc)})") from None
    if len(raw) > MAX_YAML_BYTES:
        raise ConfigError(
            f"{path}: larger than {MAX_YAML_BYTES // 1024} KB, too large for a config file"
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {raw[exc.start]:#04x} at offset {exc.start}); "
            "save the file as UTF-8"
        ) from None


def read_limited_yaml(path: Path) -> Any:
    """The YAML document at `path`, read within the limits above; any breach is a one-line
    `ConfigError` naming the file."""
    text = _read_config_text(path)
    try:
        return yaml.load(text, Loader=_LimitedLoader)  # a SafeLoader, with limits
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from None


def _read_yaml_mapping(path: Path) -> dict[str, Any]:
    loaded = read_limited_yaml(path)
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
        shown = (
            ""
            if isinstance(given, dict) or item["type"] == "missing"
            else f" (got {_shown(given)})"
        )
        # Our own validators' messages name their keys already; pydantic prefixes them.
        message = item["msg"].removeprefix("Value error, ")
        problems.append(f"{message}{shown}" if key == "<root>" else f"{key}: {message}{shown}")
    return f"{source}: invalid config: " + "; ".join(problems)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= MAX_SHOWN_INPUT else text[: MAX_SHOWN_INPUT - 3] + "..."


def available_experiments(conf_dir: Path) -> list[str]:
    return sorted(path.stem for path in (conf_dir / "experiment").glob("*.yaml"))


def compose_experiment(name: str, conf_dir: Path) -> ExperimentConfig:
    """Merge the preset `conf/experiment/<name>.yaml` over its chosen groups and validate."""
    check_experiment_name(name)
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
        problem = plain_name_problem(option)
        if problem:
            raise ConfigError(
                f"{preset_path}: defaults.{group}: {problem}; name a file of {conf_dir / group}"
            )
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
