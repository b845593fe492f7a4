"""The owners of I/Os: each holds one request's C struct, buffer exports, DMA memory and result.

Each is an IoOwner (_resource.py): released exactly once, by whoever ends
its life first, under the hand-over rule of the device's gate (_gate.py);
never while SPDK holds it (the engine's state word, io.state, says whether
it does). They count themselves out of the gate, never the device's fields.

Caller's buffers are pinned (a memoryview export held) for the whole life of
the request, so resizing a bytearray an I/O uses raises BufferError in the
resizer instead of pulling memory from under the copy.
"""

from __future__ import annotations

import array
import itertools
from collections.abc import Callable
from typing import Any, Protocol

from .._binding import ffi, lib
from .._resource import IoOwner
from ..dma import BufferPool, DmaBuffer
from ..errors import io_error
from ._bounds import Bounds
from ._gate import Gate


class IoDevice(Protocol):
    """What a request holder needs of its device (BlockDevice): never more."""

    name: str
    block_size: int
    pool: BufferPool
    gate: Gate
    bounds: Bounds


IO_DONE: int = lib.PYSPDK_IO_DONE
IO_READ: int = lib.PYSPDK_IO_READ
# Async slots' tags: above any tag a queue's own counter (Completions.tags) gives.
_SLOT_TAGS = itertools.count(1 << 62)


def new_io() -> Any:
    """A request struct that SPDK does not hold (state DONE)."""
    io = ffi.new("struct pyspdk_io *")
    io.state = IO_DONE
    return io


def status_error(device: IoDevice, op: str, offset: int, length: int, io: Any) -> Exception:
    return io_error(
        device.name,
        op,
        offset,
        length,
        io.status,
        aio_status=io.aio_status,
        nvme_sct=io.nvme_sct,
        nvme_sc=io.nvme_sc,
    )


class Request(IoOwner):
    """One I/O of any kind, built per call (the general path)."""

    __slots__ = (
        "copies",
        "device",
        "failure",
        "gate",
        "held",
        "io",
        "keep",
        "length",
        "name",
        "offset",
        "pins",
        "pooled",
        "released",
        "result",
        "submit",
    )

    def __init__(self, device: IoDevice, name: str, op: int, offset: int, length: int) -> None:
        self.device = device
        self.gate = device.gate
        self.name = name
        self.offset = offset
        self.length = length
        self.io = new_io()
        self.io.op = op
        self.io.offset_blocks = offset // device.block_size
        self.io.num_blocks = length // device.block_size
        self.submit = ffi.new("struct pyspdk_io *[1]", [self.io])
        self.pooled: list[tuple[Any, int]] = []
        self.copies: list[tuple[Any, Any, int]] = []  # (target, source pointer, length)
        self.keep: list[Any] = []
        self.held: list[DmaBuffer] = []
        self.pins: list[memoryview] = []
        self.released = False
        self.result: Callable[[], Any] = lambda: None
        # The error of a failed I/O, when not status_error()'s (an NVMe command's).
        self.failure: Callable[[], Exception] | None = None

    def pin(self, view: memoryview) -> memoryview:
        """Keep the caller's buffer exported (not resizable) until release()."""
        self.pins.append(view)
        return view

    def dma_for(self, buffer: Any, length: int, copy_in: bool) -> Any:
        """A DMA pointer standing for `buffer` (a DmaBuffer, or pooled memory)."""
        if isinstance(buffer, DmaBuffer):
            ptr = buffer.acquire()
            self.held.append(buffer)
            return ptr
        ptr = self.device.pool.get(length)
        self.pooled.append((ptr, length))
        if copy_in:
            ffi.memmove(ptr, buffer, length)
        return ptr

    def is_over(self) -> bool:
        return bool(lib.pyspdk_io_is_done(self.io))

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        pool = self.device.pool
        for ptr, length in self.pooled:
            pool.put(ptr, length)
        self.pooled.clear()
        for buffer in self.held:
            buffer.release()
        self.held.clear()
        for view in self.pins:
            view.release()
        self.pins.clear()

    def complete(self) -> Any:
        """finish(), then leave the gate (the completion queue's reader calls this)."""
        try:
            return self.finish()
        finally:
            self.gate.leave()

    def finish(self) -> Any:
        """After completion: the result, or the IoError; buffers given back either way."""
        io = self.io
        try:
            if io.status == 0:
                for target, ptr, length in self.copies:
                    ffi.memmove(target, ptr, length)
                return self.result()
            if io.status == 1 and self.failure is not None:
                raise self.failure()
            raise status_error(self.device, self.name, self.offset, self.length, io)
        finally:
            self.release()


class BlockingSlot(IoOwner):
    """A thread's reusable request for the blocking path: its struct and DMA buffer.

    The hot blocking calls (read, read_into, write of plain bytes) reuse one
    per thread and device. One whose caller was interrupted is retired: the
    device keeps it until SPDK hands it back, and the thread gets a new one.
    """

    __slots__ = ("buf", "capacity", "io", "pool")

    def __init__(self, pool: BufferPool, capacity: int) -> None:
        self.pool = pool
        self.capacity = capacity
        self.buf = pool.get(capacity)
        self.io = new_io()

    def is_over(self) -> bool:
        return bool(lib.pyspdk_io_is_done(self.io))

    def release(self) -> None:
        if self.buf is not None:
            self.pool.put(self.buf, self.capacity)
            self.buf = None


