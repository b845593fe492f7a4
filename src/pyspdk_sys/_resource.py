"""The one lifecycle of everything that owns SPDK state inside a Runtime.

A device, a DMA buffer, the private RPC server, the completion readers and
the I/O engine each hold something SPDK must give back before it stops, or
memory that must be freed after its reactors stopped and before its
environment goes. Each is a Resource: it is adopted by its runtime, which
calls on_stop() on the SPDK thread as stop begins and on_teardown() once the
reactors stopped, in the order the table below gives (not the order in
which the objects happened to be made), and tells it when the process forks.
A resource closed early leaves its runtime with release().

    stage      on_stop (SPDK thread, stop beginning)   on_teardown (reactors stopped)
    DEVICES    close: cancel, abort, hand back          free the device's memory
    SERVICES   the private RPC server closes            readers deliver what is left
    ENGINE     the engine's pollers go                  -
    MEMORY     -                                        DMA buffers are freed

STOP_STAGE and TEARDOWN_STAGE name a class's place; within one stage the
newest resource goes first. A runtime's plain hooks (add_stop_hook,
add_teardown_hook) run before every resource.
"""

from __future__ import annotations

import enum
from typing import Any, ClassVar

from . import _fork

__all__ = ["Resource", "Stage"]


class Stage(enum.IntEnum):
    """Where a resource's on_stop / on_teardown runs: lower first."""

    READERS = 5  # teardown: deliver the last completions before devices free their slots
    DEVICES = 10
    SERVICES = 20
    ENGINE = 30  # stop: after every device handed its requests back
    MEMORY = 40  # teardown: after everything that could still point into it


class Resource:
    """Base of every object that owns SPDK state in a Runtime (see the module's table)."""

    STOP_STAGE: ClassVar[Stage] = Stage.SERVICES
    TEARDOWN_STAGE: ClassVar[Stage] = Stage.SERVICES

    def _adopt(self, runtime: Any) -> None:
        """Join `runtime`'s stop and teardown, and this process's fork handling."""
        runtime.adopt(self)
        _fork.track(self)

    def _release(self, runtime: Any) -> None:
        """Leave `runtime`: closed early, nothing of it is left for stop or teardown."""
        runtime.disown(self)

    def on_stop(self) -> None:
        """On the SPDK thread as stop begins: give back what SPDK holds for this object."""

    def on_teardown(self) -> None:
        """Once the reactors stopped, before SPDK's environment goes: free memory."""

    def _after_fork_in_child(self) -> None:
        """In a forked child: refuse every later use (the parent's SPDK owns the state)."""
