"""What a training run's workers are given: the typed config and the run they log into.

It crosses into Ray as the one entry of Ray Train's `train_loop_config` dict (the Train V2
shape: `train_fn_per_worker(config)`), pickled as it is: the workers trust it, as validated
where the config was loaded.
"""

from __future__ import annotations

from dataclasses import dataclass

from lamina.config.schema import ExperimentConfig
from lamina.tracking.training_runs import TrackedRun

_LOOP_CONFIG_KEY = "run_context"


@dataclass(frozen=True, repr=False)
class TrainingRunContext:
    experiment: ExperimentConfig  # tuned values (or a trial's sample) applied
    run: TrackedRun
    vocabulary: list[str] | None = None  # text models' fitted tokens, by id
    label: str | None = None  # tells concurrent runs' progress lines apart (Tune trials)
    # Whether Ray Train shares out `train` (streaming from Parquet) or the driver cut one
    # dataset per worker (`driver.TrainingData.for_workers`).
    train_split_by_ray: bool = True

    def as_loop_config(self) -> dict[str, TrainingRunContext]:
        return {_LOOP_CONFIG_KEY: self}

    @staticmethod
    def from_loop_config(loop_config: dict[str, TrainingRunContext]) -> TrainingRunContext:
        return loop_config[_LOOP_CONFIG_KEY]

    def __repr__(self) -> str:
        # Ray Train keeps the loop config's text in its run state; a vocabulary would fill it.
        return (
            f"TrainingRunContext(experiment={self.experiment.name!r}, "
            f"run_id={self.run.run_id!r}, label={self.label!r})"
        )
