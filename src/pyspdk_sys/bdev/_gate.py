"""The admission gate of one open device: who is inside, whether it is closed, what it took over.

Every form of I/O enters the gate before it touches the device and leaves
it when its request is over; close() shuts the gate and waits until nobody
is inside. The gate also keeps the owners their callers gave up on.

The hand-over rule, the one answer to "who releases this I/O's memory when
its caller raised": whoever can show SPDK no longer holds it.
  - SPDK is done with it and no completion reader took it: the caller,
    at once (hand_over returns True).
  - A completion reader tracks it (futures, asyncio, batches): the reader,
    when SPDK hands it back.
  - Nobody else can take it (a blocking call): the gate, which releases it
    once SPDK hands it back (sweep(), and at close).

Counting is cheap on purpose: `holds` is a list because append() and pop()
are atomic, so the futures and asyncio paths count themselves without the
lock; only close() and the blocking calls take it.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterable
from types import CodeType
from typing import Any

from .._resource import IoOwner
from ..errors import RuntimeStateError

__all__ = ["Gate", "mark_blocking_calls"]

_CLOSED_NOTE = "is closed"
# The code objects of the blocking calls: a thread with one of them on its
# stack (for the same device) is inside; see Gate.forget_leaked.
_BLOCKING_CODES: set[CodeType] = set()


def mark_blocking_calls(*functions: Callable[..., Any]) -> None:
    """Declare the functions whose frames mark a thread as inside a blocking call."""
    _BLOCKING_CODES.update(function.__code__ for function in functions)


class Gate:
    """Admission to one device (see the module's docstring)."""

    __slots__ = ("abandoned", "closed", "holder", "holds", "idle", "inside", "lock", "name", "why")

    def __init__(self, name: str, holder: object) -> None:
        self.name = name
        self.holder = holder  # the object whose blocking calls count as inside
        self.lock = threading.Lock()
        self.idle = threading.Condition(self.lock)
        # One entry per caller inside and per request not yet finished.
        self.holds: list[None] = []
        # The blocking calls inside, per thread: a Ctrl-C can land between the
        # count and the try that undoes it, and close() then finds the leak.
        self.inside: dict[int, int] = {}
        self.closed = False
        self.why = _CLOSED_NOTE
        self.abandoned: list[IoOwner] = []

    def refusal(self) -> RuntimeStateError:
        return RuntimeStateError(f"{self.name} {self.why}")

    # ------------------------------------------------------------ entering and leaving

    def enter(self) -> None:
        # Counted before the look at `closed`: close() marks the gate closed
        # before it waits for the count, so either this sees it closed or
        # close() sees this inside.
        self.holds.append(None)
        if self.closed:
            self.leave()
            raise self.refusal()

    def leave(self) -> None:
        # Only close() waits for the last user, and it marks the gate closed
        # before it waits: notify only then (a notify costs more than the rest).
        self.holds.pop()
        if self.closed:
            self.notify()

    def notify(self) -> None:
        with self.lock:
            self.idle.notify_all()

    def enter_many(self, count: int) -> None:
        """`count` requests enter at once (a batch); RuntimeStateError if closed."""
        with self.lock:
            if self.closed:
                raise self.refusal()
            self.holds.extend([None] * count)

    def leave_many(self, count: int) -> None:
        """`count` requests leave at once (a batch a reader will no longer deliver)."""
        with self.lock:
            del self.holds[:count]
            if not self.holds:
                self.idle.notify_all()

    def enter_blocking(self) -> None:
        """enter() for a call that waits on this thread; leave_blocking() undoes it."""
        me = threading.get_ident()
        with self.lock:
            if self.closed:
                raise self.refusal()
            self.holds.append(None)
            self.inside[me] = self.inside.get(me, 0) + 1

    def leave_blocking(self) -> None:
        me = threading.get_ident()
        with self.lock:
            left = self.inside.get(me, 0)
            if left == 0:
                return  # already given up as leaked by close()
            if left == 1:
                del self.inside[me]
            else:
                self.inside[me] = left - 1
            self.holds.pop()
            if not self.holds and self.closed:
                self.idle.notify_all()

    def shut(self) -> bool:
        """Close the gate: True for the one caller that did."""
        with self.lock:
            if self.closed:
                return False
            self.closed = True
            return True

    # ------------------------------------------------------------ the hand-over rule

    def hand_over(self, owner: IoOwner, claim: Callable[[], bool] | None = None) -> bool:
        """After the caller of `owner` raised: release it here when that is safe.

        `claim`, for an owner a completion reader tracks, takes it back from
        the reader (True if the reader had not taken it yet). Returns True
        when the owner was released here; the caller then leaves the gate
        for it if it had entered.
        """
        if claim is None:
            if owner.is_over():
                owner.release()
                return True
            self.abandon(owner)
            return False
        if owner.is_over() and claim():
            owner.release()
            return True
        return False  # the reader completes it when SPDK hands it back

    def abandon(self, owner: IoOwner) -> None:
        """The caller gave up on `owner` while SPDK holds it: release it once SPDK is done."""
        with self.lock:
            self.abandoned.append(owner)

    def sweep(self) -> None:
        """Release every abandoned owner SPDK has handed back."""
        with self.lock:
            abandoned, self.abandoned = self.abandoned, []
        still = []
        for owner in abandoned:
            if owner.is_over():
                owner.release()
            else:
                still.append(owner)
        if still:
            with self.lock:
                self.abandoned.extend(still)

    # ------------------------------------------------------------ closing

    def wait_empty(
        self, deadline: float, seconds: float, pump: Iterable[Callable[[], object]] = ()
    ) -> None:
        """Until nobody is inside; TimeoutError past `deadline`.

        `pump` are calls that deliver completions only this thread can
        (an asyncio loop on this thread cannot run while it waits here).
        """
        pumps = list(pump)
        waited = 0
        while True:
            # Outside the lock: a completion delivered here leaves the gate,
            # and leaving takes the lock.
            for call in pumps:
                call()
            with self.idle:
                if not self.holds:
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.name}: I/O callers did not finish in {seconds} s")
                self.idle.wait(0.01 if pumps else 0.05)
            waited += 1
            if waited % 5 == 0:
                self.forget_leaked()

    def wait_empty_briefly(self, seconds: float) -> None:
        """At teardown: a short wait for the last callers (the reactors have stopped)."""
        with self.idle:
            self.idle.wait_for(lambda: not self.holds, seconds)

    def forget_leaked(self) -> None:
        """Drop the counts of threads that are in none of the blocking calls any more.

        KeyboardInterrupt can strike between a count and the try/finally that
        takes it back; such a count would hold close() until its timeout. A
        thread counts as inside while a blocking call of the holder has a
        frame on its stack.
        """
        frames = sys._current_frames()
        with self.lock:
            for thread, count in list(self.inside.items()):
                frame = frames.get(thread)
                while frame is not None and not (
                    frame.f_code in _BLOCKING_CODES and frame.f_locals.get("self") is self.holder
                ):
                    frame = frame.f_back
                if frame is None:
                    del self.inside[thread]
                    del self.holds[:count]
            if not self.holds:
                self.idle.notify_all()

    def after_fork(self, why: str) -> None:
        """In a forked child: closed for good, with locks nobody holds."""
        self.lock = threading.Lock()
        self.idle = threading.Condition(self.lock)
        self.closed = True
        self.why = why
