"""How every Lamina entry point (DVC stage scripts, the `lamina` CLI) reports failure.

A `LaminaError` is a user's problem: one line on stderr, exit code 2, no traceback.
Ctrl-C exits 130 without a traceback. Anything else is a bug and keeps its traceback.
Either way the process then exits without a last garbage collection (see `exit_on_user_error`),
and nothing it wrote to stdout or stderr, tracebacks included, shows a password.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from lamina.config.paths import ExperimentPaths
from lamina.errors import LaminaError
from lamina.redaction import redact_standard_streams

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def configure_logging() -> None:
    level = os.environ.get("LAMINA_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=level, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def exit_on_user_error(main: Callable[[], None], program: str) -> None:
    # Also what the interpreter prints of an unexpected exception, after this returns.
    redact_standard_streams()
    try:
        main()
    except LaminaError as exc:
        print(f"{program}: error: {exc}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt:
        print(
            f"{program}: interrupted; outputs of the unfinished stage were not kept",
            file=sys.stderr,
        )
        sys.exit(EXIT_INTERRUPTED)
    finally:
        # At exit the interpreter collects garbage over every object torch, Ray and MLflow
        # made, for memory the OS takes back anyway; frozen, exit takes a fraction of the time
        # (bench/stage_exit.py). Exit handlers and finalizers still run.
        gc.freeze()


def run_stage(stage: Callable[[str], None]) -> None:
    """`python pipelines/<stage>.py <experiment>`: run one stage for one experiment."""
    # Named after the script (pipelines/train.py -> "lamina train"): run as a script, the
    # stage function's module is "__main__".
    program = f"lamina {Path(sys.argv[0]).stem}"
    if len(sys.argv) != 2:
        print(f"usage: python {sys.argv[0]} EXPERIMENT", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    configure_logging()
    exit_on_user_error(lambda: _run_where_it_can_write(stage, sys.argv[1]), program)


def _run_where_it_can_write(stage: Callable[[str], None], experiment: str) -> None:
    # Every stage writes under outputs/<experiment>/: a name that leads elsewhere or a folder
    # that cannot be written fails here, not after the stage has started Ray.
    ExperimentPaths(experiment).check_writable()
    stage(experiment)
