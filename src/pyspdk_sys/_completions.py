"""Completion queues, and who reads them: the thread behind futures, the asyncio loop, a batch.

The engine pushes finished requests onto a queue (C, signalled by an
eventfd). Each queue has one reader and one way to deliver: one thread per
runtime resolves concurrent futures; each asyncio loop reads its own queue on
its own thread; each batch call owns a queue of its own, so a batch that was
interrupted can never hand its completions to a later one.

A request here is its own owner (bdev/_requests.py): complete() turns the
outcome into a result and gives back its buffers, exactly once, and only
then leaves the device, so close() cannot free memory a result is still
being read from.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import threading
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from typing import Any

from ._binding import ffi, lib
from ._resource import IoOwner, Resource, Stage
from .errors import RuntimeStateError
from .runtime import Runtime

_REAP_BATCH = 256
_LOOP_SPIN_NS = 20_000  # an asyncio loop spins this long for completions before it sleeps
_LOOP_SPIN_MISSES = 8  # spins in a row that caught nothing ...
_LOOP_SPIN_SKIP = 64  # ... and the loop sleeps at once this many times
WAIT_SLICE_NS: int = lib.PYSPDK_WAIT_SLICE_NS


Deliver = Callable[[Any, Any, "BaseException | None"], None]


class Completions(IoOwner):
    """A completion queue, the requests that will arrive on it, and where results go.

    With no `deliver`, each request's token is a future (asyncio or
    concurrent) that gets its result or exception, unless it was cancelled:
    the hot paths pay no extra call per completion.
    """

    def __init__(self, deliver: Deliver | None) -> None:
        self.cq = lib.pyspdk_cq_create()
        if self.cq == ffi.NULL:
            raise OSError(errno.EMFILE, "cannot create a completion queue (eventfd)")
        self.deliver = deliver
        self.pending: dict[int, tuple[IoOwner, Any]] = {}
        self.tags = itertools.count(1)
        self._out = ffi.new("uint64_t[]", _REAP_BATCH)

    def track(self, owner: IoOwner, token: Any) -> None:
        """Before submission: owner's completion will be delivered with `token`."""
        tag = next(self.tags)
        owner.io.tag = tag
        owner.io.cq = self.cq
        self.pending[tag] = (owner, token)

    def untrack(self, owner: IoOwner) -> None:
        """The submission was refused: the request will never arrive."""
        self.pending.pop(int(owner.io.tag), None)

    def dispatch(self, spin_ns: int, timeout_ns: int) -> int:
        """Reap what has arrived (waiting at most timeout_ns) and deliver it; how many."""
        n: int = lib.pyspdk_cq_reap(self.cq, self._out, _REAP_BATCH, spin_ns, timeout_ns)
        if n <= 0:
            return n
        pending, deliver = self.pending, self.deliver
        for tag in ffi.unpack(self._out, n):
            entry = pending.pop(tag, None)
            if entry is None:
                continue  # its submitter was interrupted and took it back
            owner, token = entry
            try:
                result = owner.complete()
            except BaseException as error:
                if deliver is None:
                    _fail_future(token, error)
                else:
                    deliver(token, None, error)
                continue
            if deliver is not None:
                deliver(token, result, None)
                continue
            try:
                token.set_result(result)
            except _CANCELLED:
                _cancelled(token)
        return n

    def drain_abandoned(self) -> bool:
        """Release what has arrived without delivering it; True once nothing is pending.

        For a queue whose reader has gone (an interrupted batch, a closed
        loop): its requests still own buffers until SPDK hands them back.
        """
        while self.pending:
            n = lib.pyspdk_cq_reap(self.cq, self._out, _REAP_BATCH, 0, 0)
            if n <= 0:
                break
            for tag in ffi.unpack(self._out, n):
                entry = self.pending.pop(tag, None)
                if entry is not None:
                    entry[0].release()
        if self.pending:
            return False
        self.destroy()
        return True

    def is_over(self) -> bool:
        return self.drain_abandoned() if self.cq != ffi.NULL else True

    def release(self) -> None:
        self.drain_abandoned()

    def destroy(self) -> None:
        if self.cq != ffi.NULL:
            lib.pyspdk_cq_destroy(self.cq)
            self.cq = ffi.NULL


# What set_result() raises on a future its waiter cancelled.
_CANCELLED = (asyncio.InvalidStateError, InvalidStateError)


def _fail_future(future: Future | asyncio.Future, exc: BaseException) -> None:  # type: ignore[type-arg]
    try:
        future.set_exception(exc)
    except _CANCELLED:
        _cancelled(future)


def _cancelled(future: Future | asyncio.Future) -> None:  # type: ignore[type-arg]
    """A future its waiter cancelled: a concurrent one tells its wait()ers now."""
    if isinstance(future, Future):
        future.set_running_or_notify_cancel()


class FutureReaper(Resource):
    """One thread per runtime resolving concurrent.futures as completions arrive."""

    def __init__(self, runtime: Runtime) -> None:
        self.completions = Completions(None)
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="pyspdk-completions", daemon=True)
        self._thread.start()
        self._adopt(runtime)

    def _run(self) -> None:
        completions = self.completions
        while not (self._stopping and not completions.pending):
            # Spin up to 20 us, unless this thread is on a reactor's CPU.
            completions.dispatch(-20_000, WAIT_SLICE_NS)

    TEARDOWN_STAGE = Stage.READERS

    def on_teardown(self) -> None:
        self.stop()

    def stop(self) -> None:
        self._stopping = True
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self.completions.destroy()


