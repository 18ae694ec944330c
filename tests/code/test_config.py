"""Configuration: presets compose and validate; mistakes fail early, naming file and key."""

from pathlib import Path

import pytest
import yaml

from lamina.config.compose import (
    MAX_YAML_BYTES,
    available_experiments,
    compose_experiment,
    flatten_config,
    load_resolved_config,
)
from lamina.config.paths import ExperimentPaths
from lamina.config.schema import CONFIG_GROUPS
from lamina.errors import ConfigError
from tests.conftest import CONF_DIR, pipeline_vars


def test_every_preset_composes_and_validates():
    names = available_experiments(CONF_DIR)
    assert set(names) == set(pipeline_vars()["experiments"])
    for name in names:
        config = compose_experiment(name, CONF_DIR)
        assert config.name == name
        assert config.train.epochs > 0


def test_dvc_pipeline_lists_every_preset_with_its_data_kind():
    dvc = yaml.safe_load((CONF_DIR.parent / "dvc.yaml").read_text())
    variables = {key: value for entry in dvc["vars"] for key, value in entry.items()}
    experiments = variables["experiments"]
    assert set(experiments) == set(available_experiments(CONF_DIR))
    for name, entry in experiments.items():
        config = compose_experiment(name, CONF_DIR)
        assert config.data.kind == entry["data"], name
        evaluated_by = "generative" if config.task == "generation" else "supervised"
        assert name in variables[evaluated_by], name
    assert set(variables["supervised"]) | set(variables["generative"]) == set(experiments)
    plot_paths = [entry if isinstance(entry, str) else next(iter(entry)) for entry in dvc["plots"]]
    for name in experiments:
        assert f"outputs/{name}/history.csv" in plot_paths, name
        assert f"outputs/{name}/plots" in plot_paths, name


def test_configure_reruns_when_any_config_group_changes():
    """A preset composes files from every group folder (a search space from conf/tune/...):
    each folder is a dependency of the stage that composes them, or an edit there goes unseen."""
    dvc = yaml.safe_load((CONF_DIR.parent / "dvc.yaml").read_text())
    deps = dvc["stages"]["configure"]["do"]["deps"]
    assert {f"conf/{group}" for group in CONFIG_GROUPS} <= set(deps)


def test_the_generator_stage_depends_on_its_judge():
    dvc = yaml.safe_load((CONF_DIR.parent / "dvc.yaml").read_text())
    deps = dvc["stages"]["evaluate-generator"]["do"]["deps"]
    for name in dvc["vars"][2]["generative"]:
        judge = compose_experiment(name, CONF_DIR).model.judge_experiment
        assert f"outputs/{judge}/model" in deps


def test_tune_and_train_depend_on_the_teacher_each_preset_names():
    """`learns_from` in dvc.yaml is what orders a student's search and training after its
    teacher's training, and reruns them when the teacher changes."""
    dvc = yaml.safe_load((CONF_DIR.parent / "dvc.yaml").read_text())
    for stage in ("tune", "train"):
        assert "${item.learns_from}" in dvc["stages"][stage]["do"]["deps"]
    students = 0
    for name, entry in dvc["vars"][0]["experiments"].items():
        distillation = compose_experiment(name, CONF_DIR).train.distillation
        own = f"outputs/{name}/features"
        expected = own if distillation is None else f"outputs/{distillation.teacher}/model"
        assert entry["learns_from"] == expected, name
        students += distillation is not None
    assert students >= 1  # transformer-sentiment learns from lstm-sentiment


def test_preset_overrides_group_defaults(cnn_config):
    group = yaml.safe_load((CONF_DIR / "train" / "default.yaml").read_text())
    preset = yaml.safe_load((CONF_DIR / "experiment" / "cnn-mnist.yaml").read_text())
    assert cnn_config.train.epochs == preset["train"]["epochs"]
    assert cnn_config.train.batch_size == group["batch_size"]  # not overridden: from the group


def _write_preset(conf: Path, body: dict) -> None:
    for group in CONFIG_GROUPS:
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


