"""The one lifecycle of everything that owns SPDK state inside a Runtime.

A device, a DMA buffer, the private RPC server, the completion readers and
the I/O engine each hold something SPDK must give back before it stops, or
memory that must be freed after its reactors stopped and before its
environment goes. Each is a Resource: it is adopted by its runtime, which
calls on_stop() on the SPDK thread as stop begins and on_teardown() once the
reactors stopped, in the order the table below gives (not the order in
which the objects happened to be made), and tells it when the process forks.
A resource closed early leaves its runtime with release().

Closing is one template for all of them (close()): refuse on the SPDK
thread, mark closed (once: a second close() returns), close on the SPDK
thread, wait until SPDK and the callers released it, free, leave the
runtime. A subclass fills in the steps it needs; _check_open() is the one
test of "still usable", and `with` closes.

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
import threading
import time
from types import TracebackType
from typing import Any, ClassVar, TypeVar

from . import _fork
from ._checks import check_timeout
from .errors import RuntimeStateError, waits_on_spdk_thread

__all__ = ["IoOwner", "Resource", "Stage"]

_Self = TypeVar("_Self", bound="Resource")
# Guards every resource's closed flag: flipped once per object, rarely.
_MARK = threading.Lock()


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
    # Whether close() waits for SPDK or callers (then never on the SPDK thread).
    CLOSE_WAITS: ClassVar[bool] = True
    # Class defaults: an instance gets its own once closed or forked.
    _closed: bool = False
    _closed_why: str = "is closed"
    _forked: bool = False
    _owner: Any = None  # the runtime that adopted it

    # ------------------------------------------------------------ membership

    def _adopt(self, runtime: Any) -> None:
        """Join `runtime`'s stop and teardown, and this process's fork handling."""
        self._owner = runtime
        runtime.adopt(self)
        _fork.track(self)

    def _release(self, runtime: Any) -> None:
        """Leave `runtime`: closed early, nothing of it is left for stop or teardown."""
        runtime.disown(self)

    # ------------------------------------------------------------ state

    def _describe(self) -> str:
        """How messages name this object."""
        return f"this {type(self).__name__}"

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        """RuntimeStateError unless the object is still usable."""
        if self._closed:
            raise RuntimeStateError(f"{self._describe()} {self._closed_why}")

    def _mark_closed(self) -> bool:
        """Mark the object closed: True for the one caller that did (it runs the close)."""
        with _MARK:
            if self._closed:
                return False
            self._closed = True
            return True

    def __enter__(self: _Self) -> _Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------ the close template

    def close(self, timeout: float = 30.0) -> None:
        """Close now: SPDK's side on its thread, wait until released, free. Safe to repeat.

        TimeoutError when SPDK or a caller still holds it after `timeout`
        seconds. Not on the SPDK thread, which the wait would block.
        """
        seconds = check_timeout("timeout", timeout) or 30.0
        if self._forked:
            return
        runtime = self._owner
        if self.CLOSE_WAITS and runtime is not None and runtime.on_spdk_thread():
            raise waits_on_spdk_thread(f"closing {self._describe()}")
        self._may_close()
        if not self._mark_closed():
            return
        deadline = time.monotonic() + seconds
        if type(self)._close_on_spdk_thread is not Resource._close_on_spdk_thread:
            try:
                runtime.call(self._close_on_spdk_thread, timeout=seconds)
            except RuntimeStateError:
                return  # the runtime is stopping: its stop and teardown finish the close
        self._wait_released(deadline, seconds)
        self._free()
        if runtime is not None:
            self._release(runtime)

    def _may_close(self) -> None:
        """Refuse to close (raise) while closing would pull memory from a user."""

    def _close_on_spdk_thread(self) -> None:
        """On the SPDK thread: give back what SPDK holds for this object."""

    def _wait_released(self, deadline: float, seconds: float) -> None:
        """Until SPDK and every caller let go (TimeoutError past `deadline`)."""

    def _free(self) -> None:
        """Free the memory; SPDK and the callers hold none of it any more."""

    # ------------------------------------------------------------ runtime hooks

    def on_stop(self) -> None:
        """On the SPDK thread as stop begins: give back what SPDK holds for this object."""
        self._close_on_spdk_thread()

    def on_teardown(self) -> None:
        """Once the reactors stopped, before SPDK's environment goes: free memory."""
        self._free()

    def _after_fork_in_child(self) -> None:
        """In a forked child: refuse every later use (the parent's SPDK owns the state)."""
        self._forked = True
        self._closed = True
        self._closed_why = "was made by SPDK in the parent process: a forked child cannot use it"


class IoOwner:
    """The one owner of one I/O's memory (its request struct, DMA buffers, pinned views).

    It is released exactly once, by whoever ends its life first: the caller
    that sees the I/O complete, the completion reader that delivers it, or
    the device's admission gate, which takes it over when its caller gives
    up (interrupted, timed out) while SPDK still holds it, and releases it
    once SPDK hands it back (is_over()). bdev/_gate.py has the hand-over rule.
    """

    __slots__ = ()
    io: Any  # the request struct, for the owners a completion queue tracks

    def is_over(self) -> bool:
        """Whether SPDK has handed the I/O back (nothing of it is in SPDK's hands)."""
        raise NotImplementedError

    def release(self) -> None:
        """Give the memory back; safe to repeat."""
        raise NotImplementedError

    def complete(self) -> Any:
        """For the completion reader: the result (or raise), memory given back."""
        self.release()
