"""Block devices: open any SPDK bdev by name, read and write bytes from any Python thread.

Every form (blocking calls from any number of threads, futures, asyncio and
batches) goes through one C engine (_shims/bdev_io.c): the caller queues a
request, a poller on the SPDK thread submits it, and the completion is
finished in C, so the SPDK thread never waits for the GIL. Python bytes-like
objects are copied through pooled DMA buffers; a DmaBuffer is used as is.
Arguments are checked here, before anything reaches SPDK.
"""

from __future__ import annotations

import array
import asyncio
import errno
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from ._binding import ffi, lib
from ._completions import Completions, future_reaper, loop_reaper, thread_completions
from .dma import MIN_ALIGN, BufferPool, DmaBuffer, require_running
from .errors import DeviceNotFoundError, IoError, RuntimeStateError
from .runtime import Runtime, SpdkFuture

__all__ = [
    "BdevInfo",
    "BlockDevice",
    "DmaBuffer",
    "bdev_info",
    "create_aio",
    "create_error",
    "create_malloc",
    "create_null",
    "delete_bdev",
    "list_bdevs",
    "open_bdev",
]

_IO_TYPES = {
    "read": lib.SPDK_BDEV_IO_TYPE_READ,
    "write": lib.SPDK_BDEV_IO_TYPE_WRITE,
    "unmap": lib.SPDK_BDEV_IO_TYPE_UNMAP,
    "flush": lib.SPDK_BDEV_IO_TYPE_FLUSH,
    "reset": lib.SPDK_BDEV_IO_TYPE_RESET,
    "write_zeroes": lib.SPDK_BDEV_IO_TYPE_WRITE_ZEROES,
    "compare": lib.SPDK_BDEV_IO_TYPE_COMPARE,
    "zcopy": lib.SPDK_BDEV_IO_TYPE_ZCOPY,
    "abort": lib.SPDK_BDEV_IO_TYPE_ABORT,
    "copy": lib.SPDK_BDEV_IO_TYPE_COPY,
    "nvme_admin": lib.SPDK_BDEV_IO_TYPE_NVME_ADMIN,
    "nvme_io": lib.SPDK_BDEV_IO_TYPE_NVME_IO,
}


@dataclass(frozen=True)
class BdevInfo:
    """What SPDK says about one block device."""

    name: str
    product_name: str
    block_size: int
    num_blocks: int
    uuid: str
    io_types: frozenset[str]
    buf_align: int

    @property
    def size(self) -> int:
        return self.block_size * self.num_blocks


def _text(pointer: Any) -> str:
    return ffi.string(pointer).decode() if pointer != ffi.NULL else ""


def _describe(bdev: Any) -> BdevInfo:
    """On the SPDK thread: a snapshot of one bdev."""
    uuid = ffi.new("char[]", 40)
    lib.spdk_uuid_fmt_lower(uuid, 40, lib.spdk_bdev_get_uuid(bdev))
    return BdevInfo(
        name=_text(lib.spdk_bdev_get_name(bdev)),
        product_name=_text(lib.spdk_bdev_get_product_name(bdev)),
        block_size=lib.spdk_bdev_get_block_size(bdev),
        num_blocks=lib.spdk_bdev_get_num_blocks(bdev),
        uuid=ffi.string(uuid).decode(),
        io_types=frozenset(
            k for k, v in _IO_TYPES.items() if lib.spdk_bdev_io_type_supported(bdev, v)
        ),
        buf_align=lib.spdk_bdev_get_buf_align(bdev),
    )


def _list_on_spdk_thread() -> list[BdevInfo]:
    found = []
    bdev = lib.spdk_bdev_first()
    while bdev != ffi.NULL:
        found.append(_describe(bdev))
        bdev = lib.spdk_bdev_next(bdev)
    return found


def list_bdevs(runtime: Runtime) -> list[BdevInfo]:
    """Every block device of the running SPDK."""
    return runtime.call(_list_on_spdk_thread)


def _check_name(name: str) -> bytes:
    if not isinstance(name, str):
        raise TypeError(f"a device name is a str, not {type(name).__name__}")
    if not name or "\0" in name:
        raise ValueError(f"invalid device name {name!r}")
    return name.encode()


def bdev_info(runtime: Runtime, name: str) -> BdevInfo:
    """One device's description; DeviceNotFoundError if there is none by that name."""
    encoded = _check_name(name)

    def lookup() -> BdevInfo:
        bdev = lib.spdk_bdev_get_by_name(encoded)
        if bdev == ffi.NULL:
            raise DeviceNotFoundError(f"no block device named {name!r}")
        return _describe(bdev)

    return runtime.call(lookup)


# ------------------------------------------------------------------ requests