class AsyncSlot(IoOwner):
    """A reusable request for futures and asyncio reads and writes of one range.

    It goes back to its device's free list when finished or released instead
    of being rebuilt for every I/O; its buffer (and a view of it, from which
    a read's bytes are taken) is kept until the device is freed.
    """

    __slots__ = (
        "buf",
        "capacity",
        "cq",
        "device",
        "free_list",
        "gate",
        "io",
        "length",
        "offset",
        "op",
        "result_view",
        "tag",
        "view",
    )

    def __init__(self, device: IoDevice, free_list: list[AsyncSlot]) -> None:
        self.device = device
        self.gate = device.gate
        self.free_list = free_list  # where a finished slot waits for the next I/O
        self.io = new_io()
        self.buf: Any = None
        self.view: memoryview | None = None
        self.result_view: memoryview | None = None  # view[:length] of the last range
        self.capacity = 0
        self.op = IO_READ  # the device sets op and offset, and length through set_length()
        self.offset = 0
        self.length = 0
        self.cq: Any = None  # the completion queue io.cq names
        self.tag = 0
        self.retag()

    def retag(self) -> None:
        """A tag no completion queued so far carries: the slot's, until it is taken back.

        A slot keeps its tag from one I/O to the next (one field less to
        write per I/O). A submitter that takes its slot back after the
        engine may have queued its completion gives it a new tag, so that
        late completion can never be read as the slot's next I/O.
        """
        self.tag = next(_SLOT_TAGS)
        self.io.tag = self.tag

    def complete_to(self, cq: Any) -> None:
        self.cq = cq
        self.io.cq = cq

    def reserve(self, length: int) -> None:
        """A buffer of at least `length` bytes (a valid I/O length) for the next range."""
        if self.capacity >= length:
            return
        self.free()
        capacity = BufferPool.size_class(length)
        self.buf = self.device.pool.get(capacity)
        self.capacity = capacity
        self.io.buf = self.buf
        self.view = memoryview(ffi.buffer(self.buf, capacity))

    def set_length(self, length: int) -> None:
        """The next ranges are `length` bytes (reserve() made room): their view of the buffer."""
        assert self.view is not None
        self.result_view = self.view[:length]
        self.length = length

    def is_over(self) -> bool:
        return bool(lib.pyspdk_io_is_done(self.io))

    def complete(self) -> Any:
        """The result (or the IoError); then the slot is free and leaves the device."""
        device = self.device
        try:
            io = self.io
            if io.status != 0:
                name = "read" if self.op == IO_READ else "write"
                raise status_error(device, name, self.offset, self.length, io)
            return self.result_view.tobytes() if self.op == IO_READ else None  # type: ignore[union-attr]
        finally:
            self.free_list.append(self)
            gate = self.gate
            gate.holds.pop()  # gate.leave(), without its call on the hot path
            if gate.closed:
                gate.notify()

    def release(self) -> None:
        self.free_list.append(self)

    def free(self) -> None:
        if self.result_view is not None:
            self.result_view.release()
            self.result_view = None
        if self.view is not None:
            self.view.release()
            self.view = None
        if self.buf is not None:
            self.device.pool.put(self.buf, self.capacity)
            self.buf = None
            self.capacity = 0
            self.length = 0


_CACHE_LINE = 64


def _cache_aligned(ctype: str, count: int) -> tuple[Any, Any]:
    """A zeroed array of `count` ctype on cache lines of its own, and the memory to keep alive.

    Lanes' cores write their own parts per I/O, and the job's cursor per
    chunk: sharing a line with what another core writes would make the cores
    fight over it.
    """
    raw = ffi.new("char[]", ffi.sizeof(ctype) * count + _CACHE_LINE)
    start = -int(ffi.cast("uintptr_t", raw)) % _CACHE_LINE
    return ffi.cast(f"{ctype} *", raw + start), raw


class Job(IoOwner):
    """One read_many/write_many call: the job, its parts, statuses, offsets and memory.

    The engine holds all of it until the job is over (job.over); the owner
    frees nothing before.
    """

    __slots__ = (
        "bad",
        "held",
        "job",
        "job_memory",
        "offsets",
        "parts",
        "parts_memory",
        "pins",
        "pooled",
        "statuses",
        "user",
    )

    def __init__(self, offsets: array.array[int], lanes: int) -> None:
        self.offsets = offsets
        self.job, self.job_memory = _cache_aligned("struct pyspdk_job", 1)
        self.job.over = 1  # not posted: the owner's
        self.parts, self.parts_memory = _cache_aligned("struct pyspdk_job_part", lanes)
        self.statuses = ffi.new("int32_t[]", len(offsets))
        self.bad = ffi.new("uint64_t *")
        self.pooled: tuple[BufferPool, Any, int] | None = None
        self.held: DmaBuffer | None = None
        self.pins: list[memoryview] = []
        self.user: Any = None

    def pin_user(self, view: memoryview, *, writable: bool) -> Any:
        """A pointer to `view`'s bytes that the SPDK threads copy to or from until release()."""
        self.user = ffi.from_buffer("char[]", view, require_writable=writable)
        return self.user

    def is_over(self) -> bool:
        return bool(lib.pyspdk_job_is_over(self.job))

    def release(self) -> None:
        if self.user is not None:
            ffi.release(self.user)  # before the view: it is an export of the view
            self.user = None
        if self.held is not None:
            self.held.release()
            self.held = None
        if self.pooled is not None:
            pool, ptr, size = self.pooled
            self.pooled = None
            pool.put(ptr, size)
        for view in self.pins:
            view.release()
        self.pins.clear()
