"""How much of a core a process uses while idle, measured so that load cannot hide a busy reactor.

A reactor that polls (or an interrupt-mode reactor kept awake by a poller that
cannot sleep) takes whatever share of its core the scheduler gives it: a whole
core on a quiet machine, 17-25% here under a load of 11, less on a busier one.
So a bound on CPU time alone passes a busy reactor on a loaded machine. usage()
therefore also runs a spinner pinned to the reactor's core over the same
window: a busy reactor gets about what the spinner gets, a sleeping one a small
fraction of it. Runnable time (running or waiting for a CPU, from schedstat) is
reported beside: a busy reactor is runnable 100% of the time, but SPDK's RPC
server wakes every 4 ms and each wakeup can wait long for a loaded core, so it
is not bounded.

Plain Python with no imports from the tests: the subprocess scripts of
test_interrupt_mode.py embed this file's text (SOURCE).
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import time
from pathlib import Path

IDLE_LIMIT_PERCENT = 10.0  # of a core, absolute
BUSY_FRACTION = 1 / 3  # of what a spinner on the same core gets


def _sched_ns(pid: int) -> tuple[int, int]:
    """(running, running + waiting for a CPU) in ns, summed over pid's threads."""
    running = runnable = 0
    for path in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        try:
            with open(path) as f:
                run, wait, _ = f.read().split()
        except (OSError, ValueError):
            continue  # a thread that ended meanwhile
        running += int(run)
        runnable += int(run) + int(wait)
    return running, runnable


SPIN = "import os, sys\nos.sched_setaffinity(0, {int(sys.argv[1])})\nwhile True:\n    pass\n"


def usage(seconds: float = 3.0, pid: int | None = None, core: int = 0) -> dict[str, float]:
    """CPU, runnable time and a spinner's CPU on `core`, each in % of wall time over seconds.

    pid: the process to measure (this one by default); core: the core its
    reactor runs on.
    """
    pid = os.getpid() if pid is None else pid
    spinner = subprocess.Popen([sys.executable, "-c", SPIN, str(core)])
    try:
        time.sleep(0.2)  # the spinner runs
        (run0, able0), (spin0, _) = _sched_ns(pid), _sched_ns(spinner.pid)
        wall0 = time.monotonic()
        time.sleep(seconds)
        (run1, able1), (spin1, _) = _sched_ns(pid), _sched_ns(spinner.pid)
        wall = (time.monotonic() - wall0) * 1e9
    finally:
        spinner.kill()
        spinner.wait()
    return {
        "cpu": 100 * (run1 - run0) / wall,
        "runnable": 100 * (able1 - able0) / wall,
        "busy": 100 * (spin1 - spin0) / wall,
    }


def assert_sleeps(found: dict[str, float]) -> None:
    """usage() of a process whose reactors sleep."""
    assert found["cpu"] < IDLE_LIMIT_PERCENT, found
    assert found["cpu"] < BUSY_FRACTION * found["busy"], found


# This file's text up to here, without the __future__ import (it must come
# first in a script), for scripts that run in another interpreter.
SOURCE = (
    Path(__file__)
    .read_text()
    .split("\n# This file's text up to here")[0]
    .replace("from __future__ import annotations\n", "")
)
