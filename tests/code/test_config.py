"""Configuration: presets compose and validate; mistakes fail early, naming file and key."""

from pathlib import Path

import pytest
import yaml

from lamina.config import available_experiments, compose_experiment, flatten_config
from lamina.errors import ConfigError
from tests.conftest import CONF_DIR


def test_every_preset_composes_and_validates():
    names = available_experiments(CONF_DIR)
    assert {"cnn-mnist", "mlp-mnist", "lstm-sentiment", "transformer-sentiment"} <= set(names)
    assert {"gru-co2", "gan-mnist"} <= set(names)
    for name in names:
        config = compose_experiment(name, CONF_DIR)
        assert config.name == name
        assert config.train.epochs > 0


def test_dvc_pipeline_lists_every_preset_with_its_data_kind():
    dvc = yaml.safe_load((CONF_DIR.parent / "dvc.yaml").read_text())
    variables = {key: value for entry in dvc["vars"] for key, value in entry.items()}
    experiments = variables["experiments"]
    assert set(experiments) == set(available_experiments(CONF_DIR))
    for name, data_kind in experiments.items():
        config = compose_experiment(name, CONF_DIR)
        assert config.data.kind == data_kind, name
        evaluated_by = "generative" if config.task == "generation" else "supervised"
        assert name in variables[evaluated_by], name
    assert set(variables["supervised"]) | set(variables["generative"]) == set(experiments)
    plot_paths = [entry if isinstance(entry, str) else next(iter(entry)) for entry in dvc["plots"]]
    for name in experiments:
        assert f"outputs/{name}/history.csv" in plot_paths, name
        assert f"outputs/{name}/plots" in plot_paths, name


def test_the_generator_stage_depends_on_its_judge():
    dvc = yaml.safe_load((CONF_DIR.parent / "dvc.yaml").read_text())
    deps = dvc["stages"]["evaluate-generator"]["do"]["deps"]
    for name in dvc["vars"][2]["generative"]:
        judge = compose_experiment(name, CONF_DIR).model.judge_experiment
        assert f"outputs/{judge}/model" in deps


def test_preset_overrides_group_defaults(cnn_config):
    group = yaml.safe_load((CONF_DIR / "train" / "default.yaml").read_text())
    preset = yaml.safe_load((CONF_DIR / "experiment" / "cnn-mnist.yaml").read_text())
    assert cnn_config.train.epochs == preset["train"]["epochs"]
    assert cnn_config.train.batch_size == group["batch_size"]  # not overridden: from the group


def _write_preset(conf: Path, body: dict) -> None:
    for group in ("data", "model", "train", "cluster"):
        source = CONF_DIR / group
        (conf / group).mkdir(parents=True, exist_ok=True)
        for path in source.glob("*.yaml"):
            (conf / group / path.name).write_text(path.read_text())
    (conf / "experiment").mkdir(parents=True, exist_ok=True)
    base = yaml.safe_load((CONF_DIR / "experiment" / "cnn-mnist.yaml").read_text())
    for section, values in body.items():
        if isinstance(values, dict) and isinstance(base.get(section), dict):
            base[section] = {**base[section], **values}
        else:
            base[section] = values
    (conf / "experiment" / "bad.yaml").write_text(yaml.safe_dump(base))


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"train": {"lr": -0.1}}, "train.lr: Input should be greater than 0"),
        ({"train": {"epochs": 0}}, "train.epochs: Input should be greater than 0"),
        ({"train": {"epochs": "many"}}, "train.epochs: Input should be a valid integer"),
        ({"train": {"learning_rate": 0.1}}, "train.learning_rate: Extra inputs are not permitted"),
        ({"model": {"activation": "swish"}}, "model.activation: Input should be"),
        ({"split": {"val_fraction": 0.5, "test_fraction": 0.45}}, "split: Value error"),
        ({"split": {"test_fraction": 1.5}}, "split.test_fraction: Input should be less than 1"),
        ({"cluster": {"num_workers": 0}}, "cluster.num_workers: Input should be greater than 0"),
        ({"unknown_section": {"a": 1}}, "unknown_section: Extra inputs are not permitted"),
        ({"defaults": {"model": "resnet"}}, "defaults.model: no option 'resnet'"),
        ({"defaults": {"optimizer": "adam"}}, "defaults.optimizer: unknown config group"),
        ({"preprocess": {"kind": "vocabulary"}}, "preprocess.kind 'vocabulary' does not apply"),
        ({"defaults": {"model": "transformer"}}, "model.kind 'transformer' does not apply"),
        ({"preprocess": {"kind": "fourier"}}, "preprocess: Input tag 'fourier'"),
    ],
)
def test_bad_config_is_one_error_naming_file_and_key(tmp_path, override, expected):
    _write_preset(tmp_path, override)
    with pytest.raises(ConfigError) as error:
        compose_experiment("bad", tmp_path)
    message = str(error.value)
    assert expected in message
    assert str(tmp_path / "experiment" / "bad.yaml") in message
    assert "\n" not in message


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ConfigError, match="no such experiment preset.*cnn-mnist"):
        compose_experiment("cnn-imagenet", CONF_DIR)


def test_yaml_syntax_error_names_the_file(tmp_path):
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "broken.yaml").write_text("train: [epochs: 3\n")
    with pytest.raises(ConfigError, match="broken.yaml: not valid YAML"):
        compose_experiment("broken", tmp_path)


def test_flattened_params_are_dotted_strings(cnn_config):
    flat = flatten_config(cnn_config)
    assert flat["train.lr"] == str(cnn_config.train.lr)
    assert flat["model.channels"] == str(cnn_config.model.channels)
    assert all(isinstance(value, str) for value in flat.values())
