"""A watchdog that ends process groups once the process that started them is gone, even when
that process was killed with SIGKILL and could clean up nothing itself.

The watching process holds the write end of a pipe that is the watchdog's stdin and sends it,
one line each, the process groups to end and the signal that ends each one gracefully. The
kernel closes the pipe however the watching process ends: at end of input the watchdog ends
the groups, the last one named first, each with its signal and, after `GRACE_S`, SIGKILL. A
watching process that cleaned up itself says `done` first, and the watchdog just exits.

Run as `python -m lamina.cluster.group_watchdog`, in a session of its own, so that a signal to
the watching process's group does not end the watchdog too.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

DONE = "done"
GRACE_S = 10.0
POLL_S = 0.2


class GroupWatchdog:
    """The watching side: start the watchdog, name groups to it, release it when done."""

    def __init__(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", __name__],
            stdin=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )

    def watch(self, process_group: int, graceful: signal.Signals) -> None:
        self._process.stdin.write(f"{process_group} {graceful.value}\n")
        self._process.stdin.flush()

    def release(self) -> None:
        """Every watched group has been ended already: nothing is left for the watchdog."""
        with contextlib.suppress(BrokenPipeError):
            self._process.stdin.write(DONE + "\n")
            self._process.stdin.close()
        self._process.wait()


def end_group(process_group: int, graceful: int) -> None:
    """`graceful` to the group, then SIGKILL to whatever of it is left after `GRACE_S`."""
    try:
        os.killpg(process_group, graceful)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + GRACE_S
    while time.monotonic() < deadline:
        try:
            os.killpg(process_group, 0)
        except ProcessLookupError:
            return
        time.sleep(POLL_S)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process_group, signal.SIGKILL)


def main() -> None:
    # Ctrl-C in the terminal is for the watched process, which tells the watchdog itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    groups: list[tuple[int, int]] = []
    for line in sys.stdin:
        if line.strip() == DONE:
            return
        process_group, graceful = (int(field) for field in line.split())
        groups.append((process_group, graceful))
    for process_group, graceful in reversed(groups):
        end_group(process_group, graceful)


if __name__ == "__main__":
    main()
