"""Block devices whose storage is Python code: an SPDK bdev served by a Python object.

    class Ram:
        def __init__(self, size): self.data = bytearray(size)
        def readinto(self, offset, buffer): buffer[:] = self.data[offset:offset + len(buffer)]
        def write(self, offset, data): self.data[offset:offset + len(data)] = data

    with PythonBdev(runtime, "Py0", Ram(1 << 20), num_blocks=2048) as dev:
        ...  # "Py0" is an SPDK bdev: open it, export it over NVMe-oF, vhost, ublk

Why this shape (libubd's fetch/commit): each I/O SPDK submits goes to a queue
in C (_shims/pybdev.c). The SPDK thread never takes the GIL and never waits
for Python: Python workers (threads the user sizes, or an asyncio loop) fetch
I/Os in batches, call the backend, and commit results in batches; a poller on
the SPDK thread that submitted each I/O completes it there, as SPDK requires.

The backend sees the I/O's own buffers as memoryviews, valid only during the
call and released after it (a kept one raises on use; an export still held,
such as ffi.from_buffer's, is logged as the backend's bug). A read fills them
in place (`readinto(offset, buffer)`, or `read(offset, length)` returning
bytes, which are copied); a write reads them (`write(offset, data)`).
Optional methods declare the other operations: `flush()`, `unmap(offset,
length)`, `write_zeroes(offset, length)`, `reset()`; SPDK's
io_type_supported answers from what the backend has. Any of them may be a
coroutine function when the device is served by an asyncio loop.

A backend exception fails that one I/O: OSError's errno, else EIO, reaches
the submitter (BlockDevice raises IoError; the kernel sees EIO through ublk).
Each distinct failure site is logged with its traceback once. With
`io_timeout`, an I/O the backend has not answered in time fails with
ETIMEDOUT, and its late answer is dropped. The timeout is for a backend that
hangs: one that answers late may still have written into a read buffer the
I/O no longer owns, so choose it well above the slowest honest answer.
"""

from __future__ import annotations

import array
import asyncio
import errno
import inspect
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, cast

from . import _checks
from ._binding import ffi, lib
from .errors import RuntimeStateError, error_from_rc
from .runtime import Runtime, State

log = logging.getLogger("pyspdk_sys.pybdev")

OPS = ("read", "write", "flush", "unmap", "write_zeroes", "reset")
_OP_CODES = {
    "read": lib.PYSPDK_IO_READ,
    "write": lib.PYSPDK_IO_WRITE,
    "flush": lib.PYSPDK_IO_FLUSH,
    "unmap": lib.PYSPDK_IO_UNMAP,
    "write_zeroes": lib.PYSPDK_IO_WRITE_ZEROES,
    "reset": lib.PYSPDK_IO_RESET,
}
_WORDS = int(lib.PYSPDK_PYBDEV_REQ_WORDS)
_READ = int(lib.PYSPDK_IO_READ)
_WRITE = int(lib.PYSPDK_IO_WRITE)
_FLUSH = int(lib.PYSPDK_IO_FLUSH)
_UNMAP = int(lib.PYSPDK_IO_UNMAP)
_ZEROES = int(lib.PYSPDK_IO_WRITE_ZEROES)
_RESET = int(lib.PYSPDK_IO_RESET)
_FETCH_SLICE_NS = 50_000_000  # workers look at their stop flag this often
_MAX_WORKERS = 64
_MAX_BATCH = int(lib.PYSPDK_PYBDEV_MAX_BATCH)
# How long close() waits for workers to leave the backend: a fetch returns
# within _FETCH_SLICE_NS, so only a worker stuck in the backend takes longer.
_JOIN_SECONDS = 1.0
# How long an idle worker spins before it sleeps on the device's eventfd, by
# default. Longer than a wake-up takes here (tens of microseconds), so a
# worker kept busy never sleeps between batches, while an idle device costs
# this much CPU once per batch and then none.
_DEFAULT_SPIN_US = 50.0

