"""os.fork() after SPDK started: the child must not drive the parent's SPDK.

A forked child inherits the runtime, devices, buffers and RPC clients as
Python objects, but not SPDK's threads: a call would queue work nobody runs,
or touch memory the parent's reactor owns. Every object that holds SPDK state
registers here; in the child each is told at once (os.register_at_fork), so
its next use raises RuntimeStateError and the parent is never touched.
"""

from __future__ import annotations

import os
import weakref
from typing import Protocol


class ForkAware(Protocol):
    def _after_fork_in_child(self) -> None: ...


_OBJECTS: weakref.WeakSet[ForkAware] = weakref.WeakSet()
PARENT_PID = os.getpid()
forked = False


def track(obj: ForkAware) -> None:
    """Tell `obj` when this process forks: in the child it must refuse every call."""
    _OBJECTS.add(obj)


def forked_message(what: str) -> str:
    return (
        f"{what} belongs to SPDK in process {PARENT_PID}; this is a forked child "
        f"(process {os.getpid()}), which cannot use it. Use SPDK from the parent, or start "
        "it in a child made with multiprocessing's 'spawn' start method."
    )


def _in_child() -> None:
    global forked
    forked = True
    for obj in list(_OBJECTS):
        obj._after_fork_in_child()


def _before() -> None:
    global PARENT_PID
    PARENT_PID = os.getpid()


os.register_at_fork(before=_before, after_in_child=_in_child)
