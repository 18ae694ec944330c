"""From the `tune` config to Ray Tune objects: search domains, the searcher, the scheduler."""

from __future__ import annotations

from typing import Any

from lamina.config.schema import ExperimentConfig, SearchDimension, TuneConfig, get_dotted


def search_domains(space: dict[str, SearchDimension]) -> dict[str, Any]:
    """`{"train.lr": tune.loguniform(...), ...}`: the param space Tune samples trials from."""
    from ray import tune

    domains = {}
    for key, dimension in space.items():
        if dimension.distribution == "uniform":
            domains[key] = tune.uniform(dimension.low, dimension.high)
        elif dimension.distribution == "loguniform":
            domains[key] = tune.loguniform(dimension.low, dimension.high)
        elif dimension.distribution == "int":
            domains[key] = tune.randint(int(dimension.low), int(dimension.high) + 1)  # inclusive
        else:
            domains[key] = tune.choice(dimension.values)
    return domains


def first_trials(config: ExperimentConfig) -> list[dict[str, Any]] | None:
    """The trials to run before any sampling: the config's own values when
    `tune.try_config_first` asks for them (config validation checked they lie in the space)."""
    if not config.tune.try_config_first:
        return None
    tree = config.model_dump(mode="json")
    return [{key: get_dotted(tree, key) for key in config.tune.space}]


def make_searcher(config: ExperimentConfig, metric: str, mode: str):
    """Optuna's TPE (learns from finished trials) or plain random sampling, both seeded."""
    settings: TuneConfig = config.tune
    if settings.searcher == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(
            metric=metric,
            mode=mode,
            seed=settings.seed,
            points_to_evaluate=first_trials(config),
        )
    from ray.tune.search.basic_variant import BasicVariantGenerator

    # Tune applies `max_concurrent_trials` to a Searcher, not to a generator handed to it.
    return BasicVariantGenerator(
        points_to_evaluate=first_trials(config),
        random_state=settings.seed,
        max_concurrent=settings.max_concurrent_trials,
    )


def make_scheduler(settings: TuneConfig):
    """ASHA stops the weaker trials at each rung (1, 1*rf, 1*rf^2... epochs); FIFO never does."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if settings.scheduler == "fifo":
        return FIFOScheduler()
    return ASHAScheduler(
        time_attr="training_iteration",  # one report per epoch
        max_t=settings.max_epochs_per_trial,
        grace_period=min(settings.grace_period, settings.max_epochs_per_trial),
        reduction_factor=settings.reduction_factor,
    )