def _space(key: str, **dimension: object) -> dict:
    return {"tune": {"space": {key: dimension}}}


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"train": {"lr": -0.1}}, "train.lr: Input should be greater than 0"),
        ({"train": {"lr": float("inf")}}, "train.lr: Input should be a finite number"),
        ({"train": {"adam_betas": [0.5, float("nan")]}}, "train.adam_betas.1: Input should be a"),
        ({"train": {"epochs": 0}}, "train.epochs: Input should be greater than 0"),
        ({"train": {"epochs": "many"}}, "train.epochs: Input should be a valid integer"),
        ({"train": {"learning_rate": 0.1}}, "train.learning_rate: Extra inputs are not permitted"),
        ({"model": {"activation": "swish"}}, "model.activation: Input should be"),
        (
            {"split": {"val_fraction": 0.5, "test_fraction": 0.45}},
            "split: val_fraction + test_fraction must leave",
        ),
        ({"split": {"test_fraction": 1.5}}, "split.test_fraction: Input should be less than 1"),
        ({"cluster": {"num_workers": 0}}, "cluster.num_workers: Input should be greater than 0"),
        ({"unknown_section": {"a": 1}}, "unknown_section: Extra inputs are not permitted"),
        ({"defaults": {"model": "resnet"}}, "defaults.model: no option 'resnet'"),
        (
            {"defaults": {"model": "../../../etc/x"}},
            "defaults.model: '../../../etc/x' is not a plain name",
        ),
        ({"defaults": {"train": "/etc/passwd"}}, "defaults.train: '/etc/passwd' is not a plain"),
        ({"defaults": {"model": ["cnn"]}}, "defaults.model: ['cnn'] is not a plain name"),
        (
            {"train": {"distillation": {"teacher": "../../x"}}},
            "train.distillation.teacher: '../../x' is not a plain name",
        ),
        ({"model": {"channels": list(range(1, 500))}}, "(got [1, 2, 3, 4, 5,"),
        ({"defaults": {"optimizer": "adam"}}, "defaults.optimizer: unknown config group"),
        ({"preprocess": {"kind": "vocabulary"}}, "preprocess.kind 'vocabulary' does not apply"),
        ({"defaults": {"model": "lstm"}}, "model.kind 'rnn' does not apply"),
        ({"preprocess": {"kind": "fourier"}}, "preprocess: Input tag 'fourier'"),
        ({"train": {"length_buckets": 8}}, "train.length_buckets groups texts by length"),
        (
            {"train": {"distillation": {"teacher": "mlp-mnist", "weight": 1.5}}},
            "train.distillation.weight: Input should be less than or equal to 1",
        ),
        ({"train": {"distillation": {"teacher": "bad"}}}, "bad cannot be its own teacher"),
        (
            {
                "train": {"distillation": {"teacher": "mlp-mnist"}},
                "cluster": {"materialize_train": False},
            },
            "set cluster.materialize_train: true",
        ),
        (
            {
                "defaults": {"data": "co2", "model": "gru_forecaster"},
                "preprocess": {"kind": "windows"},
                "train": {"distillation": {"teacher": "lstm-sentiment"}},
            },
            "bad is a regression experiment (remove train.distillation)",
        ),
        # Search spaces: wrong before any trial starts.
        (_space("train.lr", distribution="normal", low=1, high=2), "tune.space.train.lr.dist"),
        (
            _space("train.lr", distribution="loguniform", low=0.1, high=0.01),
            "tune.space.train.lr: low (0.1) must be below high (0.01)",
        ),
        (
            _space("train.lr", distribution="loguniform", low=0.0, high=0.01),
            "tune.space.train.lr: loguniform needs low > 0",
        ),
        (
            _space("model.activation", distribution="choice", values=[]),
            "tune.space.model.activation: a choice needs a non-empty list",
        ),
        (
            _space("model.widht", distribution="int", low=1, high=4),
            "tune.space.model.widht: no such config key",
        ),
        (
            _space("model.dropout", distribution="uniform", low=0.1, high=1.5),
            "tune.space.model.dropout: value 1.5 is invalid: Input should be less than 1",
        ),
        (
            _space("model.activation", distribution="choice", values=["relu", "swish"]),
            "tune.space.model.activation: value 'swish' is invalid",
        ),
        ({"tune": {"num_trials": 0}}, "tune.num_trials: Input should be greater than 0"),
        (
            {
                "tune": {
                    "try_config_first": True,
                    "space": {"train.lr": {"distribution": "uniform", "low": 0.002, "high": 0.1}},
                }
            },
            "tune.try_config_first: train.lr is 0.0014050388998463588, which tune.space.train.lr "
            "cannot sample",
        ),
        (
            {
                "tune": {
                    "try_config_first": True,
                    "space": {"model.activation": {"distribution": "choice", "values": ["relu"]}},
                }
            },
            "model.activation is 'leaky_relu', which tune.space.model.activation cannot sample",
        ),
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


def test_a_long_invalid_value_is_quoted_short(tmp_path):
    _write_preset(tmp_path, {"model": {"channels": list(range(1, 5000))}})
    with pytest.raises(ConfigError) as error:
        compose_experiment("bad", tmp_path)
    assert len(str(error.value)) < 500