class _SpinningSelector:
    """A loop's selector that, before the loop sleeps with I/O pending, spins on the queue.

    An asyncio loop sleeps in its selector, and waking it through the
    eventfd costs tens of microseconds: more than a fast device takes to
    complete. So while requests are pending, a select() that would block
    first spins up to _LOOP_SPIN_NS (never on a CPU a reactor polls) and, if
    completions arrive, delivers them and polls the selector without
    blocking. Spins that keep missing (a slow device) are skipped for a
    while, so a slow device costs little CPU.
    """

    def __init__(self, inner: Any, reaper: LoopReaper) -> None:
        self.inner = inner
        self._reaper = reaper
        self._misses = 0
        self._skip = 0

    def select(self, timeout: float | None = None) -> Any:
        reaper = self._reaper
        completions = reaper.completions
        if (
            (timeout is None or timeout > 0)
            and completions.pending
            and not reaper.dead
            and completions.cq != ffi.NULL
        ):
            if self._skip:
                self._skip -= 1
            elif lib.pyspdk_cq_spin(completions.cq, -_LOOP_SPIN_NS):
                self._misses = 0
                completions.dispatch(0, 0)
                timeout = 0
            else:
                self._misses += 1
                if self._misses >= _LOOP_SPIN_MISSES:
                    self._misses = 0
                    self._skip = _LOOP_SPIN_SKIP
        return self.inner.select(timeout)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class LoopReaper:
    """Completions of one asyncio loop, read on the loop's own thread (an eventfd reader)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, runtime: Runtime) -> None:
        self.completions = Completions(None)
        self.loop = loop
        self.thread = threading.get_ident()
        self.dead = False
        self._fd = lib.pyspdk_cq_fd(self.completions.cq)
        loop.add_reader(self._fd, self._readable)
        # The default loop on Linux keeps its selector here; others (uvloop) go unspun.
        self._plain_selector = getattr(loop, "_selector", None)
        if self._plain_selector is not None and hasattr(self._plain_selector, "select"):
            loop._selector = _SpinningSelector(self._plain_selector, self)  # type: ignore[attr-defined]
        else:
            self._plain_selector = None

    def _readable(self) -> None:
        if self.dead:
            self._fail_all()
            return
        self.completions.dispatch(0, 0)

    def _fail_all(self) -> None:
        """SPDK stopped and its memory is gone: fail what is pending, touch no buffer."""
        pending = list(self.completions.pending.values())
        self.completions.pending.clear()
        for _owner, future in pending:
            _fail_future(future, RuntimeStateError("the SPDK runtime stopped"))
        self._detach()

    def _detach(self) -> None:
        if self.completions.cq != ffi.NULL:
            self.loop.remove_reader(self._fd)
            self.completions.destroy()
        selector = getattr(self.loop, "_selector", None)
        if isinstance(selector, _SpinningSelector) and selector.inner is self._plain_selector:
            self.loop._selector = self._plain_selector  # type: ignore[attr-defined]


class LoopReapers(Resource):
    """A runtime's readers, one per asyncio loop that did I/O."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._lock = threading.Lock()
        self._by_loop: dict[int, LoopReaper] = {}
        self._adopt(runtime)

    def for_loop(self, loop: asyncio.AbstractEventLoop) -> LoopReaper:
        reaper = self._by_loop.get(id(loop))
        if reaper is not None and reaper.loop is loop:
            return reaper
        with self._lock:
            # Each asyncio.run() makes a new loop: release what closed ones left.
            for key, old in list(self._by_loop.items()):
                if old.loop.is_closed() and old.completions.drain_abandoned():
                    del self._by_loop[key]
            reaper = LoopReaper(loop, self._runtime)
            self._by_loop[id(loop)] = reaper
        return reaper

    def on_this_thread(self) -> list[LoopReaper]:
        """Readers whose loop runs on the calling thread (close() drains them itself)."""
        me = threading.get_ident()
        return [r for r in list(self._by_loop.values()) if r.thread == me and not r.dead]

    TEARDOWN_STAGE = Stage.READERS

    def on_teardown(self) -> None:
        self._teardown()

    def _teardown(self) -> None:
        # On the SPDK host thread, reactors stopped: every request is over.
        for reaper in list(self._by_loop.values()):
            if reaper.loop.is_closed():
                reaper.completions.drain_abandoned()
                continue
            reaper.dead = True
            try:
                reaper.loop.call_soon_threadsafe(reaper._fail_all)
            except RuntimeError:  # closed meanwhile
                reaper.completions.drain_abandoned()


def future_reaper(runtime: Runtime) -> FutureReaper:
    return runtime.service(FutureReaper, FutureReaper)


def loop_reaper(loop: asyncio.AbstractEventLoop, runtime: Runtime) -> LoopReaper:
    return runtime.service(LoopReapers, LoopReapers).for_loop(loop)


def loop_reapers(runtime: Runtime) -> LoopReapers:
    return runtime.service(LoopReapers, LoopReapers)