class _Request:
    """One I/O: its C struct, its buffers, and how to turn the outcome into a result."""

    __slots__ = (
        "copies",
        "device",
        "held",
        "io",
        "keep",
        "length",
        "name",
        "offset",
        "pooled",
        "result",
    )

    def __init__(self, device: BlockDevice, name: str, op: int, offset: int, length: int) -> None:
        self.device = device
        self.name = name
        self.offset = offset
        self.length = length
        self.io = ffi.new("struct pyspdk_io *")
        self.io.op = op
        self.io.offset_blocks = offset // device.block_size
        self.io.num_blocks = length // device.block_size
        self.pooled: list[tuple[Any, int]] = []
        self.copies: list[tuple[Any, Any, int]] = []  # (target, source pointer, length)
        self.keep: list[Any] = []
        self.held: list[DmaBuffer] = []
        self.result: Callable[[], Any] = lambda: None

    def dma_for(self, buffer: Any, length: int, copy_in: bool) -> Any:
        """A DMA pointer standing for `buffer` (a DmaBuffer, or pooled memory)."""
        if isinstance(buffer, DmaBuffer):
            ptr = buffer.acquire()
            self.held.append(buffer)
            return ptr
        ptr = self.device._pool.get(length)
        self.pooled.append((ptr, length))
        if copy_in:
            ffi.memmove(ptr, buffer, length)
        return ptr

    def is_over(self) -> bool:
        return bool(lib.pyspdk_io_is_done(self.io))

    def release(self) -> None:
        pool = self.device._pool
        for ptr, length in self.pooled:
            pool.put(ptr, length)
        self.pooled.clear()
        for buffer in self.held:
            buffer.release()
        self.held.clear()

    def finish(self) -> Any:
        """After completion: the result, or the IoError; buffers go back to the pool."""
        io = self.io
        try:
            if io.status == 0:
                for target, ptr, length in self.copies:
                    ffi.memmove(target, ptr, length)
                return self.result()
            raise self.error(io.status)
        finally:
            self.release()

    def error(self, status: int) -> IoError:
        return _io_error(self.device.name, self.name, self.offset, self.length, self.io, status)


class _NoDetail:
    """Stands in for a request struct when SPDK gave no status detail."""

    aio_status = 0
    nvme_sct = 0
    nvme_sc = 0


_NO_DETAIL = _NoDetail()


def _io_error(device: str, op: str, offset: int, length: int, io: Any, status: int) -> IoError:
    """The IoError for a request that ended with `status` (see struct pyspdk_io)."""
    where = f"{op} of {length} bytes at offset {offset} on {device}"
    if status == 1:
        code = errno.EIO if io.aio_status == 0 else -io.aio_status
        return IoError(
            code,
            f"{where} failed (NVMe status type {io.nvme_sct}, code {io.nvme_sc})",
            device=device,
            op=op,
            offset=offset,
            length=length,
            nvme_sct=io.nvme_sct,
            nvme_sc=io.nvme_sc,
        )
    code = -status
    reason = {
        errno.ECANCELED: "was cancelled: the device closed before SPDK took it",
        errno.ENODEV: "failed: the device was removed",
    }.get(code, f"was refused by SPDK: {os.strerror(code)}")
    return IoError(code, f"{where} {reason}", device=device, op=op, offset=offset, length=length)


class _Slot:
    """A thread's reusable request for the blocking path: its struct and DMA buffer.

    The hot blocking calls (read, read_into, write of plain bytes) reuse one per
    thread and device, instead of building a _Request.
    """

    __slots__ = ("buf", "capacity", "io", "pool")

    def __init__(self, pool: BufferPool, capacity: int) -> None:
        self.pool = pool
        self.capacity = capacity
        self.buf = pool.get(capacity)
        self.io = ffi.new("struct pyspdk_io *")

    def is_over(self) -> bool:
        return bool(lib.pyspdk_io_is_done(self.io))

    def release(self) -> None:
        if self.buf is not None:
            self.pool.put(self.buf, self.capacity)
            self.buf = None


class _AsyncSlot:
    """A reusable request for futures and asyncio reads and writes of one range.

    Same interface as _Request for the completion side; it goes back to its
    device's free list when finished instead of being rebuilt for every I/O.
    """

    __slots__ = ("buf", "capacity", "device", "io", "length", "name", "offset", "submit")

    def __init__(self, device: BlockDevice) -> None:
        self.device = device
        self.io = ffi.new("struct pyspdk_io *")
        self.submit = ffi.new("struct pyspdk_io *[1]", [self.io])
        self.buf: Any = None
        self.capacity = 0
        self.name = "read"
        self.offset = 0
        self.length = 0

    def prepare(self, op: int, name: str, offset: int, length: int) -> None:
        if self.capacity < length:
            pool = self.device._pool
            if self.buf is not None:
                pool.put(self.buf, self.capacity)
                self.buf = None
            self.capacity = BufferPool.size_class(length)
            self.buf = pool.get(self.capacity)
        block_size = self.device.block_size
        io = self.io
        io.op = op
        io.offset_blocks = offset // block_size
        io.num_blocks = length // block_size
        io.buf = self.buf
        self.name = name
        self.offset = offset
        self.length = length

    def finish(self) -> Any:
        io = self.io
        try:
            if io.status != 0:
                raise _io_error(
                    self.device.name, self.name, self.offset, self.length, io, io.status
                )
            return ffi.buffer(self.buf, self.length)[:] if self.name == "read" else None
        finally:
            self.device._afree.append(self)

    def release(self) -> None:
        self.device._afree.append(self)

    def free(self) -> None:
        if self.buf is not None:
            self.device._pool.put(self.buf, self.capacity)
            self.buf = None
            self.capacity = 0