# The I/O buffers as memoryviews. One view spans the user address space and
# each I/O's buffer is a slice of it: about a third of the cost of a cffi
# buffer per I/O (0.14 against 0.36 us here). Every slice is released after
# the backend call, so a backend that keeps the slice cannot use it later (a
# view it made from the slice can, as with any buffer). The window starts
# past page 0 (never mapped) and ends where x86-64's 4-level page tables end
# the user address space; a buffer outside it takes the slower cffi path.
# fetch gives a read of one buffer inside it as a slice's start and end
# ("fast" rows).
_SPACE_START = int(lib.PYSPDK_PYBDEV_SPACE_START)
_SPACE_END = int(lib.PYSPDK_PYBDEV_SPACE_END)
_SPACE = memoryview(ffi.buffer(ffi.cast("char *", _SPACE_START), _SPACE_END - _SPACE_START))
_SPACE_READONLY = _SPACE.toreadonly()


def _view(base: int, length: int, *, readonly: bool = False) -> memoryview:
    """The `length` bytes at address `base`, as a memoryview to release after use."""
    if base >= _SPACE_START and base + length <= _SPACE_END:
        space = _SPACE_READONLY if readonly else _SPACE
        return space[base - _SPACE_START : base - _SPACE_START + length]
    view = memoryview(ffi.buffer(ffi.cast("char *", base), length))
    return view.toreadonly() if readonly else view


def backend_ops(backend: Any) -> frozenset[str]:
    """The operations `backend` serves, from the methods it has."""
    if backend is None:
        raise TypeError("backend must be an object with readinto() or read(), not None")
    found = set()
    if callable(getattr(backend, "readinto", None)) or callable(getattr(backend, "read", None)):
        found.add("read")
    for name in ("write", "flush", "unmap", "write_zeroes", "reset"):
        if callable(getattr(backend, name, None)):
            found.add(name)
    if "read" not in found:
        raise TypeError(
            f"backend {type(backend).__name__} has neither readinto(offset, buffer) nor "
            "read(offset, length): a block device must at least be readable"
        )
    return frozenset(found)


def _check_ops(backend: Any, ops: Iterable[str] | None) -> frozenset[str]:
    has = backend_ops(backend)
    if ops is None:
        return has
    if isinstance(ops, str):
        raise TypeError("ops must be an iterable of operation names, not a str")
    wanted = frozenset(ops)
    unknown = wanted - set(OPS)
    if unknown:
        raise ValueError(f"unknown operations {sorted(unknown)}; known: {', '.join(OPS)}")
    missing = {op for op in wanted - has if op != "reset"}
    if missing:
        raise ValueError(
            f"ops lists {sorted(missing)} but backend {type(backend).__name__} has no such method"
        )
    if "read" not in wanted:
        raise ValueError("ops must include 'read'")
    return wanted


