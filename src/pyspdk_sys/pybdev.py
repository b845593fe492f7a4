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

The backend never sees SPDK's memory. Each worker owns bounce memory (an
arena): fetch copies a write's data into it and zeroes a read's place, and
commit copies a read's data out to SPDK's buffers, in C, only after it has
claimed the I/O. So an answer that comes after the I/O timed out or was
cancelled, or a write through a view the backend kept, lands in the arena
and never in memory SPDK has taken back for another request. The backend
gets one memoryview per I/O (several buffers of one I/O are one view; the
bdev layer splits reads and writes larger than 4 MiB, so no view is larger),
aligned to the block, released after the call (a kept one raises on use). A
backend that still holds a view made from it (`buf[:]`, `memoryview(buf)`,
an export such as ffi.from_buffer's) after its call returned is seen at the
end of the batch (the arena's buffer object has a reference more): the
worker leaves that arena to the backend and takes a new one, so no later I/O
shares memory with it (logged once: it costs an allocation per batch). The
price of never lending SPDK's memory: a read costs a zeroing and a copy out
(so a place the backend leaves unfilled reads zeros, never an earlier I/O's
data), a write a copy in, all in C without the GIL; bench/pybdev.py measures
it.

A read fills its view (`readinto(offset, buffer)`, returning None or the
count it filled: the rest reads zeros; or `read(offset, length)` returning
exactly `length` bytes); a write reads it (`write(offset, data)`, returning
None or len(data)). Optional methods declare the other operations:
`flush()`, `unmap(offset, length)`, `write_zeroes(offset, length)`,
`reset()`; SPDK's io_type_supported answers from what the backend has. Any
of them may be a coroutine function when the device is served by an asyncio
loop.

Whatever a backend raises or returns fails that one I/O, never the device:
OSError's errno, EINTR for KeyboardInterrupt, else EIO reaches the submitter
(BlockDevice raises IoError; the kernel sees EIO through ublk); a wrong
return value (a count out of range, a wrong type, an awaitable from a plain
method) is EIO. Each distinct failure site is logged with its traceback once.
The two exceptions that are the program's, not the I/O's, go on after the
I/O is failed (see PythonBdev). With `io_timeout`, an I/O the backend has not
answered in time fails with ETIMEDOUT, and its late answer is dropped.

Ctrl-C: while a device made on the main thread is open (with Python's, or
any Python-level, SIGINT handler in place), SIGINT first fails every I/O
outstanding on every open device with EINTR, as a timeout would, and then
calls that handler, which raises KeyboardInterrupt as before. A program
interrupted during a read of a slow backend therefore unwinds at once:
closing its BlockDevice waits for nothing, and PythonBdev's __exit__, while
the program exits (KeyboardInterrupt, SystemExit), cancels rather than
drains. A backend still inside a call then keeps its worker until it
returns; the device is freed when it does.
"""

from __future__ import annotations

import _thread
import array
import asyncio
import errno
import inspect
import logging
import operator
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from types import FrameType, TracebackType
from typing import Any, cast

from . import _checks, _fork
from ._binding import ffi, lib
from ._resource import Resource, Stage
from .errors import RuntimeStateError, error_from_rc
from .runtime import Runtime, State, refuse_wait_on_spdk_thread

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
_OP_NAMES = {code: name for name, code in _OP_CODES.items()}
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
# One that is still inside frees the device itself when it leaves.
_JOIN_SECONDS = 1.0
# How long an idle worker spins before it sleeps on the device's eventfd, by
# default. Longer than a wake-up takes here (tens of microseconds), so a
# worker kept busy never sleeps between batches, while an idle device costs
# this much CPU once per batch and then none.
_DEFAULT_SPIN_US = 50.0
# A worker's arena starts at room for a batch of 4 KiB I/Os and grows to what
# fetch says a batch needed, by powers of two up to _MAX_ARENA (an I/O larger
# than that gets an arena of its size).
_MIN_ARENA = 64 << 10
_MAX_ARENA = 64 << 20
_MAX_ALIGN = int(lib.PYSPDK_PYBDEV_MAX_ALIGN)
# Exceptions that are the program's, not the I/O's: see PythonBdev.
_PROGRAM_EXITS = (KeyboardInterrupt, SystemExit)


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
    if isinstance(ops, (str, bytes)):
        raise TypeError(f"ops must be an iterable of operation names, not a str ({ops!r})")
    try:
        items = list(ops)
    except TypeError:
        raise TypeError(
            f"ops must be an iterable of operation names, not {type(ops).__name__} ({ops!r})"
        ) from None
    for item in items:
        if not isinstance(item, str):
            raise TypeError(
                f"ops holds {item!r} ({type(item).__name__}): each must be one of {', '.join(OPS)}"
            )
    wanted = frozenset(items)
    unknown = wanted - set(OPS)
    if unknown:
        raise ValueError(f"ops: unknown operations {sorted(unknown)}; known: {', '.join(OPS)}")
    missing = {op for op in wanted - has if op != "reset"}
    if missing:
        raise ValueError(
            f"ops lists {sorted(missing)} but backend {type(backend).__name__} has no such method"
        )
    if "read" not in wanted:
        raise ValueError(f"ops must include 'read', not only {sorted(wanted)}")
    return wanted


def _status(exc: BaseException) -> int:
    """The -errno an I/O fails with when its backend call raised `exc`."""
    if isinstance(exc, OSError) and isinstance(exc.errno, int) and exc.errno > 0:
        return -exc.errno
    if isinstance(exc, KeyboardInterrupt):
        return -errno.EINTR
    return -errno.EIO


def _arena_size(want: int) -> int:
    """The arena to take when fetch says a batch wanted `want` bytes."""
    size = _MIN_ARENA
    while size < want and size < _MAX_ARENA:
        size *= 2
    return max(size, want)


class _Arena:
    """Bounce memory of one worker (or one event-loop batch): each I/O's view is a slice of it.

    open() wraps it for a batch in a fresh memoryview; close() releases it and
    says whether the backend kept a view. Every view made from the batch's
    memoryview, however indirectly, holds the arena's buffer object, and so
    does `view.obj`: a reference more than open() counted means one survives.
    That arena is then the backend's to keep; the caller takes a new one.
    """

    __slots__ = ("buffer", "cap", "owner", "readonly", "refs", "users", "view")

    def __init__(self, cap: int) -> None:
        # Zeroed by cffi; its places are aligned by fetch (C), to the block.
        self.owner: Any = ffi.new("char[]", cap)
        self.cap = cap
        self.buffer: Any = ffi.buffer(self.owner)
        self.view: memoryview | None = None
        self.readonly: memoryview | None = None
        self.refs = 0
        self.users = 0  # event loop: the batch's pass, and each of its tasks

    def open(self) -> memoryview:
        buffer = self.buffer
        self.refs = sys.getrefcount(buffer)
        view = memoryview(buffer)
        self.view = view
        self.readonly = None
        return view

    def read_only(self) -> memoryview:
        if self.readonly is None:
            assert self.view is not None
            self.readonly = self.view.toreadonly()
        return self.readonly

    def close(self) -> bool:
        """Release the batch's views; True if the backend still holds one."""
        exported = False
        for view in (self.readonly, self.view):
            if view is not None:
                try:
                    view.release()
                except BufferError:  # pragma: no cover - only slices are handed out
                    exported = True
        self.view = self.readonly = None
        buffer = self.buffer
        return exported or sys.getrefcount(buffer) > self.refs


class _Interrupts:
    """The open devices Ctrl-C (SIGINT) fails the outstanding I/O of.

    Installed on the main thread over a Python-level SIGINT handler (Python's
    default, asyncio's, or the program's), which it calls next; put back when
    the last device closes on the main thread. A program that sets its own
    handler afterwards simply takes over: its devices then drain as before.
    asyncio.run() installs its own handler only over Python's default: with a
    device open before it starts, Ctrl-C raises KeyboardInterrupt inside the
    loop (as before Python 3.11) rather than cancelling the main task; a
    device made inside asyncio.run() chains to asyncio's handler instead.
    """

    def __init__(self) -> None:
        self.devices: dict[int, PythonBdev] = {}
        self.previous: Any = None
        self.installed = False

    def add(self, device: PythonBdev) -> None:
        self.devices[id(device)] = device
        if self.installed or threading.current_thread() is not threading.main_thread():
            return
        try:
            current = signal.getsignal(signal.SIGINT)
            if not callable(current) or current is _on_sigint:
                return  # SIG_DFL, SIG_IGN, or a C handler: SIGINT is no Python exception here
            signal.signal(signal.SIGINT, _on_sigint)
        except (ValueError, OSError):  # not the main interpreter's main thread
            return
        self.previous = current
        self.installed = True

    def discard(self, device: PythonBdev) -> None:
        self.devices.pop(id(device), None)
        if self.devices or not self.installed:
            return
        if threading.current_thread() is not threading.main_thread():
            return  # left in place: it passes SIGINT on, and serves the next device
        try:
            if signal.getsignal(signal.SIGINT) is _on_sigint:
                signal.signal(signal.SIGINT, self.previous)
        except (ValueError, OSError, TypeError):
            return
        self.installed = False
        self.previous = None


_INTERRUPTS = _Interrupts()


def _on_sigint(signum: int, frame: FrameType | None) -> Any:
    for device in list(_INTERRUPTS.devices.values()):
        device._interrupt()
    previous = _INTERRUPTS.previous
    if callable(previous) and previous is not _on_sigint:
        return previous(signum, frame)
    raise KeyboardInterrupt


class _RefusedBdev(Resource):
    """A device SPDK refused to register: freed once SPDK lets go of it.

    A thread waits for that (up to `deadline`); the runtime's teardown frees
    it if the thread has not, since its DPDK memory must go back before
    SPDK's environment ends, never after.
    """

    TEARDOWN_STAGE = Stage.DEVICES
    CLOSE_WAITS = False

    def __init__(self, runtime: Runtime, pb: Any, deadline: float) -> None:
        self._pb: Any = pb
        self._lock = threading.Lock()
        self._adopt(runtime)
        threading.Thread(
            target=self._wait_and_free, args=(deadline,), name="pybdev-free", daemon=True
        ).start()

    def _wait_and_free(self, deadline: float) -> None:
        while time.monotonic() < deadline and not self._closed:
            if lib.pyspdk_pybdev_state(self._pb, 1):
                self.close()
                return
            time.sleep(0.001)

    def _free(self) -> None:
        with self._lock:
            pb, self._pb = self._pb, None
        if pb is not None and lib.pyspdk_pybdev_state(pb, 1):
            lib.pyspdk_pybdev_free(pb)


class PythonBdev(Resource):
    """An SPDK bdev named `name`, served by `backend`, until close().

    `workers` threads serve it (default 1), or, with `loop`, an asyncio event
    loop does (then the backend's methods may be coroutine functions; the loop
    must be open). Each worker takes up to `batch` I/Os at a time, and with
    none queued spins `spin_us` microseconds before it sleeps. `io_timeout`
    (seconds) fails an I/O the backend has not answered in time. With
    `interruptible` (the default), Ctrl-C fails the I/O outstanding at that
    moment with EINTR (see the module's docstring). In-process only: it takes
    a Runtime, and the device lives as long as this object is open.

    A backend's KeyboardInterrupt or SystemExit fails its I/O like any other
    exception, and then reaches the program, because it is the program's:
    served by an event loop, both are raised again from the loop's callback,
    so they leave run_until_complete()/asyncio.run() as asyncio's own do (the
    rest of that batch fails with EINTR first). Served by worker threads,
    KeyboardInterrupt interrupts the main thread (_thread.interrupt_main, as
    Ctrl-C would: it is where Python raises it), and SystemExit, which Python
    drops in any thread but the main one and which must not land in unrelated
    code at a random point, is raised by close() (or the `with` block's exit)
    once the device is closed: the one call every program makes, at a point
    where exiting is expected. The worker serves on either way.
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
        interruptible: bool = True,
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
            if loop.is_closed():
                raise ValueError(f"loop {loop!r} is closed: a closed loop cannot serve the device")
            if workers not in (None, 0) or isinstance(workers, bool):
                raise ValueError(
                    "give either workers (threads) or loop (asyncio), not both "
                    f"(workers={workers!r})"
                )
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
        _checks.check_bool("interruptible", interruptible)
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
        self._freed = False
        self._cancelled = False
        self._env_released = False  # the device's DPDK memory is back
        self._torn_down = False  # the runtime's teardown ran: SPDK's environment is ending
        self._holders = 0  # workers alive, tasks pending, the loop's reader: each may touch pb
        self._exit: SystemExit | None = None  # a worker's, for close() to raise
        self._inline_exit: BaseException | None = None  # the event loop's, raised after commit
        self._logged: set[tuple[str, str, int]] = set()
        self._threads: list[threading.Thread] = []
        self._loop = loop
        self._reader = False
        self._tasks: set[asyncio.Future[Any]] = set()
        self._spare: _Arena | None = None  # the event loop's arena, when no task holds it
        self._arena_cap = max(_MIN_ARENA, batch * max(4096, block_size))
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
        self._adopt(runtime)
        try:
            self._start_serving(workers)
        except BaseException:
            self._roll_back()
            raise
        if interruptible:
            _INTERRUPTS.add(self)

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
        _RefusedBdev(self.runtime, pb, deadline)

    def _start_serving(self, workers: int) -> None:
        """Start the worker threads, or the event loop's reader."""
        loop = self._loop
        if loop is None:
            for index in range(workers):
                thread = threading.Thread(
                    target=self._work, name=f"pybdev-{self.name}-{index}", daemon=True
                )
                with self._lock:
                    self._holders += 1
                try:
                    thread.start()
                except BaseException:
                    with self._lock:
                        self._holders -= 1
                    raise
                self._threads.append(thread)
            return
        lib.pyspdk_pybdev_watch_fd(self._pb)
        fd = lib.pyspdk_pybdev_fd(self._pb)
        with self._lock:
            self._holders += 1
            self._reader = True
        try:
            if _running_loop() is loop or not loop.is_running():
                loop.add_reader(fd, self._on_readable)
            else:
                loop.call_soon_threadsafe(loop.add_reader, fd, self._on_readable)
        except BaseException:
            with self._lock:
                self._holders -= 1
                self._reader = False
            raise
        if loop.is_closed():  # closed by another thread meanwhile: nobody would serve
            raise ValueError(f"loop {loop!r} was closed while the device was being set up")

    def _roll_back(self) -> None:
        """Undo a registration whose serving could not start: nothing stays registered."""
        try:
            self.close(cancel=True, timeout=5)
        except Exception:
            log.exception("pyspdk_sys: bdev %r: rolling back its registration failed", self.name)

    # ------------------------------------------------------------ state

    def __enter__(self) -> PythonBdev:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """close(). While the program exits (KeyboardInterrupt, SystemExit in
        flight), what is queued is cancelled rather than drained; with any
        exception in flight, a failure to close is logged rather than raised
        over it. On the running loop that serves the device, which cannot serve
        while this blocks it, what is queued is cancelled (`async with` drains).
        """
        cancel = _exiting(exc_type) or (self._loop is not None and _running_loop() is self._loop)
        if exc_type is None:
            self.close(cancel=cancel)
            return
        try:
            self.close(cancel=cancel, timeout=5 if cancel else 30.0)
        except Exception:
            log.exception(
                "pyspdk_sys: bdev %r did not close while %s was raised",
                self.name,
                exc_type.__name__,
            )

    async def __aenter__(self) -> PythonBdev:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """aclose(); with an exception in flight, as __exit__."""
        cancel = _exiting(exc_type)
        if exc_type is None:
            await self.aclose()
            return
        try:
            await self.aclose(cancel=cancel, timeout=5 if cancel else 30.0)
        except Exception:
            log.exception(
                "pyspdk_sys: bdev %r did not close while %s was raised",
                self.name,
                exc_type.__name__,
            )

    @property
    def queued(self) -> int:
        """I/Os waiting for a worker now."""
        self._check_open()
        return int(lib.pyspdk_pybdev_state(self._pb, 3))

    @property
    def expired(self) -> int:
        """I/Os failed so far because they timed out, were cancelled or interrupted."""
        self._check_open()
        return int(lib.pyspdk_pybdev_state(self._pb, 4))

    def _describe(self) -> str:
        return f"Python-served bdev {self.name!r}"

    def _check_open(self) -> None:
        if self._forked:
            raise RuntimeStateError(_fork.forked_message(self._describe()))
        super()._check_open()

    def _mark_closed(self) -> bool:
        with self._lock:
            closed, self._closed = self._closed, True
        return not closed

    def _after_fork_in_child(self) -> None:
        # The parent's workers, memory and SPDK are not this process's to touch.
        super()._after_fork_in_child()
        self._freed = True
        self._lock = threading.Lock()
        _INTERRUPTS.devices.pop(id(self), None)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<PythonBdev {self.name!r} {self.num_blocks}x{self.block_size} {state}>"

    def _interrupt(self) -> None:
        """Ctrl-C (in the SIGINT handler, on the main thread): fail what is outstanding."""
        # Never wait here: the main thread may hold the lock where the signal struck.
        if self._lock.acquire(blocking=False):
            try:
                if not self._freed:
                    lib.pyspdk_pybdev_interrupt(self._pb)
            finally:
                self._lock.release()

    # ------------------------------------------------------------ closing

    def close(self, timeout: float = 30.0, *, cancel: bool = False) -> None:
        """Unregister the bdev and stop the workers. Safe to call again.

        SPDK first asks everyone who has the bdev open to close it. I/O already
        queued is still served (drained), unless `cancel` fails it at once with
        ECANCELED; after `timeout` seconds of draining the rest is cancelled
        too, so that a backend that never answers cannot hold close() up.
        TimeoutError if SPDK has still not let go `timeout` seconds later
        (someone keeps the bdev open).

        What could not be served while close() waits is cancelled instead of
        drained: called from one of the device's own workers (from inside the
        backend), or with its event loop closed or not running. On the thread
        of the running loop that serves it, only close(cancel=True) is allowed
        (await aclose() drains). Not on the SPDK thread: it would wait on
        itself. A SystemExit a worker caught from the backend is raised here,
        once the device is closed.
        """
        _checks.check_bool("cancel", cancel)
        if self._forked:
            return
        refuse_wait_on_spdk_thread(f"closing Python-served bdev {self.name!r}")
        loop = self._loop
        if loop is not None and _running_loop() is loop and not cancel and not self._closed:
            raise RuntimeStateError(
                "close() waits for the I/O this event loop serves: await aclose() instead, "
                "or close(cancel=True) to fail what is queued"
            )
        if threading.current_thread() in self._threads:
            cancel = True  # this worker's own I/O cannot finish while it waits here
        if loop is not None and (loop.is_closed() or not loop.is_running()):
            cancel = True  # nobody serves what is queued
        seconds = self._begin_close(cancel, timeout)
        if seconds is None:
            self._finish_after_stop()
            self._raise_exit()
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
        self._raise_exit()

    async def aclose(self, *, cancel: bool = False, timeout: float = 30.0) -> None:
        """close() for asyncio programs; the way to close a device served by this loop."""
        _checks.check_bool("cancel", cancel)
        if self._forked:
            return
        refuse_wait_on_spdk_thread(f"closing Python-served bdev {self.name!r}")
        if asyncio.current_task() in self._tasks:
            cancel = True  # this task's own I/O cannot finish while it waits here
        seconds = self._begin_close(cancel, timeout)
        if seconds is None:
            self._finish_after_stop()
            self._raise_exit()
            return
        if self.runtime.state is State.RUNNING:
            try:
                await self.runtime.run(lib.pyspdk_pybdev_unregister, self._pb)
            except RuntimeStateError:
                pass
            else:
                started = time.monotonic()
                while not self._released(started, seconds):
                    await asyncio.sleep(0.002)
        self._finish()
        self._raise_exit()

    def _begin_close(self, cancel: bool, timeout: float) -> float | None:
        """Mark the device closed: the drain timeout, or None if it already was."""
        seconds = _checks.check_timeout("timeout", timeout) or 30.0
        first = self._mark_closed()
        _INTERRUPTS.discard(self)  # again after a stop: on the main thread, the handler goes
        if not first:
            return None
        if cancel:
            lib.pyspdk_pybdev_cancel(self._pb)
            self._cancelled = True
        return seconds

    def _raise_exit(self) -> None:
        exit_, self._exit = self._exit, None
        if exit_ is not None:
            raise exit_

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
        """Stop the workers; free the device once SPDK has let go of it and the
        last worker, task or reader that could touch it is gone."""
        if self._freed:
            return
        pb = self._pb
        lib.pyspdk_pybdev_stop_workers(pb)
        self._drop_reader()
        deadline = time.monotonic() + _JOIN_SECONDS
        stuck = []
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
                if thread.is_alive():
                    stuck.append(thread.name)
        self._release_env()
        if self._env_released:
            self._release(self.runtime)
        if stuck or self._tasks:
            log.warning(
                "pyspdk_sys: bdev %r: %s still in the backend; the device is freed when "
                "they leave it",
                self.name,
                ", ".join(stuck) or f"{len(self._tasks)} asyncio tasks",
            )
        self._maybe_free()

    def _release_env(self, *, teardown: bool = False) -> None:
        """Once SPDK let go, while its environment is up: its DPDK memory back now.

        The environment ends after the teardown hooks; this one is discarded
        only once the memory is back, so until it has run the memory can go.
        """
        with self._lock:
            if self._freed or self._env_released or (self._torn_down and not teardown):
                return
            if lib.pyspdk_pybdev_state(self._pb, 1):
                lib.pyspdk_pybdev_release_env(self._pb)
                self._env_released = True

    def _maybe_free(self) -> None:
        """Free the device if it is closed, SPDK let go, and nothing can touch it."""
        with self._lock:
            if (
                self._freed
                or not self._closed
                or self._holders > 0
                or not self._env_released
                or not lib.pyspdk_pybdev_state(self._pb, 1)
            ):
                return
            self._freed = True
            lib.pyspdk_pybdev_free(self._pb)

    def _let_go(self) -> None:
        """A worker, task or reader will not touch the device again."""
        with self._lock:
            self._holders -= 1
        self._maybe_free()

    def _drop_reader(self) -> None:
        """Take the event loop's reader off the device's eventfd."""
        loop = self._loop
        with self._lock:
            if loop is None or not self._reader:
                return
            self._reader = False
        fd = lib.pyspdk_pybdev_fd(self._pb)

        def remove() -> None:
            try:
                if not loop.is_closed():
                    loop.remove_reader(fd)
            finally:
                self._let_go()

        if _running_loop() is loop or loop.is_closed() or not loop.is_running():
            # On the loop, or nobody runs it (a closed loop has no readers left).
            remove()
            return
        try:
            loop.call_soon_threadsafe(remove)
        except RuntimeError:  # closed meanwhile: its readers went with it
            self._let_go()
            return
        done = threading.Event()
        loop.call_soon_threadsafe(done.set)
        done.wait(_JOIN_SECONDS)

    STOP_STAGE = Stage.DEVICES
    TEARDOWN_STAGE = Stage.DEVICES

    def on_stop(self) -> None:
        # On the SPDK thread: the bdev layer is about to unregister every bdev.
        # Workers may be gone or slow; do not let the shutdown wait for them.
        self._mark_closed()
        _INTERRUPTS.devices.pop(id(self), None)
        lib.pyspdk_pybdev_cancel(self._pb)

    def on_teardown(self) -> None:
        lib.pyspdk_pybdev_stop_workers(self._pb)
        deadline = time.monotonic() + _JOIN_SECONDS
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        # SPDK's environment ends after the teardown: the device's DPDK memory
        # goes back now, the rest when nothing can touch it (here, or when the
        # last worker leaves the backend). Not gone by now, it is never freed.
        self._release_env(teardown=True)
        with self._lock:
            self._torn_down = True
        self._drop_reader()
        self._maybe_free()

    # ------------------------------------------------------------ serving

    def _work(self) -> None:
        """A worker thread: fetch a batch, serve it, commit it, until stopped."""
        try:
            self._work_loop()
        except BaseException:  # pragma: no cover - a bug here: say so, never hang
            log.exception("pyspdk_sys: a worker of bdev %r failed", self.name)
        finally:
            self._let_go()

    def _work_loop(self) -> None:
        pb = self._pb
        words = array.array("Q", bytes(8 * _WORDS * self.batch))
        out = ffi.from_buffer("uint64_t[]", words)
        statuses = array.array("i", bytes(4 * self.batch))
        res = ffi.from_buffer("int32_t[]", statuses)
        want = ffi.new("uint64_t *")
        # Reads first, served inline by readinto; without it, none are set apart.
        reads = ffi.new("int *") if self._readinto is not None else ffi.NULL
        fetch = lib.pyspdk_pybdev_fetch
        commit = lib.pyspdk_pybdev_commit
        serve = self._serve_batch
        batch = self.batch
        spin = self._spin_ns
        arena = _Arena(self._arena_cap)
        while True:
            n = fetch(pb, out, batch, spin, _FETCH_SLICE_NS, arena.owner, arena.cap, want, reads)
            if n <= 0:
                if n == -errno.ESHUTDOWN:
                    return
                if n < 0:
                    log.error("pyspdk_sys: fetch on bdev %r failed: %s", self.name, n)
                    time.sleep(0.01)
                elif want[0]:
                    arena = _Arena(_arena_size(int(want[0])))  # not even one fitted
                continue
            view = arena.open()
            try:
                failures = serve(words, n, reads[0] if reads else 0, view, arena)
            except BaseException as exc:  # pragma: no cover - a bug in _serve_batch
                log.exception("pyspdk_sys: bdev %r: serving a batch failed", self.name)
                failures = [(i, _status(exc)) for i in range(n)]
            kept = arena.close()
            if failures is None:
                commit(pb, out, ffi.NULL, n, arena.owner)
            else:
                for i in range(n):
                    statuses[i] = 0
                for i, status in failures:
                    statuses[i] = status
                commit(pb, out, res, n, arena.owner)
            if kept:
                self._kept_view()
                arena = _Arena(arena.cap)
            if want[0] > arena.cap:
                arena = _Arena(_arena_size(int(want[0])))

    def _serve_batch(
        self, words: array.array[int], n: int, reads: int, view: memoryview, arena: _Arena
    ) -> list[tuple[int, int]] | None:
        """Serve n fetched rows on a worker, the first `reads` of them reads for
        readinto: the (row, -errno) of those that failed."""
        failures: list[tuple[int, int]] | None = None
        readinto = cast(Callable[..., Any], self._readinto)  # reads > 0: it has one
        top = reads * _WORDS
        # Reads by readinto inline, taking from each row only the words they
        # use (offset, and the place's start and end): the hot path.
        for i, (offset, lo, hi) in enumerate(
            zip(words[3:top:_WORDS], words[5:top:_WORDS], words[6:top:_WORDS], strict=True)
        ):
            place = view[lo:hi]
            try:
                got = readinto(offset, place)
                if got is not None:
                    self._filled(got, place, offset)
            except BaseException as exc:
                if failures is None:
                    failures = []
                failures.append((i, self._failed(exc, _READ, offset, hi - lo)))
                if isinstance(exc, _PROGRAM_EXITS):
                    self._program_exit(exc)
            try:
                place.release()
            except BufferError:
                self._exported(offset, hi - lo)
        for at in range(top, n * _WORDS, _WORDS):
            op, offset, length, lo, hi = words[at + 2 : at + 7]
            status = self._serve(op, offset, length, lo, hi, arena)
            if status:
                if failures is None:
                    failures = []
                failures.append((at // _WORDS, status))
        return failures

    def _filled(self, got: Any, place: memoryview, offset: int) -> None:
        """readinto returned something: a count (the rest reads zeros) or a mistake."""
        length = len(place)
        if isinstance(got, bool) or not _is_index(got):
            _close_awaitable(got)
            raise TypeError(
                f"backend readinto({offset}, <{length} bytes>) returned {_describe(got)}: "
                "None or the count of bytes it filled"
            )
        count = operator.index(got)
        if not 0 <= count <= length:
            raise ValueError(
                f"backend readinto({offset}, <{length} bytes>) returned {count}, "
                f"outside 0..{length}"
            )
        if count < length:
            place[count:] = bytes(length - count)  # a short read reads zeros

    def _serve(self, op: int, offset: int, length: int, lo: int, hi: int, arena: _Arena) -> int:
        """Serve one I/O on a worker, or inline on the event loop: 0, or -errno."""
        backend = self.backend
        place: memoryview | None = None
        try:
            if op == _READ:
                assert arena.view is not None
                place = arena.view[lo:hi]
                if self._readinto is not None:
                    got = self._readinto(offset, place)
                    if got is not None:
                        self._filled(got, place, offset)
                else:
                    assert self._read is not None
                    self._copy_read(self._read(offset, length), place, offset)
            elif op == _WRITE:
                place = arena.read_only()[lo:hi]
                self._wrote(backend.write(offset, place), offset, length)
            elif op == _FLUSH:
                _no_awaitable(backend.flush(), "flush()")
            elif op == _UNMAP:
                _no_awaitable(backend.unmap(offset, length), f"unmap({offset}, {length})")
            elif op == _ZEROES:
                _no_awaitable(
                    backend.write_zeroes(offset, length), f"write_zeroes({offset}, {length})"
                )
            elif op == _RESET:
                reset = getattr(backend, "reset", None)
                if reset is not None:
                    _no_awaitable(reset(), "reset()")
            else:
                return -errno.ENOTSUP
        except BaseException as exc:
            if isinstance(exc, _PROGRAM_EXITS):
                self._program_exit(exc)
            return self._failed(exc, op, offset, length)
        finally:
            if place is not None:
                try:
                    place.release()
                except BufferError:
                    self._exported(offset, length)
        return 0

    def _copy_read(self, data: Any, place: memoryview, offset: int) -> None:
        """What read(offset, length) returned, into the I/O's place: exactly its length."""
        length = len(place)
        if isinstance(data, (str, int)) or inspect.isawaitable(data):
            _close_awaitable(data)
            raise TypeError(
                f"backend read({offset}, {length}) returned {_describe(data)}: bytes of that length"
            )
        try:
            got = memoryview(data)
        except TypeError:
            raise TypeError(
                f"backend read({offset}, {length}) returned {_describe(data)}: bytes of that length"
            ) from None
        with got:
            if got.nbytes != length:
                raise OSError(
                    errno.EIO,
                    f"backend read({offset}, {length}) returned {got.nbytes} bytes",
                )
            place[:] = got.cast("B") if got.format != "B" or got.ndim != 1 else got

    @staticmethod
    def _wrote(result: Any, offset: int, length: int) -> None:
        """write returned something: None, or a count that must be the whole buffer."""
        if result is None:
            return
        _no_awaitable(result, f"write({offset}, <{length} bytes>)")
        if _is_index(result) and not isinstance(result, bool) and operator.index(result) != length:
            raise OSError(
                errno.EIO,
                f"backend write({offset}, <{length} bytes>) wrote {operator.index(result)} "
                f"bytes of {length}",
            )

    def _exported(self, offset: int, length: int) -> None:
        """The backend still exports an I/O's view after its call returned."""
        site = ("BufferError", "kept", 0)
        if site not in self._logged:
            self._logged.add(site)
            log.error(
                "pyspdk_sys: backend of bdev %r still holds a buffer export of the I/O of %d "
                "bytes at %d after its call returned; it writes into bounce memory left to "
                "it, never into another I/O's",
                self.name,
                length,
                offset,
            )

    def _kept_view(self) -> None:
        """A batch ended with a view of its arena still held: that arena is left to the backend."""
        site = ("kept", "arena", 0)
        if site not in self._logged:
            self._logged.add(site)
            log.warning(
                "pyspdk_sys: backend of bdev %r keeps views of its I/O buffers after its "
                "calls return; each such batch gets new bounce memory (an allocation), "
                "and what it writes there later reaches no I/O",
                self.name,
            )

    def _failed(self, exc: BaseException, op: int, offset: int, length: int) -> int:
        """An I/O's backend call raised `exc`: count and log it; its -errno."""
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
            log.error(
                "pyspdk_sys: backend of bdev %r failed a %s of %d bytes at %d "
                "(the I/O fails; later failures from the same place are not logged)",
                self.name,
                _OP_NAMES.get(op, op),
                length,
                offset,
                exc_info=exc,
            )
        return _status(exc)

    def _program_exit(self, exc: BaseException) -> None:
        """A backend called inline raised KeyboardInterrupt or SystemExit: pass it on.

        On a worker thread, KeyboardInterrupt interrupts the main thread and
        SystemExit waits for close(); inline on an event loop, _on_readable
        raises it again once the batch is committed.
        """
        if self._loop is not None:
            if self._inline_exit is None:
                self._inline_exit = exc
        elif isinstance(exc, KeyboardInterrupt):
            _thread.interrupt_main()
        elif self._exit is None:
            assert isinstance(exc, SystemExit)
            self._exit = exc
            log.error(
                "pyspdk_sys: backend of bdev %r raised SystemExit(%r) on a worker thread; "
                "close() raises it once the device is closed",
                self.name,
                exc.code,
            )

    # ------------------------------------------------------------ asyncio

    def _loop_arena(self) -> _Arena:
        arena = self._spare
        self._spare = None
        if arena is None:
            arena = _Arena(self._arena_cap)
        return arena

    def _arena_done(self, arena: _Arena) -> None:
        """One user of an event-loop batch's arena is done; the last closes it."""
        arena.users -= 1
        if arena.users:
            return
        if arena.close():
            self._kept_view()
        elif self._spare is None and arena.cap == self._arena_cap:
            self._spare = arena

    def _on_readable(self) -> None:
        """The loop's reader: take what is queued, serve it, commit what finished.

        A KeyboardInterrupt or SystemExit from the backend fails that I/O and
        the rest of the batch (EINTR), which are committed, and is raised again.
        """
        if self._freed or not self._reader:
            return
        pb = self._pb
        arena = self._loop_arena()
        words = array.array("Q", bytes(8 * _WORDS * self.batch))
        want = ffi.new("uint64_t *")
        rows = ffi.from_buffer("uint64_t[]", words)
        n = lib.pyspdk_pybdev_fetch(
            pb, rows, self.batch, 0, 0, arena.owner, arena.cap, want, ffi.NULL
        )
        if n <= 0:
            if want[0] > arena.cap:  # not even one fitted: the next call takes a larger one
                self._arena_cap = _arena_size(int(want[0]))
            else:
                self._spare = arena
            return
        arena.open()
        arena.users = 1
        handled: set[int] = set()
        done: list[int] = []  # rows served inline, with their statuses
        statuses: list[int] = []
        stop: BaseException | None = None
        try:
            for i in range(n):
                w = words[i * _WORDS : (i + 1) * _WORDS]
                op = w[2]
                if stop is None and op in self._coroutine_ops:
                    self._start_task(w, arena)
                    handled.add(i)
                    continue
                if stop is None:
                    status = self._serve(op, w[3], w[4], w[5], w[6], arena)
                    stop, self._inline_exit = self._inline_exit, None
                else:
                    status = -errno.EINTR
                handled.add(i)
                done.append(i)
                statuses.append(status)
        except BaseException as exc:  # a KeyboardInterrupt between rows: fail the rest
            stop = exc
            for i in range(n):
                if i not in handled:
                    done.append(i)
                    statuses.append(-errno.EINTR)
        finally:
            self._commit(words, done, statuses, arena)
            self._arena_done(arena)
            if want[0] > self._arena_cap:
                self._arena_cap = _arena_size(int(want[0]))
        if stop is not None:
            raise stop

    def _start_task(self, w: array.array[int], arena: _Arena) -> None:
        arena.users += 1
        try:
            task = asyncio.ensure_future(self._serve_coroutine(w, arena))
        except BaseException:
            arena.users -= 1
            raise
        with self._lock:
            self._holders += 1
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _commit(
        self, words: array.array[int], rows: list[int], statuses: list[int], arena: _Arena
    ) -> None:
        if not rows:
            return
        picked = array.array("Q")
        for i in rows:
            picked.extend(words[i * _WORDS : (i + 1) * _WORDS])
        codes = array.array("i", statuses)
        lib.pyspdk_pybdev_commit(
            self._pb,
            ffi.from_buffer("uint64_t[]", picked),
            ffi.from_buffer("int32_t[]", codes),
            len(rows),
            arena.owner,
        )

    def _task_done(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        self._let_go()

    async def _serve_coroutine(self, w: array.array[int], arena: _Arena) -> None:
        """One I/O whose backend method is a coroutine function, as a task of the loop."""
        op, offset, length, lo, hi = w[2], w[3], w[4], w[5], w[6]
        backend = self.backend
        place: memoryview | None = None
        raised: BaseException | None = None
        try:
            if op == _READ:
                assert arena.view is not None
                place = arena.view[lo:hi]
                if self._readinto is not None:
                    got = await self._readinto(offset, place)
                    if got is not None:
                        self._filled(got, place, offset)
                else:
                    assert self._read is not None
                    self._copy_read(await self._read(offset, length), place, offset)
            elif op == _WRITE:
                place = arena.read_only()[lo:hi]
                self._wrote(await backend.write(offset, place), offset, length)
            elif op == _FLUSH:
                await backend.flush()
            elif op == _UNMAP:
                await backend.unmap(offset, length)
            elif op == _ZEROES:
                await backend.write_zeroes(offset, length)
            elif op == _RESET:
                await backend.reset()
            status = 0
        except BaseException as exc:
            # Cancelled (the loop shuts down), closed (GeneratorExit), or the
            # program's own exit: fail the I/O first, then let it go on.
            status = self._failed(exc, op, offset, length)
            if isinstance(exc, (*_PROGRAM_EXITS, asyncio.CancelledError, GeneratorExit)):
                raised = exc
        finally:
            if place is not None:
                try:
                    place.release()
                except BufferError:
                    self._exported(offset, length)
        if not self._freed:
            self._commit(w, [0], [status], arena)
        self._arena_done(arena)
        if raised is not None:
            raise raised


def _exiting(exc_type: type[BaseException] | None) -> bool:
    """Whether an exception of this type in flight means the program is leaving."""
    return exc_type is not None and not issubclass(exc_type, Exception)


def _is_index(value: Any) -> bool:
    try:
        operator.index(value)
    except TypeError:
        return False
    return True


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _close_awaitable(value: Any) -> None:
    """A coroutine nobody will await: close it, so Python does not warn about it."""
    if inspect.iscoroutine(value):
        value.close()


def _no_awaitable(value: Any, call: str) -> None:
    """A plain method that returned an awaitable did none of its work."""
    if value is not None and inspect.isawaitable(value):
        _close_awaitable(value)
        raise TypeError(
            f"backend {call} returned an awaitable ({_describe(value)}): declare it "
            "`async def` and serve the device from an event loop, or make it do its work"
        )


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
