"""Time bounds in the tests: what they are bounded by, and the baseline they come from.

A test that bounds a time says what it must not wait for (a timeout, a
device's delay, a hang). Where that is far away, the bound sits well below it
and is a correctness bound. Where the bound is about promptness, it comes
from a baseline measured in the same test, on the machine as loaded as it is
then: the bound is the expected time plus BASELINE_FACTOR times the baseline
plus BOUND_FLOOR_S. Both are generous on purpose: a shared 2-core machine with
busy-polling reactors stretches every wait.

No pytest here: subprocess scripts (run_python, transport_roles.py) import it too.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

BASELINE_FACTOR = 5
BOUND_FLOOR_S = 0.25


def worst_time(operation: Callable[[], object], runs: int = 3) -> float:
    """The longest of `runs` timings of operation(), in seconds: a baseline."""
    worst = 0.0
    for _ in range(runs):
        started = time.monotonic()
        operation()
        worst = max(worst, time.monotonic() - started)
    return worst


def wake_lateness(runs: int = 3) -> float:
    """How late a 10 ms timed wait ends here now (the worst of `runs`): the baseline for
    how long the scheduler keeps a woken thread waiting."""
    return max(0.0, worst_time(lambda: threading.Event().wait(0.01), runs) - 0.01)


def time_bound(expected: float, baseline: float) -> float:
    """The most a faulted operation may take: `expected` (a timeout, a deadline) plus
    BASELINE_FACTOR times the baseline the test measured, plus BOUND_FLOOR_S."""
    return expected + BASELINE_FACTOR * baseline + BOUND_FLOOR_S