class PythonBdev:
    """An SPDK bdev named `name`, served by `backend`, until close().

    `workers` threads serve it (default 1), or, with `loop`, an asyncio event
    loop does (then the backend's methods may be coroutine functions). Each
    worker takes up to `batch` I/Os at a time, and with none queued spins
    `spin_us` microseconds before it sleeps. `io_timeout` (seconds) fails
    an I/O the backend has not answered in time. In-process only: it takes a
    Runtime, and the device lives as long as this object is open.
    """

    def __init__(
        self,
        runtime: Runtime,
        name: str,
        backend: Any,
        *,
        num_blocks: int,
        block_size: int = 512,
        workers: int | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        io_timeout: float | None = None,
        batch: int = 32,
        spin_us: float = _DEFAULT_SPIN_US,
        ops: Iterable[str] | None = None,
    ) -> None:
        if not isinstance(runtime, Runtime):
            raise TypeError(f"runtime must be a Runtime, not {type(runtime).__name__}")
        encoded = _checks.check_name(name, "a bdev name")
        _checks.check_power_of_two("block_size", block_size, 512, 1 << 16)
        _checks.check_int("num_blocks", num_blocks, 1, (1 << 63) // block_size)
        self.ops = _check_ops(backend, ops)
        if loop is not None:
            if not isinstance(loop, asyncio.AbstractEventLoop):
                raise TypeError(f"loop must be an asyncio event loop, not {type(loop).__name__}")
            if workers not in (None, 0):
                raise ValueError("give either workers (threads) or loop (asyncio), not both")
            workers = 0
        elif workers is None:
            workers = 1
        else:
            _checks.check_int("workers", workers, 1, _MAX_WORKERS)
        if loop is None:
            coroutines = sorted(
                op
                for op in ("readinto", "read", *OPS[1:])
                if inspect.iscoroutinefunction(getattr(backend, op, None))
            )
            if coroutines:
                raise TypeError(
                    f"backend methods {coroutines} are coroutine functions: serve the device "
                    "from an asyncio loop (loop=...), or make them plain methods"
                )
        _checks.check_int("batch", batch, 1, _MAX_BATCH)
        spin = _checks.check_float("spin_us", spin_us, 0.0, 1_000_000.0)
        seconds = _checks.check_timeout("io_timeout", io_timeout)
        if runtime.state is not State.RUNNING:
            raise RuntimeStateError(f"the SPDK runtime is {runtime.state.value}")

        self.runtime = runtime
        self.name = name
        self.backend = backend
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.size = block_size * num_blocks
        self.io_timeout = seconds
        self.batch = batch
        self.failures = 0
        self._spin_ns = int(spin * 1000)
        self._lock = threading.Lock()
        self._closed = False
        self._freed = False
        self._cancelled = False
        self._logged: set[tuple[str, str, int]] = set()
        self._threads: list[threading.Thread] = []
        self._loop = loop
        self._tasks: set[asyncio.Future[Any]] = set()
        self._readinto: Callable[..., Any] | None = getattr(backend, "readinto", None)
        self._read: Callable[..., Any] | None = getattr(backend, "read", None)
        methods = {
            _READ: self._readinto or self._read,
            _WRITE: getattr(backend, "write", None),
            _FLUSH: getattr(backend, "flush", None),
            _UNMAP: getattr(backend, "unmap", None),
            _ZEROES: getattr(backend, "write_zeroes", None),
            _RESET: getattr(backend, "reset", None),
        }
        # The operations an event loop serves as tasks; the others inline.
        self._coroutine_ops = frozenset(
            op for op, method in methods.items() if inspect.iscoroutinefunction(method)
        )
        mask = 0
        for op in self.ops:
            mask |= 1 << _OP_CODES[op]
        timeout_ns = 0 if seconds is None else max(1, int(seconds * 1e9))
        self._pb: Any = runtime.call(self._create_on_spdk_thread, encoded, mask, timeout_ns)
        runtime.add_stop_hook(self._on_runtime_stop)
        runtime.add_teardown_hook(self._on_runtime_teardown)
        if loop is None:
            for index in range(workers):
                thread = threading.Thread(
                    target=self._work, name=f"pybdev-{name}-{index}", daemon=True
                )
                thread.start()
                self._threads.append(thread)
        else:
            lib.pyspdk_pybdev_watch_fd(self._pb)
            loop.call_soon_threadsafe(
                loop.add_reader, lib.pyspdk_pybdev_fd(self._pb), self._on_readable
            )

    def _create_on_spdk_thread(self, encoded: bytes, mask: int, timeout_ns: int) -> Any:
        rc = ffi.new("int *")
        pb = lib.pyspdk_pybdev_create(
            encoded, self.block_size, self.num_blocks, mask, timeout_ns, rc
        )
        if pb == ffi.NULL:
            raise error_from_rc(rc[0], f"creating Python-served bdev {self.name!r}")
        if rc[0] != 0:
            # SPDK refused to register it (a taken name): free it once SPDK lets go.
            deadline = time.monotonic() + 5
            what = f"registering bdev {self.name!r}"
            if rc[0] == -errno.EEXIST:
                error: Exception = ValueError(f"{what}: a bdev with that name exists")
            else:
                error = error_from_rc(rc[0], what)
            self._free_later(pb, deadline)
            raise error
        return pb

    def _free_later(self, pb: Any, deadline: float) -> None:
        def free() -> None:
            while not lib.pyspdk_pybdev_state(pb, 1) and time.monotonic() < deadline:
                time.sleep(0.001)
            if lib.pyspdk_pybdev_state(pb, 1):
                lib.pyspdk_pybdev_free(pb)

        threading.Thread(target=free, name="pybdev-free", daemon=True).start()

    # ------------------------------------------------------------ state

    def __enter__(self) -> PythonBdev:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def queued(self) -> int:
        """I/Os waiting for a worker now."""
        self._check_open()
        return int(lib.pyspdk_pybdev_state(self._pb, 3))

    @property
    def expired(self) -> int:
        """I/Os failed so far because they timed out or were cancelled."""
        self._check_open()
        return int(lib.pyspdk_pybdev_state(self._pb, 4))

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeStateError(f"Python-served bdev {self.name!r} is closed")

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<PythonBdev {self.name!r} {self.num_blocks}x{self.block_size} {state}>"

    # ------------------------------------------------------------ closing

    def close(self, *, cancel: bool = False, timeout: float = 30.0) -> None:
        """Unregister the bdev and stop the workers. Safe to call again.

        SPDK first asks everyone who has the bdev open to close it. I/O already
        queued is still served (drained), unless `cancel` fails it at once with
        ECANCELED; after `timeout` seconds of draining the rest is cancelled
        too, so that a backend that never answers cannot hold close() up.
        TimeoutError if SPDK has still not let go `timeout` seconds later
        (someone keeps the bdev open).
        """
        if self._loop is not None and _running_loop() is self._loop:
            raise RuntimeStateError(
                "close() waits for the I/O this event loop serves: await aclose() instead"
            )
        seconds = self._begin_close(cancel, timeout)
        if seconds is None:
            self._finish_after_stop()
            return
        if self.runtime.state is State.RUNNING:
            try:
                self.runtime.call(lib.pyspdk_pybdev_unregister, self._pb)
            except RuntimeStateError:
                pass  # stopping: the bdev layer unregisters it and the hooks finish
            else:
                started = time.monotonic()
                while not self._released(started, seconds):
                    time.sleep(0.002)
        self._finish()

    async def aclose(self, *, cancel: bool = False, timeout: float = 30.0) -> None:
        """close() for asyncio programs; the way to close a device served by this loop."""
        seconds = self._begin_close(cancel, timeout)
        if seconds is None:
            self._finish_after_stop()
            return
        if self.runtime.state is State.RUNNING:
            await self.runtime.run(lib.pyspdk_pybdev_unregister, self._pb)
            started = time.monotonic()
            while not self._released(started, seconds):
                await asyncio.sleep(0.002)
        self._finish()

    def _begin_close(self, cancel: bool, timeout: float) -> float | None:
        """Mark the device closed: the drain timeout, or None if it already was."""
        _checks.check_bool("cancel", cancel)
        seconds = _checks.check_timeout("timeout", timeout) or 30.0
        with self._lock:
            if self._closed:
                return None
            self._closed = True
        if cancel:
            lib.pyspdk_pybdev_cancel(self._pb)
        return seconds

    def _finish_after_stop(self) -> None:
        """close() of a device the runtime's stop closed: free what the teardown
        could not, because a worker was still in the backend then."""
        if not self._freed and self.runtime.state is not State.RUNNING:
            self._finish()

    def _released(self, started: float, seconds: float) -> bool:
        """While closing: whether SPDK has let go. Cancels what is left after
        `seconds` of draining; TimeoutError after as long again."""
        if lib.pyspdk_pybdev_state(self._pb, 1):
            return True
        waited = time.monotonic() - started
        if waited > 2 * seconds:
            raise TimeoutError(
                f"bdev {self.name!r} was not released within {seconds} s after its I/O was "
                "cancelled: someone keeps it open"
            )
        if waited > seconds and not self._cancelled:
            log.warning(
                "pyspdk_sys: bdev %r still had I/O after %.1f s of draining; cancelling it",
                self.name,
                seconds,
            )
            lib.pyspdk_pybdev_cancel(self._pb)
            self._cancelled = True
        return False

    def _finish(self) -> None:
        """Stop the workers and free the device once SPDK has let go of it."""
        pb = self._pb
        if self._freed:
            return
        lib.pyspdk_pybdev_stop_workers(pb)
        if self._loop is not None:
            loop = self._loop
            fd = lib.pyspdk_pybdev_fd(pb)
            if _running_loop() is loop:
                loop.remove_reader(fd)
            elif not loop.is_closed():
                done = threading.Event()

                def remove() -> None:
                    loop.remove_reader(fd)
                    done.set()

                loop.call_soon_threadsafe(remove)
                done.wait(5)
        stuck = []
        deadline = time.monotonic() + _JOIN_SECONDS
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
                if thread.is_alive():
                    stuck.append(thread.name)
        self.runtime.discard_hooks(self._on_runtime_stop, self._on_runtime_teardown)
        if stuck or self._tasks or not lib.pyspdk_pybdev_state(pb, 1):
            # A worker still inside the backend would touch freed memory: keep it.
            log.warning(
                "pyspdk_sys: bdev %r: workers %s still busy in the backend; its queue is "
                "kept (not freed)",
                self.name,
                stuck or "(asyncio tasks)",
            )
            return
        with self._lock:
            if not self._freed:
                self._freed = True
                lib.pyspdk_pybdev_free(pb)

    def _on_runtime_stop(self) -> None:
        # On the SPDK thread: the bdev layer is about to unregister every bdev.
        # Workers may be gone or slow; do not let the shutdown wait for them.
        with self._lock:
            self._closed = True
        lib.pyspdk_pybdev_cancel(self._pb)

    def _on_runtime_teardown(self) -> None:
        lib.pyspdk_pybdev_stop_workers(self._pb)
        deadline = time.monotonic() + _JOIN_SECONDS
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        idle = all(not t.is_alive() for t in self._threads) and self._loop is None
        with self._lock:
            if self._freed or not lib.pyspdk_pybdev_state(self._pb, 1):
                return
            # SPDK's environment ends after the teardown: its memory goes back
            # now, the rest when no worker is left (here, or in a later close()).
            lib.pyspdk_pybdev_release_env(self._pb)
            if idle:
                self._freed = True
                lib.pyspdk_pybdev_free(self._pb)

    # ------------------------------------------------------------ serving

    def _work(self) -> None:
        """A worker thread: fetch a batch, serve it, commit it, until stopped."""
        pb = self._pb
        words = array.array("Q", bytes(8 * _WORDS * self.batch))
        out = ffi.from_buffer("uint64_t[]", words)
        statuses = array.array("i", bytes(4 * self.batch))
        res = ffi.from_buffer("int32_t[]", statuses)
        all_done = ffi.NULL  # commit's statuses when every I/O succeeded
        fast_count = ffi.new("int *")
        fetch = lib.pyspdk_pybdev_fetch
        commit = lib.pyspdk_pybdev_commit
        serve = self._serve
        failed = self._failed
        kept = self._kept
        # Without readinto no row is fast: every read goes through _serve.
        fast = fast_count if self._readinto is not None else ffi.NULL
        readinto = cast(Callable[..., Any], self._readinto)  # called for fast rows only
        space = _SPACE
        batch = self.batch
        spin = self._spin_ns
        while True:
            n = fetch(pb, out, batch, spin, _FETCH_SLICE_NS, fast)
            if n <= 0:
                if n == -errno.ESHUTDOWN:
                    return
                if n < 0:
                    log.error("pyspdk_sys: fetch on bdev %r failed: %s", self.name, n)
                    time.sleep(0.01)
                continue
            failures: list[tuple[int, int]] | None = None
            top = fast_count[0] * _WORDS
            # Fast rows first: reads of one buffer, inline, taking from each
            # row only the words they use (offset, and the view's start and end).
            for i, (offset, lo, hi) in enumerate(
                zip(words[3:top:_WORDS], words[6:top:_WORDS], words[7:top:_WORDS], strict=True)
            ):
                view = space[lo:hi]
                try:
                    done = readinto(offset, view)
                    if done is not None and isinstance(done, int) and 0 <= done < hi - lo:
                        view[done:] = bytes(hi - lo - done)  # a short read reads zeros
                except Exception as exc:
                    if failures is None:
                        failures = []
                    failures.append((i, failed(exc, _READ, offset, hi - lo)))
                try:
                    view.release()
                except BufferError:
                    kept(offset, hi - lo)  # inline _release: this loop is the hot path
            for at in range(top, n * _WORDS, _WORDS):
                status = serve(words[at : at + _WORDS].tolist())
                if status:
                    if failures is None:
                        failures = []
                    failures.append((at // _WORDS, status))
            if failures is None:
                commit(pb, out, all_done, n)
            else:
                for i in range(n):
                    statuses[i] = 0
                for i, status in failures:
                    statuses[i] = status
                commit(pb, out, res, n)

    def _release(self, view: memoryview, offset: int, length: int) -> None:
        """Release an I/O's view after the backend call."""
        try:
            view.release()
        except BufferError:
            self._kept(offset, length)

    def _kept(self, offset: int, length: int) -> None:
        """The backend still exports an I/O's buffer after its call returned."""
        site = ("BufferError", "kept", 0)
        if site not in self._logged:
            self._logged.add(site)
            log.error(
                "pyspdk_sys: backend of bdev %r still holds a buffer export of the I/O of %d "
                "bytes at %d after its call returned; that memory belongs to the next I/O",
                self.name,
                length,
                offset,
            )

    def _serve(self, w: list[int]) -> int:
        """Serve one fetched I/O: 0, or -errno when it failed."""
        op, offset, length = w[2], w[3], w[4]
        try:
            if op == _READ:
                if w[5] == 1:
                    self._read_one(offset, length, w[7])
                else:
                    for base, size, at in _iovs(w[6], w[5], offset):
                        self._read_one(at, size, base)
            elif op == _WRITE:
                if w[5] == 1:
                    view = _view(w[7], length, readonly=True)
                    try:
                        self.backend.write(offset, view)
                    finally:
                        self._release(view, offset, length)
                else:
                    for base, size, at in _iovs(w[6], w[5], offset):
                        view = _view(base, size, readonly=True)
                        try:
                            self.backend.write(at, view)
                        finally:
                            self._release(view, at, size)
            elif op == _FLUSH:
                self.backend.flush()
            elif op == _UNMAP:
                self.backend.unmap(offset, length)
            elif op == _ZEROES:
                self.backend.write_zeroes(offset, length)
            elif op == _RESET:
                reset = getattr(self.backend, "reset", None)
                if reset is not None:
                    reset()
            else:
                return -errno.ENOTSUP
        except Exception as exc:
            return self._failed(exc, op, offset, length)
        return 0

    def _read_one(self, offset: int, length: int, base: int) -> None:
        view = _view(base, length)
        try:
            if self._readinto is not None:
                got = self._readinto(offset, view)
                if isinstance(got, int) and 0 <= got < length:
                    view[got:] = bytes(length - got)  # a short read reads zeros
            else:
                assert self._read is not None
                data = self._read(offset, length)
                if len(data) != length:
                    raise OSError(
                        errno.EIO,
                        f"backend read({offset}, {length}) returned {len(data)} bytes",
                    )
                view[:] = data
        finally:
            self._release(view, offset, length)

    def _failed(self, exc: BaseException, op: int, offset: int, length: int) -> int:
        with self._lock:
            self.failures += 1
        tb = exc.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        site = (
            type(exc).__name__,
            tb.tb_frame.f_code.co_filename if tb else "",
            tb.tb_lineno if tb else 0,
        )
        if site not in self._logged:
            self._logged.add(site)
            names = {v: k for k, v in _OP_CODES.items()}
            log.error(
                "pyspdk_sys: backend of bdev %r failed a %s of %d bytes at %d "
                "(the I/O fails; later failures from the same place are not logged)",
                self.name,
                names.get(op, op),
                length,
                offset,
                exc_info=exc,
            )
        code = exc.errno if isinstance(exc, OSError) and isinstance(exc.errno, int) else 0
        return -(code if code > 0 else errno.EIO)

    # ------------------------------------------------------------ asyncio

    def _on_readable(self) -> None:
        """The loop's reader: take what is queued, serve it, commit what finished."""
        pb = self._pb
        words = ffi.new("uint64_t[]", _WORDS * self.batch)
        n = lib.pyspdk_pybdev_fetch(pb, words, self.batch, 0, 0, ffi.NULL)
        if n <= 0:
            return
        got = list(ffi.unpack(words, n * _WORDS))
        done: list[list[int]] = []
        statuses: list[int] = []
        for i in range(n):
            w = got[i * _WORDS : (i + 1) * _WORDS]
            status = self._serve_async(w)
            if status is not None:
                done.append(w)
                statuses.append(status)
        if done:
            self._commit(done, statuses)

    def _commit(self, fetched: list[list[int]], statuses: list[int]) -> None:
        words = array.array("Q", [word for w in fetched for word in w])
        codes = array.array("i", statuses)
        lib.pyspdk_pybdev_commit(
            self._pb,
            ffi.from_buffer("uint64_t[]", words),
            ffi.from_buffer("int32_t[]", codes),
            len(statuses),
        )

    def _serve_async(self, w: list[int]) -> int | None:
        """Serve one I/O on the loop: its status, or None when a task will commit it."""
        if w[2] not in self._coroutine_ops:
            return self._serve(w)
        task = asyncio.ensure_future(self._serve_coroutine(w))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return None

    async def _serve_coroutine(self, w: list[int]) -> None:
        op, offset, length = w[2], w[3], w[4]
        backend = self.backend
        views: list[memoryview] = []
        try:
            if op in (_READ, _WRITE):
                spans = [(w[7], length, offset)] if w[5] == 1 else list(_iovs(w[6], w[5], offset))
                for base, size, at in spans:
                    view = _view(base, size, readonly=op == _WRITE)
                    views.append(view)
                    if op == _WRITE:
                        await backend.write(at, view)
                    elif self._readinto is not None:
                        await self._readinto(at, view)
                    else:
                        assert self._read is not None
                        data = await self._read(at, size)
                        if len(data) != size:
                            raise OSError(errno.EIO, f"backend read returned {len(data)} bytes")
                        view[:] = data
            elif op == _FLUSH:
                await backend.flush()
            elif op == _UNMAP:
                await backend.unmap(offset, length)
            elif op == _ZEROES:
                await backend.write_zeroes(offset, length)
            elif op == _RESET:
                await backend.reset()
            status = 0
        except Exception as exc:
            status = self._failed(exc, op, offset, length)
        finally:
            for view in views:
                self._release(view, offset, length)
        if not lib.pyspdk_pybdev_state(self._pb, 1):
            self._commit([w], [status])


def _iovs(iovs: int, count: int, offset: int) -> Iterable[tuple[int, int, int]]:
    """(base, length, device offset) of each buffer of a multi-buffer I/O."""
    vec = ffi.cast("struct iovec *", iovs)
    at = offset
    for i in range(count):
        size = int(vec[i].iov_len)
        yield int(ffi.cast("uintptr_t", vec[i].iov_base)), size, at
        at += size


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
