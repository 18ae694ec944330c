"""Search pieces without running a search: domains, per-trial config, params applied by train."""

import pytest
from ray import tune
from ray.tune.schedulers import ASHAScheduler

from lamina.config.compose import load_best_params, with_overrides
from lamina.config.schema import SearchDimension
from lamina.errors import ConfigError
from lamina.tuning.space import first_trials, make_scheduler, make_searcher, search_domains
from lamina.tuning.trial import trial_config


def test_each_distribution_becomes_the_matching_tune_domain():
    domains = search_domains(
        {
            "train.lr": SearchDimension(distribution="loguniform", low=1e-4, high=1e-2),
            "model.dropout": SearchDimension(distribution="uniform", low=0.1, high=0.5),
            "model.hidden_size": SearchDimension(distribution="int", low=2, high=3),
            "model.activation": SearchDimension(distribution="choice", values=["relu", "gelu"]),
        }
    )
    lr, dropout = domains["train.lr"], domains["model.dropout"]
    assert isinstance(lr.get_sampler(), tune.search.sample.LogUniform)
    assert (lr.lower, lr.upper) == (1e-4, 1e-2)
    assert (dropout.lower, dropout.upper) == (0.1, 0.5)
    # `int` is inclusive of `high`: both ends get sampled.
    assert {domains["model.hidden_size"].sample() for _ in range(200)} == {2, 3}
    assert domains["model.activation"].categories == ["relu", "gelu"]


def test_a_trial_gets_its_sample_the_search_budget_and_no_search_of_its_own(cnn_config):
    searched = with_overrides(cnn_config, {"tune.max_epochs_per_trial": 3})
    config = trial_config(searched, {"train.lr": 0.004, "model.activation": "gelu"})
    assert (config.train.lr, config.model.activation) == (0.004, "gelu")
    assert config.train.epochs == 3
    assert config.cluster.num_workers == searched.tune.workers_per_trial
    assert config.cluster.cpus_per_worker == searched.tune.cpus_per_worker
    assert config.tune is None
    assert config.data == cnn_config.data  # everything not searched stays as configured


def test_a_grace_period_beyond_the_trial_budget_is_capped(cnn_config):
    """ASHA itself refuses grace_period > max_t; a short search budget must still work."""
    settings = cnn_config.tune.model_copy(
        update={"scheduler": "asha", "grace_period": 5, "max_epochs_per_trial": 2}
    )
    with pytest.raises(AssertionError, match="grace_period must be <= max_t"):
        ASHAScheduler(max_t=2, grace_period=5)
    assert isinstance(make_scheduler(settings), ASHAScheduler)


def test_overrides_must_name_existing_keys_and_valid_values(cnn_config):
    with pytest.raises(ConfigError, match="train.learning_rate: no such config key"):
        with_overrides(cnn_config, {"train.learning_rate": 0.1})
    with pytest.raises(ConfigError, match="model.dropout"):
        with_overrides(cnn_config, {"model.dropout": 2.0})


def test_best_params_file_with_and_without_a_search(tmp_path):
    untuned = tmp_path / "none.yaml"
    untuned.write_text("# no search\nparams: {}\n")
    assert load_best_params(untuned) == {}
    tuned = tmp_path / "best.yaml"
    tuned.write_text("params:\n  train.lr: 0.002\n  model.activation: gelu\nbest_trial: 3\n")
    assert load_best_params(tuned) == {"train.lr": 0.002, "model.activation": "gelu"}


@pytest.mark.parametrize("searcher", ["optuna", "random"])
def test_try_config_first_runs_the_configs_values_then_samples(cnn_config, local_ray, searcher):
    """A real Tune run (a trial only reports its config): trial 1 gets the config's own values
    of the searched keys, the later trials samples of the space."""
    config = with_overrides(
        cnn_config, {"tune.try_config_first": True, "tune.searcher": searcher, "tune.seed": 3}
    )
    assert first_trials(with_overrides(cnn_config, {"tune.try_config_first": False})) is None
    (written,) = first_trials(config)
    assert written == {
        "train.lr": config.train.lr,
        "model.dropout": config.model.dropout,
        "model.hidden_size": config.model.hidden_size,
        "model.activation": config.model.activation,
    }

    def report_config(params):
        tune.report({"val/loss": float(params["train.lr"])})

    results = tune.Tuner(
        report_config,
        param_space=search_domains(config.tune.space),
        tune_config=tune.TuneConfig(
            metric="val/loss",
            mode="min",
            search_alg=make_searcher(config, "val/loss", "min"),
            num_samples=3,
            max_concurrent_trials=1,
        ),
        run_config=tune.RunConfig(verbose=0),
    ).fit()
    assert len(results) == 3
    configs = [{key: result.config[key] for key in written} for result in results]
    assert configs[0] == written
    assert all(sampled != written for sampled in configs[1:])
