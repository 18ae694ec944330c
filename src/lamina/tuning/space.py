"""From the `tune` config to Ray Tune objects: search domains, the searcher, the scheduler."""

from __future__ import annotations

from typing import Any

from lamina.config import SearchDimension, TuneConfig


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


def make_searcher(settings: TuneConfig, metric: str, mode: str):
    """Optuna's TPE (learns from finished trials) or plain random sampling, both seeded."""
    if settings.searcher == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(metric=metric, mode=mode, seed=settings.seed)
    from ray.tune.search.basic_variant import BasicVariantGenerator

    # Tune applies `max_concurrent_trials` to a Searcher, not to a generator handed to it.
    return BasicVariantGenerator(
        random_state=settings.seed, max_concurrent=settings.max_concurrent_trials
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