class _Job:
    """Memory of one read_many/write_many call, alive until the engine is done with it."""

    __slots__ = ("bad", "held", "job", "keep", "offsets", "pooled", "slots", "statuses")

    def __init__(self, offsets: array.array, depth: int) -> None:  # type: ignore[type-arg]
        count = len(offsets)
        self.offsets = offsets
        self.keep: list[Any] = []
        self.keep.append(ffi.new("char[]", lib.pyspdk_job_size()))
        self.job = ffi.cast("struct pyspdk_job *", self.keep[-1])
        self.keep.append(ffi.new("char[]", lib.pyspdk_job_slot_size() * depth))
        self.slots = ffi.cast("struct pyspdk_job_slot *", self.keep[-1])
        self.statuses = ffi.new("int32_t[]", count)
        self.bad = ffi.new("uint64_t *")
        self.pooled: tuple[BufferPool, Any, int] | None = None
        self.held: DmaBuffer | None = None

    def is_over(self) -> bool:
        return bool(lib.pyspdk_job_is_over(self.job))

    def release(self) -> None:
        if self.held is not None:
            self.held.release()
            self.held = None
        if self.pooled is not None:
            pool, ptr, size = self.pooled
            pool.put(ptr, size)
            self.pooled = None


# ------------------------------------------------------------------ devices


