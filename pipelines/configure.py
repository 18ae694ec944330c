"""DVC stage `configure`: compose conf/ for one experiment, validate it, write the result.

Out: outputs/<experiment>/config.yaml, the params file every later stage reads.
"""

from lamina.atomic import atomic_write_text
from lamina.config.compose import compose_experiment, dump_config
from lamina.config.paths import CONF_DIR, ExperimentPaths
from lamina.entrypoint import run_stage


def configure(experiment: str) -> None:
    config = compose_experiment(experiment, CONF_DIR)
    atomic_write_text(ExperimentPaths(experiment).config, dump_config(config))


if __name__ == "__main__":
    run_stage(configure)