# An alias bomb: 9 values, each level a list of 9 of the level before: 9**10 values expanded.
ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + level)}: &{chr(98 + level)} [{', '.join([f'*{chr(97 + level)}'] * 9)}]\n"
    for level in range(9)
)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (ALIAS_BOMB.encode(), "not valid YAML: an alias (*a): config files allow none"),
        (b"train: " + b"[" * 5000 + b"]" * 5000, "nested deeper than 32 levels"),
        (b"name: " + b"x" * MAX_YAML_BYTES, "larger than 256 KB"),
        ("train: {epochs: 3}  # été\n".encode("latin-1"), "not UTF-8 text (byte 0xe9 at offset"),
    ],
)
def test_a_preset_is_read_within_limits(tmp_path, body, expected):
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "hostile.yaml").write_bytes(body)
    with pytest.raises(ConfigError) as error:
        compose_experiment("hostile", tmp_path)
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'experiment' / 'hostile.yaml'}: ")
    assert expected in message and "\n" not in message


def test_a_resolved_config_is_read_within_the_same_limits(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(ALIAS_BOMB)
    with pytest.raises(ConfigError, match="an alias"):
        load_resolved_config(path)


@pytest.mark.parametrize("name", ["../cnn-mnist", "../../../tmp/x", "a/b", "/etc/x", ".hidden", ""])
def test_an_experiment_name_cannot_leave_conf_or_outputs(name):
    with pytest.raises(ConfigError, match="experiment name: .* is not a plain name"):
        compose_experiment(name, CONF_DIR)
    with pytest.raises(ConfigError, match="is not a plain name"):
        ExperimentPaths(name)


def test_outputs_that_cannot_be_written_fail_before_the_stage(tmp_path):
    ExperimentPaths("cnn-mnist", tmp_path).check_writable()
    assert list(tmp_path.iterdir()) == []  # the probe left nothing
    (tmp_path / "outputs").write_text("not a folder")
    with pytest.raises(
        ConfigError, match="outputs: a file where the folder for the outputs of cnn-mnist must be"
    ):
        ExperimentPaths("cnn-mnist", tmp_path).check_writable()
    # /proc takes no new files, even from root (whom a read-only mode bit does not stop).
    with pytest.raises(ConfigError, match="^/proc: cannot write the outputs of cnn-mnist"):
        ExperimentPaths("cnn-mnist", Path("/proc")).check_writable()


def test_flattened_params_are_dotted_strings(cnn_config):
    flat = flatten_config(cnn_config)
    assert flat["train.lr"] == str(cnn_config.train.lr)
    assert flat["model.channels"] == str(cnn_config.model.channels)
    assert all(isinstance(value, str) for value in flat.values())


def test_every_search_has_dvc_plots_per_trial_and_per_parameter():
    dvc = yaml.safe_load((CONF_DIR.parent / "dvc.yaml").read_text())
    for name in available_experiments(CONF_DIR):
        config = compose_experiment(name, CONF_DIR)
        if config.tune is None:
            continue
        trials = f"outputs/{name}/tune/trials.csv"
        monitor = config.train.early_stopping.monitor
        scatter_x = set()
        for entry in dvc["plots"]:
            if isinstance(entry, dict):
                (spec,) = entry.values()
                if spec.get("x") == "trial" and trials in entry:
                    assert spec["y"] == monitor
                elif isinstance(spec.get("x"), dict) and trials in spec["x"]:
                    assert spec["y"] == {trials: monitor}
                    scatter_x.add(spec["x"][trials])
        assert {trials: {"x": "trial", "y": monitor}} in dvc["plots"], name
        assert scatter_x == set(config.tune.space), name


@pytest.mark.parametrize("search", sorted(path.stem for path in (CONF_DIR / "tune").glob("*.yaml")))
def test_every_search_space_composes_with_a_preset_of_its_model(tmp_path, search):
    """conf/tune/<model>.yaml files that no preset switches on by default must still compose:
    a user turns one on with `defaults: {tune: <model>}` and expects it to validate."""
    presets = {
        name: yaml.safe_load((CONF_DIR / "experiment" / f"{name}.yaml").read_text())
        for name in available_experiments(CONF_DIR)
    }
    matching = [name for name, preset in presets.items() if preset["defaults"]["model"] == search]
    assert matching, f"conf/tune/{search}.yaml: no preset uses conf/model/{search}.yaml"
    _write_preset(tmp_path, {})
    preset = presets[matching[0]]
    preset["defaults"]["tune"] = search
    (tmp_path / "experiment" / "searched.yaml").write_text(yaml.safe_dump(preset))
    config = compose_experiment("searched", tmp_path)
    assert config.tune is not None and config.tune.space