class BlockDevice:
    """An open SPDK block device; safe to use from any number of threads at once.

    Offsets and lengths are in bytes and must be multiples of the block size;
    the *_blocks methods take block numbers. Close it (or use `with`) to
    release the SPDK descriptor; stopping the runtime closes it too.
    """

    def __init__(
        self,
        runtime: Runtime,
        name: str,
        *,
        writable: bool = True,
        queue_depth: int = 128,
        spin_us: float = 50.0,
        timeout: float | None = None,
    ) -> None:
        encoded = _check_name(name)
        if (
            isinstance(queue_depth, bool)
            or not isinstance(queue_depth, int)
            or not 1 <= queue_depth <= 65536
        ):
            raise ValueError(f"queue_depth must be an int from 1 to 65536, not {queue_depth!r}")
        if spin_us < 0:
            raise ValueError(f"spin_us must be >= 0, not {spin_us!r}")
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be positive or None, not {timeout!r}")
        require_running(runtime)
        self.runtime = runtime
        self.name = name
        self.writable = bool(writable)
        self.queue_depth = queue_depth
        self._spin_ns = int(spin_us * 1000)
        self._timeout_ns = -1 if timeout is None else int(timeout * 1e9)
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._users = 0
        self._closed = False
        self._abandoned: list[_Request | _Slot | _Job] = []
        self._local = threading.local()
        self._slots: list[_Slot] = []
        self._aslots: list[_AsyncSlot] = []
        self._afree: list[_AsyncSlot] = []
        self.info, self._dev = runtime.call(self._open_on_spdk_thread, encoded)
        self.block_size = self.info.block_size
        self.num_blocks = self.info.num_blocks
        self.size = self.info.size
        self._pool = BufferPool(max(MIN_ALIGN, self.info.buf_align))
        _engine_started(runtime)
        runtime.add_stop_hook(self._close_on_spdk_thread)
        runtime.add_teardown_hook(self._teardown)

    def _open_on_spdk_thread(self, encoded: bytes) -> tuple[BdevInfo, Any]:
        bdev = lib.spdk_bdev_get_by_name(encoded)
        if bdev == ffi.NULL:
            raise DeviceNotFoundError(f"no block device named {self.name!r}")
        info = _describe(bdev)
        rc = ffi.new("int *")
        dev = lib.pyspdk_dev_open(encoded, self.writable, self.queue_depth, rc)
        if dev == ffi.NULL:
            code = -rc[0]
            if code == errno.EPERM:
                raise PermissionError(
                    code, f"{self.name} is claimed by another module: no writer may open it"
                )
            raise OSError(code, f"cannot open {self.name}: {os.strerror(code)}")
        return info, dev

    # ---------------------------------------------------------- lifetime

    def __enter__(self) -> BlockDevice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self, timeout: float = 30.0) -> None:
        """Close the device: queued I/O is cancelled, I/O in SPDK's hands completes first."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self.runtime.call(self._close_on_spdk_thread)
        except RuntimeStateError:
            return  # Stopping: the stop and teardown hooks finish it.
        if self.runtime.on_spdk_thread():
            return  # Freed at teardown: waiting here would stall the reactor.
        if lib.pyspdk_dev_wait_closed(self._dev, int(timeout * 1e9)) != 0:
            raise TimeoutError(
                f"{self.name}: SPDK did not finish the I/O it holds within {timeout} s"
            )
        with self._idle:
            self._idle.wait_for(lambda: self._users == 0, timeout)
        self._teardown()
        self.runtime.discard_hooks(self._close_on_spdk_thread, self._teardown)

    def _close_on_spdk_thread(self) -> None:
        self._closed = True
        if self._dev is not None:
            lib.pyspdk_dev_close(self._dev)

    def _teardown(self) -> None:
        """Once the device is closed every request is over: free the memory."""
        self._closed = True
        self._sweep_abandoned()
        for slot in self._slots:
            slot.release()
        self._slots.clear()
        for aslot in self._aslots:
            aslot.free()
        self._aslots.clear()
        self._afree.clear()
        self._pool.free_all()
        if self._dev is not None:
            lib.pyspdk_dev_free(self._dev)
            self._dev = None

    def _enter(self) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeStateError(f"{self.name} is closed")
            self._users += 1

    def _leave(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0:
                self._idle.notify_all()

    def _sweep_abandoned(self) -> None:
        still: list[_Request | _Slot | _Job] = []
        for request in self._abandoned:
            if request.is_over():
                request.release()
                self._leave()
            else:
                still.append(request)
        self._abandoned = still

    # ---------------------------------------------------------- checks and requests

    def _span(self, offset: int, length: int) -> None:
        for label, value in (("offset", offset), ("length", length)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{label} must be an int, not {type(value).__name__}")
            if value < 0:
                raise ValueError(f"{label} must not be negative, not {value}")
            if value % self.block_size:
                raise ValueError(
                    f"{label} {value} is not a multiple of the block size "
                    f"{self.block_size} of {self.name}"
                )
        if length == 0:
            raise ValueError("length must be at least one block")
        if offset + length > self.size:
            raise ValueError(
                f"{length} bytes at offset {offset} run past the end of {self.name} "
                f"({self.size} bytes)"
            )

    def _check_range(self, offset: int, length: int) -> None:
        """_span's checks in one expression for the hot paths; _span words the error."""
        block_size = self.block_size
        if (
            type(offset) is not int
            or type(length) is not int
            or offset < 0
            or length <= 0
            or offset % block_size
            or length % block_size
            or offset + length > self.size
        ):
            self._span(offset, length)

    def _need_write(self, what: str) -> None:
        if not self.writable:
            raise PermissionError(errno.EBADF, f"{self.name} is open read-only: cannot {what}")

    def _need_type(self, io_type: str) -> None:
        if io_type not in self.info.io_types:
            raise NotImplementedError(
                f"{self.name} ({self.info.product_name}) does not support {io_type}"
            )

    @staticmethod
    def _view(buffer: Any, writable: bool) -> Any:
        if isinstance(buffer, DmaBuffer):
            return buffer
        try:
            view = memoryview(buffer).cast("B")
        except TypeError:
            raise TypeError(
                f"expected a bytes-like object or DmaBuffer, not {type(buffer).__name__}"
            ) from None
        if writable and view.readonly:
            raise TypeError(
                f"the buffer to read into must be writable ({type(buffer).__name__} is not)"
            )
        return view

    @staticmethod
    def _nbytes(view: Any) -> int:
        return view.size if isinstance(view, DmaBuffer) else view.nbytes

    def _read_request(self, offset: int, length: int) -> _Request:
        self._span(offset, length)
        request = _Request(self, "read", lib.PYSPDK_IO_READ, offset, length)
        ptr = request.dma_for(None, length, copy_in=False)
        request.io.buf = ptr
        request.result = lambda: ffi.buffer(ptr, length)[:]
        return request

    def _read_into_request(self, offset: int, buffer: Any) -> _Request:
        view = self._view(buffer, writable=True)
        length = self._nbytes(view)
        self._span(offset, length)
        request = _Request(self, "read", lib.PYSPDK_IO_READ, offset, length)
        ptr = request.dma_for(view, length, copy_in=False)
        request.io.buf = ptr
        if not isinstance(view, DmaBuffer):
            request.copies.append((ffi.from_buffer(view), ptr, length))
        request.result = lambda: length
        return request

    def _write_request(self, offset: int, data: Any) -> _Request:
        self._need_write("write")
        view = self._view(data, writable=False)
        length = self._nbytes(view)
        self._span(offset, length)
        request = _Request(self, "write", lib.PYSPDK_IO_WRITE, offset, length)
        request.io.buf = request.dma_for(
            view if isinstance(view, DmaBuffer) else ffi.from_buffer(view), length, copy_in=True
        )
        return request

    def _vector_request(self, offset: int, buffers: Sequence[Any], write: bool) -> _Request:
        if write:
            self._need_write("write")
        if isinstance(buffers, (bytes, bytearray, memoryview)) or not isinstance(buffers, Sequence):
            raise TypeError("buffers must be a sequence of bytes-like objects or DmaBuffers")
        if not buffers:
            raise ValueError("buffers must not be empty")
        views = [self._view(b, writable=not write) for b in buffers]
        lengths = [self._nbytes(v) for v in views]
        if 0 in lengths:
            raise ValueError("every buffer must hold at least one byte")
        length = sum(lengths)
        self._span(offset, length)
        op = lib.PYSPDK_IO_WRITEV if write else lib.PYSPDK_IO_READV
        request = _Request(self, "writev" if write else "readv", op, offset, length)
        iov = ffi.new("struct iovec[]", len(views))
        for i, (view, size) in enumerate(zip(views, lengths, strict=True)):
            source = view if isinstance(view, DmaBuffer) else ffi.from_buffer(view)
            ptr = request.dma_for(source, size, copy_in=write)
            iov[i].iov_base = ptr
            iov[i].iov_len = size
            if not write and not isinstance(view, DmaBuffer):
                request.copies.append((ffi.from_buffer(view), ptr, size))
        request.keep.append(iov)
        request.io.iov = iov
        request.io.iovcnt = len(views)
        request.result = (lambda: None) if write else (lambda: length)
        return request

    def _range_request(self, name: str, op: int, offset: int, length: int | None) -> _Request:
        if length is None:
            length = self.size - offset if isinstance(offset, int) else 0
        self._span(offset, length)
        return _Request(self, name, op, offset, length)

    def _unmap_request(self, offset: int, length: int) -> _Request:
        self._need_write("unmap")
        self._need_type("unmap")
        return self._range_request("unmap", lib.PYSPDK_IO_UNMAP, offset, length)

    def _write_zeroes_request(self, offset: int, length: int) -> _Request:
        self._need_write("write zeroes")
        return self._range_request("write_zeroes", lib.PYSPDK_IO_WRITE_ZEROES, offset, length)

    def _flush_request(self, offset: int = 0, length: int | None = None) -> _Request:
        self._need_type("flush")
        return self._range_request("flush", lib.PYSPDK_IO_FLUSH, offset, length)

    def _reset_request(self) -> _Request:
        self._need_type("reset")
        return _Request(self, "reset", lib.PYSPDK_IO_RESET, 0, 0)

    # ---------------------------------------------------------- the blocking path

    def _run(self, request: _Request) -> Any:
        self._enter()
        rc = lib.pyspdk_io_run(self._dev, request.io, self._spin_ns, self._timeout_ns)
        if rc == -errno.ETIMEDOUT:
            # SPDK still owns the buffers: keep them until the I/O is over.
            with self._lock:
                self._abandoned.append(request)
            raise TimeoutError(
                f"{request.name} at offset {request.offset} on {self.name} timed out"
            )
        self._leave()
        if rc != 0:
            request.release()
            raise self._refused(request, rc)
        return request.finish()

    def _refused(self, request: _Request, rc: int) -> Exception:
        if rc == -errno.EBADF:
            return RuntimeStateError(f"{self.name} is closed")
        return request.error(rc)

    def _slot(self, length: int) -> _Slot:
        slot: _Slot | None = getattr(self._local, "slot", None)
        if slot is None or slot.capacity < length:
            fresh = _Slot(self._pool, BufferPool.size_class(length))
            with self._lock:
                if slot is not None:
                    self._slots.remove(slot)
                    slot.release()
                self._slots.append(fresh)
            self._local.slot = slot = fresh
        return slot

    def _run_slot(self, op: int, name: str, offset: int, length: int, source: Any = None) -> _Slot:
        """The blocking path for one contiguous range: checks, copies `source` in, waits."""
        self._check_range(offset, length)
        block_size = self.block_size
        self._enter()
        slot = self._slot(length)
        io = slot.io
        io.op = op
        io.offset_blocks = offset // block_size
        io.num_blocks = length // block_size
        io.buf = slot.buf
        if source is not None:
            ffi.memmove(slot.buf, source, length)
        rc = lib.pyspdk_io_run(self._dev, io, self._spin_ns, self._timeout_ns)
        if rc == -errno.ETIMEDOUT:
            # SPDK still owns the slot's buffer: retire it until the I/O is over.
            with self._lock:
                self._slots.remove(slot)
                self._abandoned.append(slot)
            self._local.slot = None
            raise TimeoutError(f"{name} at offset {offset} on {self.name} timed out")
        self._leave()
        if rc != 0:
            if rc == -errno.EBADF:
                raise RuntimeStateError(f"{self.name} is closed")
            raise _io_error(self.name, name, offset, length, io, rc)
        if io.status != 0:
            raise _io_error(self.name, name, offset, length, io, io.status)
        return slot

    def read(self, offset: int, length: int) -> bytes:
        """Read `length` bytes at byte `offset`."""
        slot = self._run_slot(lib.PYSPDK_IO_READ, "read", offset, length)
        return ffi.buffer(slot.buf, length)[:]

    def read_into(self, offset: int, buffer: Any) -> int:
        """Read len(buffer) bytes at `offset` into a writable buffer or DmaBuffer."""
        if type(buffer) is bytearray:
            length = len(buffer)
            slot = self._run_slot(lib.PYSPDK_IO_READ, "read", offset, length)
            ffi.memmove(buffer, slot.buf, length)
            return length
        return self._run(self._read_into_request(offset, buffer))

    def write(self, offset: int, data: Any) -> None:
        """Write a bytes-like object or DmaBuffer at byte `offset`."""
        if type(data) is bytes or type(data) is bytearray:
            self._need_write("write")
            self._run_slot(lib.PYSPDK_IO_WRITE, "write", offset, len(data), data)
            return
        self._run(self._write_request(offset, data))

    def readv(self, offset: int, buffers: Sequence[Any]) -> int:
        """Read into several buffers, one I/O (scatter)."""
        return self._run(self._vector_request(offset, buffers, write=False))

    def writev(self, offset: int, buffers: Sequence[Any]) -> None:
        """Write several buffers, one I/O (gather)."""
        self._run(self._vector_request(offset, buffers, write=True))

    def read_blocks(self, block: int, count: int) -> bytes:
        return self.read(self._blocks(block), self._blocks(count))

    def write_blocks(self, block: int, data: Any) -> None:
        self.write(self._blocks(block), data)

    def _blocks(self, n: int) -> int:
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"a block number is an int, not {type(n).__name__}")
        return n * self.block_size

    def flush(self, offset: int = 0, length: int | None = None) -> None:
        self._run(self._flush_request(offset, length))

    def unmap(self, offset: int, length: int) -> None:
        self._run(self._unmap_request(offset, length))

    def write_zeroes(self, offset: int, length: int) -> None:
        self._run(self._write_zeroes_request(offset, length))

    def reset(self) -> None:
        self._run(self._reset_request())

    # ---------------------------------------------------------- futures and asyncio

    def _submit_tracked(self, request: _Request, completions: Completions, future: Any) -> None:
        self._enter()
        completions.track(request, future)
        rc = lib.pyspdk_dev_submit(self._dev, ffi.new("struct pyspdk_io *[1]", [request.io]), 1)
        if rc != 0:
            completions.pending.pop(int(request.io.tag), None)
            self._leave()
            request.release()
            raise self._refused(request, rc)

    def _async_slot(self, op: int, name: str, offset: int, length: int, source: Any) -> _AsyncSlot:
        """Check a range, take a free async slot and fill it (copying `source` in)."""
        if self._closed:
            raise RuntimeStateError(f"{self.name} is closed")
        self._check_range(offset, length)
        free = self._afree
        if free:
            slot = free.pop()
        else:
            slot = _AsyncSlot(self)
            with self._lock:
                self._aslots.append(slot)
        try:
            slot.prepare(op, name, offset, length)
        except BaseException:
            free.append(slot)
            raise
        if source is not None:
            ffi.memmove(slot.buf, source, length)
        return slot

    def _submit_slot(self, slot: _AsyncSlot, completions: Completions, future: Any) -> None:
        self._enter()
        completions.track(slot, future)
        rc = lib.pyspdk_dev_submit(self._dev, slot.submit, 1)
        if rc != 0:
            completions.pending.pop(int(slot.io.tag), None)
            self._leave()
            slot.release()
            if rc == -errno.EBADF:
                raise RuntimeStateError(f"{self.name} is closed")
            raise _io_error(self.name, slot.name, slot.offset, slot.length, slot.io, rc)

    def _range_future(self, op: int, name: str, offset: int, length: int, source: Any) -> Future:  # type: ignore[type-arg]
        future = SpdkFuture()
        slot = self._async_slot(op, name, offset, length, source)
        self._submit_slot(slot, future_reaper(self.runtime).completions, future)
        return future

    def _range_awaitable(
        self, op: int, name: str, offset: int, length: int, source: Any
    ) -> asyncio.Future:  # type: ignore[type-arg]
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        slot = self._async_slot(op, name, offset, length, source)
        self._submit_slot(slot, loop_reaper(loop, self.runtime).completions, future)
        return future

    def _future(self, request: _Request) -> Future:  # type: ignore[type-arg]
        future = SpdkFuture()
        self._submit_tracked(request, future_reaper(self.runtime).completions, future)
        return future

    def read_async(self, offset: int, length: int) -> Future:  # type: ignore[type-arg]
        """Like read(), returning a concurrent.futures.Future of the bytes."""
        return self._range_future(lib.PYSPDK_IO_READ, "read", offset, length, None)

    def read_into_async(self, offset: int, buffer: Any) -> Future:  # type: ignore[type-arg]
        return self._future(self._read_into_request(offset, buffer))

    def write_async(self, offset: int, data: Any) -> Future:  # type: ignore[type-arg]
        """Like write(), returning a concurrent.futures.Future of None."""
        if type(data) is bytes or type(data) is bytearray:
            self._need_write("write")
            return self._range_future(lib.PYSPDK_IO_WRITE, "write", offset, len(data), data)
        return self._future(self._write_request(offset, data))

    def _awaitable(self, request: _Request) -> asyncio.Future:  # type: ignore[type-arg]
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._submit_tracked(request, loop_reaper(loop, self.runtime).completions, future)
        return future

    async def aread(self, offset: int, length: int) -> bytes:
        """asyncio form of read()."""
        return await self._range_awaitable(lib.PYSPDK_IO_READ, "read", offset, length, None)

    async def aread_into(self, offset: int, buffer: Any) -> int:
        return await self._awaitable(self._read_into_request(offset, buffer))

    async def awrite(self, offset: int, data: Any) -> None:
        """asyncio form of write()."""
        if type(data) is bytes or type(data) is bytearray:
            self._need_write("write")
            await self._range_awaitable(lib.PYSPDK_IO_WRITE, "write", offset, len(data), data)
            return
        await self._awaitable(self._write_request(offset, data))

    async def aflush(self, offset: int = 0, length: int | None = None) -> None:
        await self._awaitable(self._flush_request(offset, length))

    # ---------------------------------------------------------- many I/Os in one call

    def read_many(
        self,
        offsets: Iterable[int],
        length: int,
        into: Any = None,
        *,
        depth: int | None = None,
    ) -> Any:
        """Read `length` bytes at each offset; I/O i fills bytes [i*length, (i+1)*length).

        The throughput path: one call hands SPDK the whole list, which runs
        with `depth` I/Os in flight (default: the device's queue_depth) and
        the next started from each completion, on the SPDK thread. `into` is
        a DmaBuffer (zero-copy), a writable buffer, or None for a new bytes
        object; it must hold len(offsets) * length bytes. A failed I/O raises
        IoError once all are over, with `failed`: the indices of every
        failure; the others' data is in `into` (when one was given).
        """
        return self._many(lib.PYSPDK_IO_READ, "read_many", offsets, length, into, depth)

    def write_many(
        self, offsets: Iterable[int], length: int, data: Any, *, depth: int | None = None
    ) -> None:
        """Write bytes [i*length, (i+1)*length) of `data` at offsets[i], as read_many reads."""
        self._need_write("write")
        self._many(lib.PYSPDK_IO_WRITE, "write_many", offsets, length, data, depth)

    def _many(
        self,
        op: int,
        name: str,
        offsets: Iterable[int],
        length: int,
        buffer: Any,
        depth: int | None,
    ) -> Any:
        if isinstance(length, bool) or not isinstance(length, int):
            raise TypeError(f"length must be an int, not {type(length).__name__}")
        if length <= 0 or length % self.block_size:
            raise ValueError(
                f"length {length} is not a positive multiple of the block size {self.block_size}"
            )
        try:
            table = array.array("Q", offsets)
        except OverflowError:
            raise ValueError("offsets must not be negative") from None
        except TypeError:
            raise TypeError("offsets must be an iterable of ints") from None
        count = len(table)
        total = count * length
        writing = op == lib.PYSPDK_IO_WRITE
        view = None
        if buffer is not None or writing:
            view = self._view(buffer, writable=not writing)
            if self._nbytes(view) < total:
                raise ValueError(
                    f"the buffer holds {self._nbytes(view)} bytes; {count} I/Os of {length} "
                    f"need {total}"
                )
        if count == 0:
            return buffer if buffer is not None else b""
        if depth is None:
            depth = self.queue_depth
        elif isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= 65536:
            raise ValueError(f"depth must be an int from 1 to 65536, not {depth!r}")
        job = _Job(table, min(depth, count))
        if isinstance(view, DmaBuffer):
            base = view.acquire()
            job.held = view
        else:
            base = self._pool.get(total)
            job.pooled = (self._pool, base, total)
            if writing:
                ffi.memmove(base, ffi.from_buffer(view), total)
        self._enter()
        rc = lib.pyspdk_job_post(
            self._dev,
            job.job,
            op,
            ffi.from_buffer("uint64_t[]", table),
            count,
            length,
            base,
            job.statuses,
            job.slots,
            min(depth, count),
            job.bad,
        )
        if rc != 0:
            self._leave()
            job.release()
            if rc == -errno.EINVAL:
                index = job.bad[0]
                raise ValueError(
                    f"offsets[{index}] = {table[index]}: not a multiple of the block size "
                    f"{self.block_size}, or {length} bytes there run past the end of "
                    f"{self.name} ({self.size} bytes)"
                )
            if rc == -errno.EBADF:
                raise RuntimeStateError(f"{self.name} is closed")
            raise _io_error(self.name, name, 0, total, None, rc)
        if lib.pyspdk_job_wait(job.job, self._spin_ns, self._timeout_ns) != 0:
            with self._lock:
                self._abandoned.append(job)
            raise TimeoutError(f"{name} of {count} I/Os on {self.name} timed out")
        self._leave()
        try:
            if not writing and view is not None and not isinstance(view, DmaBuffer):
                ffi.memmove(ffi.from_buffer(view), base, total)
            statuses = array.array("i")
            statuses.frombytes(ffi.buffer(job.statuses))
            if statuses.count(0) != count:
                failed = [i for i, status in enumerate(statuses) if status]
                first = failed[0]
                offset = table[first] * self.block_size  # the engine converted it to blocks
                error = _io_error(self.name, name, offset, length, _NO_DETAIL, statuses[first])
                error.failed = failed
                raise error
            if writing:
                return None
            return ffi.buffer(base, total)[:] if view is None else buffer
        finally:
            job.release()

    # ---------------------------------------------------------- batches

    def _batch_request(self, op: Sequence[Any]) -> _Request:
        if not isinstance(op, (tuple, list)) or not op or not isinstance(op[0], str):
            raise TypeError(
                f"a batch operation is a tuple like ('read', offset, length), not {op!r}"
            )
        kind, *args = op
        makers: dict[str, Callable[..., _Request]] = {
            "read": self._read_request,
            "read_into": self._read_into_request,
            "write": self._write_request,
            "readv": lambda o, b: self._vector_request(o, b, write=False),
            "writev": lambda o, b: self._vector_request(o, b, write=True),
            "flush": self._flush_request,
            "unmap": self._unmap_request,
            "write_zeroes": self._write_zeroes_request,
        }
        if kind not in makers:
            raise ValueError(
                f"unknown batch operation {kind!r}; expected one of {', '.join(makers)}"
            )
        try:
            return makers[kind](*args)
        except TypeError as exc:
            if "positional argument" in str(exc):
                raise TypeError(f"batch operation {op!r}: {exc}") from None
            raise

    def run_batch(
        self, ops: Iterable[Sequence[Any]], *, return_exceptions: bool = False
    ) -> list[Any]:
        """Submit every operation at once, wait for all; results in order.

        One call into C submits the whole batch and each reap takes up to 256
        completions, so Python's per-call cost is paid per batch. Operations
        are tuples: ('read', offset, length), ('read_into', offset, buffer),
        ('write', offset, data), ('readv'|'writev', offset, buffers),
        ('flush', offset, length), ('unmap', offset, length),
        ('write_zeroes', offset, length). A failed operation raises its
        IoError once all are done, or with return_exceptions=True stands in the
        list in place of its result.
        """
        requests = [self._batch_request(op) for op in ops]
        if not requests:
            return []
        completions = thread_completions()
        results: list[Any] = [None] * len(requests)
        for index, request in enumerate(requests):
            completions.track(request, index)
        array = ffi.new("struct pyspdk_io *[]", [r.io for r in requests])
        with self._lock:
            if self._closed:
                raise RuntimeStateError(f"{self.name} is closed")
            self._users += len(requests)
        rc = lib.pyspdk_dev_submit(self._dev, array, len(requests))
        if rc != 0:
            for request in requests:
                completions.pending.pop(int(request.io.tag), None)
                request.release()
                self._leave()
            raise self._refused(requests[0], rc)

        def deliver(index: int, result: Any, exc: BaseException | None) -> None:
            results[index] = result if exc is None else exc

        remaining = len(requests)
        while remaining:
            got = completions.dispatch(self._spin_ns, -1, deliver)
            if got < 0:
                raise OSError(-got, "waiting for batch completions failed")
            remaining -= got
        if not return_exceptions:
            for item in results:
                if isinstance(item, BaseException):
                    raise item
        return results


