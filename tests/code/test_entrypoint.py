"""How entry points end: a user's error as one line and exit code 2, and a quick exit."""

import subprocess
import sys

FROZEN_AT_EXIT = """
import gc
import sys

from lamina.entrypoint import exit_on_user_error
from lamina.errors import DataError

objects = [[number] for number in range(10_000)]
frozen_before = gc.get_freeze_count()


def main():
    print(frozen_before, flush=True)
    if sys.argv[1] == "fail":
        raise DataError("data/x.csv: not found")


exit_on_user_error(main, "lamina test")
print(gc.get_freeze_count(), flush=True)
"""


def run_child(mode: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", FROZEN_AT_EXIT, mode], capture_output=True, text=True, timeout=120
    )


def test_a_finished_entry_point_leaves_its_objects_to_the_os():
    child = run_child("ok")

    assert child.returncode == 0, child.stderr
    frozen_before, frozen_after = (int(line) for line in child.stdout.split())
    assert frozen_before == 0
    assert frozen_after >= 10_000  # skipped by the interpreter's last garbage collection


def test_a_user_error_is_one_line_and_exit_code_2():
    child = run_child("fail")

    assert child.returncode == 2
    assert child.stderr == "lamina test: error: data/x.csv: not found\n"
