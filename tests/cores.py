"""Where the test suite's reactors run: one place decides, every test asks it.

An SPDK reactor busy-polls its core, so two reactors on one core take turns in
scheduler slices of milliseconds and every I/O between them crawls; a reactor
started with the core locks off (as the tests start them) does not notice.
The policy, for the CPUs this process may use (2 on the CI machine):

- The session runtime (conftest's `runtime` fixture, in the pytest process)
  polls the first CPU: SESSION_MASK.
- A reactor a test starts in another process (a Runtime in a run_python
  script or transport_roles.py, spdk_tgt through processes.new_process,
  bdevperf, `python -m pyspdk_sys serve`) takes reactor_mask(slot): slot 0 is
  the next CPU after the session's, slot 1 the one after, wrapping round. A
  test with one such reactor uses slot 0, away from the session's reactor
  (which polls on, idle, through the whole run); a target and its initiator
  use slots 0 and 1, so they never share a core with each other. With 2 CPUs
  slot 1 is the session's CPU again: the least bad place, since that reactor
  is idle while a subprocess test runs.
- The pytest process's own threads are not pinned: they mostly wait, the
  scheduler moves them to whichever CPU has room, and a pinned pytest would
  pass its pin on to every process it starts (whose main thread would then
  share one core with its own reactor).

Tests about placement itself (test_placement.py, test_reactors.py's two
reactors, a mask naming a core the machine lacks) choose their cores on
purpose; everything else takes them from here. Subprocess scripts import this
module too (run_python runs them in tests/, transport_roles.py lives here).
"""

from __future__ import annotations

import os


def _cpus() -> list[int]:
    """The CPUs this process may run on, the session's first."""
    return sorted(os.sched_getaffinity(0))


def _mask(cores: set[int]) -> str:
    return hex(sum(1 << core for core in cores))


SESSION_CORE = _cpus()[0]
SESSION_MASK = _mask({SESSION_CORE})


def reactor_cores(slot: int = 0, count: int = 1) -> list[int]:
    """The cores of `count` reactors for a test's other process, from `slot` on."""
    cpus = _cpus()
    order = cpus[1:] + cpus[:1]  # the session's CPU last
    return [order[(slot + i) % len(order)] for i in range(count)]


def reactor_mask(slot: int = 0, count: int = 1) -> str:
    """The CPU mask for a reactor a test starts in another process (see the policy above)."""
    return _mask(set(reactor_cores(slot, count)))