_ENGINE_LOCK = threading.Lock()


def _engine_started(runtime: Runtime) -> None:
    """Once per runtime: unregister the engine's poller when it stops.

    Registered before any device's own stop hook, so it runs after them all.
    """
    with _ENGINE_LOCK:
        if not getattr(runtime, "_io_engine_hooked", False):
            runtime.add_stop_hook(lib.pyspdk_io_engine_stop)
            runtime._io_engine_hooked = True  # type: ignore[attr-defined]


# ------------------------------------------------------------------ creating devices
#
# Thin, checked wrappers over the modules' RPC methods; any other module is
# one runtime.rpc() call away.


def _positive(label: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{label} must be a positive int, not {value!r}")
    return value


def _create_sized(runtime: Runtime, method: str, name: str, size: int, block_size: int) -> str:
    _check_name(name)
    _positive("block_size", block_size)
    if _positive("size", size) % block_size:
        raise ValueError(f"size {size} is not a multiple of block_size {block_size}")
    params = {"name": name, "num_blocks": size // block_size, "block_size": block_size}
    return runtime.rpc(method, params)


def create_malloc(runtime: Runtime, name: str, size: int, block_size: int = 512) -> str:
    """A RAM disk of `size` bytes (taken from SPDK's mem_size_mb); returns its name."""
    return _create_sized(runtime, "bdev_malloc_create", name, size, block_size)


def create_null(runtime: Runtime, name: str, size: int, block_size: int = 512) -> str:
    """A device that drops writes and reads back nothing in particular; returns its name."""
    return _create_sized(runtime, "bdev_null_create", name, size, block_size)


def create_aio(
    runtime: Runtime, name: str, filename: str | os.PathLike[str], block_size: int = 512
) -> str:
    """A device over a file or block device, through Linux AIO; returns its name."""
    _check_name(name)
    path = os.fspath(filename)
    if not os.path.exists(path):
        raise FileNotFoundError(errno.ENOENT, "no such file for an aio bdev", path)
    _positive("block_size", block_size)
    params = {"name": name, "filename": os.path.abspath(path), "block_size": block_size}
    return runtime.rpc("bdev_aio_create", params)


def create_error(runtime: Runtime, base: str) -> str:
    """An error-injection device over `base`, named EE_<base>; returns that name.

    Inject failures with runtime.rpc("bdev_error_inject_error", {...}).
    """
    _check_name(base)
    runtime.rpc("bdev_error_create", {"base_name": base})
    return f"EE_{base}"


_DELETE_METHODS = {
    "Malloc disk": ("bdev_malloc_delete", "name"),
    "Null disk": ("bdev_null_delete", "name"),
    "AIO disk": ("bdev_aio_delete", "name"),
    "Error Injection Disk": ("bdev_error_delete", "name"),
}


def delete_bdev(runtime: Runtime, name: str) -> None:
    """Delete a device made by one of the create_* helpers (others: their module's RPC)."""
    info = bdev_info(runtime, name)
    method = _DELETE_METHODS.get(info.product_name)
    if method is None:
        raise ValueError(
            f"{name} is a {info.product_name!r} device: delete it with its module's RPC method"
        )
    runtime.rpc(method[0], {method[1]: name})


def open_bdev(runtime: Runtime, name: str, **options: Any) -> BlockDevice:
    """Open the block device `name`; see BlockDevice for the options."""
    return BlockDevice(runtime, name, **options)
