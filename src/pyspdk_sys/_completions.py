"""Completion queues, and who reads them: the thread behind futures, the asyncio loop.

The engine pushes finished requests onto a queue (C, signalled by an
eventfd). For futures one thread per runtime reaps it; for asyncio each
event loop reads its own queue on its own thread; batches reap a queue of
the calling thread's. A request here is anything with `io`, `device` and
`finish()`.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Protocol

from ._binding import ffi, lib
from .runtime import Runtime

_REAP_BATCH = 256


class Request(Protocol):
    """What the completion side needs of a request."""

    io: Any
    device: Any

    def finish(self) -> Any: ...


class Completions:
    """A completion queue and the futures of the requests that will arrive on it."""

    def __init__(self) -> None:
        self.cq = lib.pyspdk_cq_create()
        if self.cq == ffi.NULL:
            raise OSError(errno.EMFILE, "cannot create a completion queue (eventfd)")
        self.pending: dict[int, tuple[Request, Any]] = {}
        self._tags = itertools.count(1)
        self._out = ffi.new("struct pyspdk_io *[]", _REAP_BATCH)

    def track(self, request: Request, future: Any) -> None:
        tag = next(self._tags)
        request.io.tag = tag
        request.io.cq = self.cq
        self.pending[tag] = (request, future)

    def dispatch(
        self,
        spin_ns: int,
        timeout_ns: int,
        deliver: Callable[[Any, Any, BaseException | None], None],
    ) -> int:
        n = lib.pyspdk_cq_reap(self.cq, self._out, _REAP_BATCH, spin_ns, timeout_ns)
        for i in range(max(n, 0)):
            request, future = self.pending.pop(self._out[i].tag)
            request.device._leave()
            try:
                deliver(future, request.finish(), None)
            except BaseException as exc:
                deliver(future, None, exc)
        return n

    def destroy(self) -> None:
        lib.pyspdk_cq_destroy(self.cq)
        self.cq = ffi.NULL


def _set_future(future: Future, result: Any, exc: BaseException | None) -> None:  # type: ignore[type-arg]
    if future.set_running_or_notify_cancel():
        if exc is None:
            future.set_result(result)
        else:
            future.set_exception(exc)


def _set_aio_future(future: asyncio.Future, result: Any, exc: BaseException | None) -> None:  # type: ignore[type-arg]
    if not future.done():
        if exc is None:
            future.set_result(result)
        else:
            future.set_exception(exc)


class _FutureReaper:
    """One thread per runtime resolving concurrent.futures as completions arrive."""

    def __init__(self, runtime: Runtime) -> None:
        self.completions = Completions()
        self._lock = threading.Lock()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="pyspdk-completions", daemon=True)
        self._thread.start()
        runtime.add_teardown_hook(self.stop)

    def _run(self) -> None:
        completions = self.completions
        while not (self._stopping and not completions.pending):
            completions.dispatch(20_000, 50_000_000, _set_future)

    def stop(self) -> None:
        self._stopping = True
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self.completions.destroy()


class _LoopReaper:
    """Completions of one asyncio loop, read on the loop's own thread (eventfd reader)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, runtime: Runtime) -> None:
        self.completions = Completions()
        self.loop = loop
        self._fd = lib.pyspdk_cq_fd(self.completions.cq)
        loop.add_reader(self._fd, self._readable)
        runtime.add_teardown_hook(self._close)

    def _readable(self) -> None:
        self.completions.dispatch(0, 0, _set_aio_future)

    def _detach(self) -> None:
        if self.completions.cq != ffi.NULL:
            self.loop.remove_reader(self._fd)
            self.completions.destroy()

    def _close(self) -> None:
        # On the SPDK host thread at teardown: the loop's own thread must drop
        # its reader before the eventfd closes.
        if self.completions.cq == ffi.NULL:
            return
        if self.loop.is_closed():
            self.completions.destroy()
        else:
            self.loop.call_soon_threadsafe(self._detach)


_REAPERS_LOCK = threading.Lock()
_THREAD_STATE = threading.local()


def future_reaper(runtime: Runtime) -> _FutureReaper:
    reaper = getattr(runtime, "future_reaper", None)
    if reaper is None:
        with _REAPERS_LOCK:
            reaper = getattr(runtime, "future_reaper", None)
            if reaper is None:
                reaper = _FutureReaper(runtime)
                runtime.future_reaper = reaper  # type: ignore[attr-defined]
    return reaper


def loop_reaper(loop: asyncio.AbstractEventLoop, runtime: Runtime) -> _LoopReaper:
    reapers: dict[int, _LoopReaper] = runtime.__dict__.setdefault("_loop_reapers", {})
    reaper = reapers.get(id(loop))
    if reaper is None or reaper.loop is not loop:
        # Each asyncio.run() makes a new loop: drop what closed loops left behind.
        for key, old in list(reapers.items()):
            if old.loop.is_closed() and not old.completions.pending:
                old.completions.destroy()
                runtime.discard_hooks(old._close)
                del reapers[key]
        reaper = _LoopReaper(loop, runtime)
        reapers[id(loop)] = reaper
    return reaper


def thread_completions() -> Completions:
    completions = getattr(_THREAD_STATE, "completions", None)
    if completions is None or completions.cq == ffi.NULL:
        completions = Completions()
        _THREAD_STATE.completions = completions
    return completions
