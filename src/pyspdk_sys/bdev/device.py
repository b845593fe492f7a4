"""BlockDevice: an open SPDK bdev, read and written in bytes from any Python thread.

Every form (blocking calls from any number of threads, futures, asyncio,
batches and read_many/write_many) goes through one C engine
(_shims/bdev_io.c, bdev_jobs.c): the caller queues a request, a poller on the
SPDK thread submits it, and the completion is finished in C, so the SPDK
thread never waits for the GIL.

Each I/O has one owner (_requests.py). Blocking waits run in slices of at
most 50 ms, so KeyboardInterrupt and timeouts reach the caller promptly; the
interrupted I/O's owner then passes to the device, which releases it once
SPDK hands it back. close() waits for what SPDK holds, and nothing more.
"""

from __future__ import annotations

import array
import asyncio
import errno
import functools
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from typing import Any

from .._binding import ffi, lib
from .._checks import check_bool, check_float, check_int, check_name, check_timeout
from .._completions import (
    WAIT_SLICE_NS,
    Completions,
    future_reaper,
    loop_reaper,
    loop_reapers,
)
from .._resource import Resource, Stage
from ..dma import MIN_ALIGN, BufferPool, DmaBuffer, require_running
from ..errors import DeviceNotFoundError, IoError, error_from_rc, io_error
from ..runtime import Runtime, SpdkFuture, provide, refuse_wait_on_spdk_thread
from ._bounds import Bounds, byte_view, nbytes, offset_table, release_views, vector_views
from ._gate import Gate, mark_blocking_calls
from ._nvme import NvmeCompletion, nvme_request
from ._peers import probe_for
from ._requests import AsyncSlot, BlockingSlot, Job, Request, status_error
from .manage import BdevInfo, describe

__all__ = ["BlockDevice"]

_NOT_YET = (-errno.ETIMEDOUT, -errno.EINTR)
_MAX_DEPTH = 65536
_READ: int = lib.PYSPDK_IO_READ
_WRITE: int = lib.PYSPDK_IO_WRITE
_JOB_ERRNO: int = lib.PYSPDK_JOB_ERRNO
_get_ident = threading.get_ident
_MAX_LANES = 64  # PYSPDK_MAX_LANES
_MAX_SPIN_US = 1_000_000.0
_QUEUE_SPIN_NS = 50_000
_PEER_CHECK_NS = 500_000_000  # how often a long wait asks whether a remote peer is gone


class _Engine(Resource):
    """Once per runtime: the engine's pollers go when the runtime stops, after every
    device closed (Stage.ENGINE)."""

    STOP_STAGE = Stage.ENGINE

    def __init__(self, runtime: Runtime) -> None:
        self._adopt(runtime)

    def on_stop(self) -> None:
        lib.pyspdk_io_engine_stop()


class BlockDevice(Resource):
    """An open SPDK block device; safe to use from any number of threads at once.

    Offsets and lengths are in bytes and must be multiples of the block size;
    the *_blocks methods take block numbers. Close it (or use `with`) to
    release the SPDK descriptor; stopping the runtime closes it too.
    A blocking call spins before it sleeps: by default (spin_us=None) about as
    long as the device's recent completions took, not at all once they take
    over 50 us, and never on a CPU a reactor polls; or a fixed spin_us
    microseconds.

    With several reactor cores (Runtime(cpu_mask="0x3")) the device has a
    lane on each (at most `lanes`): a channel and a queue on that core's SPDK
    thread. Each calling thread keeps to one lane, so its requests keep their
    order; read_many/write_many spread over all of them. queue_depth is per
    lane.
    """

    def __init__(
        self,
        runtime: Runtime,
        name: str,
        *,
        writable: bool = True,
        queue_depth: int = 128,
        spin_us: float | None = None,
        timeout: float | None = None,
        lanes: int | None = None,
    ) -> None:
        if not isinstance(runtime, Runtime):
            raise TypeError(f"runtime must be a Runtime, not {type(runtime).__name__}")
        encoded = check_name(name)
        check_bool("writable", writable)
        check_int("queue_depth", queue_depth, 1, _MAX_DEPTH)
        spin = None if spin_us is None else check_float("spin_us", spin_us, 0.0, _MAX_SPIN_US)
        seconds = check_timeout("timeout", timeout)
        if lanes is not None:
            check_int("lanes", lanes, 1, _MAX_LANES)
        require_running(runtime)
        self.runtime = runtime
        self.name = name
        self.writable = writable
        self.queue_depth = queue_depth
        self.spin_us = spin
        """Microseconds a blocking wait spins before it sleeps; None adapts it to the device."""
        # -1 lets the engine adapt each blocking wait's spin to the latency it sees.
        self._spin_ns = -1 if spin is None else int(spin * 1000)
        # Completion queues are read by one thread per batch or runtime: a fixed
        # spin, which the engine skips on a CPU a reactor polls (negative).
        self._queue_spin_ns = -_QUEUE_SPIN_NS if spin is None else self._spin_ns
        self._timeout_ns = -1 if seconds is None else int(seconds * 1e9)
        self._first_slice = (
            WAIT_SLICE_NS if self._timeout_ns < 0 else min(WAIT_SLICE_NS, self._timeout_ns)
        )
        # Who is inside, whether it is closed, what it took over (_gate.py).
        self.gate = Gate(name, self)
        # Whether the process serving this bdev (a vhost-user target) is gone.
        self._peer_gone = probe_for(runtime, name)
        self._local = threading.local()
        self._slots: list[BlockingSlot] = []
        self._aslots: list[AsyncSlot] = []
        self._afree: list[AsyncSlot] = []
        # Completion queues of batches that ended with nothing pending, for the next batch.
        self._spare_queues: list[Completions] = []
        # The asyncio loop this device last served, and its completion queue.
        self._last_loop: tuple[asyncio.AbstractEventLoop, Completions] | None = None
        self._futures_queue: Completions | None = None  # see _reaper_queue
        runtime.service(_Engine, _Engine)
        self.info, self._dev = runtime.call(self._open_on_spdk_thread, encoded, lanes or 0)
        self.lanes: int = lib.pyspdk_dev_lanes(self._dev)
        """The SPDK threads (reactor cores) this device's I/O runs on."""
        self.block_size = self.info.block_size
        self.num_blocks = self.info.num_blocks
        self.size = self.info.size
        self.bounds = Bounds(
            name, self.block_size, self.size, writable, self.info.io_types, self.info.product_name
        )
        self.pool = BufferPool(max(MIN_ALIGN, self.info.buf_align))
        self._adopt(runtime)
        if self.lanes > 1 and not runtime.on_spdk_thread():
            self._wait_lanes_ready()

    def _wait_lanes_ready(self) -> None:
        """Until every lane has its channel; closed again, and the error raised, if one
        has none or the wait is interrupted (Ctrl-C): no caller holds the device yet."""
        try:
            deadline = time.monotonic() + 30.0
            while (rc := lib.pyspdk_dev_wait_ready(self._dev, WAIT_SLICE_NS)) in _NOT_YET:
                if time.monotonic() > deadline:
                    rc = -errno.ETIMEDOUT
                    break
        except BaseException:
            self.close()
            raise
        if rc != 0:
            self.close()
            raise error_from_rc(rc, f"cannot open {self.name} on every reactor core")

    def _open_on_spdk_thread(self, encoded: bytes, lanes: int) -> tuple[BdevInfo, Any]:
        bdev = lib.spdk_bdev_get_by_name(encoded)
        if bdev == ffi.NULL:
            raise DeviceNotFoundError(f"no block device named {self.name!r}")
        info = describe(bdev)
        rc = ffi.new("int *")
        dev = lib.pyspdk_dev_open(encoded, self.writable, self.queue_depth, lanes, rc)
        if dev == ffi.NULL:
            if rc[0] == -errno.EPERM:
                raise PermissionError(
                    errno.EPERM, f"{self.name} is claimed by another module: no writer may open it"
                )
            raise error_from_rc(rc[0], f"cannot open {self.name}")
        return info, dev

    def _after_fork_in_child(self) -> None:
        super()._after_fork_in_child()
        self.gate.after_fork(self._closed_why)
        self.pool.forked()

    # ---------------------------------------------------------- lifetime (Resource's template)

    def _describe(self) -> str:
        return self.name

    @property
    def closed(self) -> bool:
        return self.gate.closed

    def _check_open(self) -> None:
        if self.gate.closed:
            raise self.gate.refusal()

    def _mark_closed(self) -> bool:
        self._closed = True
        return self.gate.shut()

    def close(self, timeout: float = 30.0) -> None:
        """Close the device: queued I/O is cancelled, and I/O in SPDK's hands is aborted
        where the bdev supports abort (its callers get ECANCELED); the rest completes first.

        Waits for what SPDK still holds (TimeoutError after `timeout`), then
        frees the device's memory. Not on the SPDK thread: it would wait on itself.
        """
        super().close(timeout)

    STOP_STAGE = Stage.DEVICES
    TEARDOWN_STAGE = Stage.DEVICES

    def _close_on_spdk_thread(self) -> None:
        self._mark_closed()
        if self._dev is not None:
            lib.pyspdk_dev_close(self._dev)

    def _wait_released(self, deadline: float, seconds: float) -> None:
        while lib.pyspdk_dev_wait_closed(self._dev, WAIT_SLICE_NS) != 0:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.name}: SPDK did not hand back the I/O it holds within {seconds} s"
                )
        self.gate.sweep()
        # Callers finishing requests SPDK has handed back; an asyncio loop
        # on this thread cannot run while we wait, so read its queue here.
        here = loop_reapers(self.runtime).on_this_thread()
        self.gate.wait_empty(
            deadline, seconds, [functools.partial(r.completions.dispatch, 0, 0) for r in here]
        )

    def _free(self) -> None:
        """Once the device is closed and SPDK holds nothing of it: free its memory."""
        self._mark_closed()
        self._last_loop = None
        self._futures_queue = None
        if self._dev is None:
            return
        gate = self.gate
        gate.wait_empty_briefly(5.0)
        gate.sweep()
        for slot in self._slots:
            slot.release()
        self._slots.clear()
        for aslot in self._aslots:
            aslot.free()
        self._aslots.clear()
        self._afree.clear()
        while self._spare_queues:
            self._spare_queues.pop().destroy()
        self.pool.free_all()
        lib.pyspdk_dev_free(self._dev)
        self._dev = None

    def _wait_more(
        self,
        wait_once: Callable[[int], int],
        what: str,
        op: str,
        offset: int,
        length: int,
        remaining: int | None = -1,
    ) -> int:
        """After a first slice: wait on in slices until done, the timeout, or a signal.

        Python runs its signal handlers between slices, so KeyboardInterrupt
        surfaces here within one slice. Every half second, a bdev served by
        another process (vhost-user) has its peer checked: IoError (ENOTCONN)
        once it is gone, as its requests would never complete. Returns 0, or
        a refusal's rc. `remaining`: nanoseconds left (None: no limit; -1:
        the device's timeout after its first slice).
        """
        if remaining == -1:  # the device's timeout, after its first slice
            remaining = None if self._timeout_ns < 0 else self._timeout_ns - self._first_slice
        next_check = time.monotonic_ns() + _PEER_CHECK_NS
        while True:
            if remaining is not None and remaining <= 0:
                raise TimeoutError(f"{what} on {self.name} timed out")
            step = WAIT_SLICE_NS if remaining is None else min(WAIT_SLICE_NS, remaining)
            started = time.monotonic_ns()
            rc = wait_once(step)
            if rc not in _NOT_YET:
                return rc
            now = time.monotonic_ns()
            if remaining is not None:
                remaining -= now - started
            if self._peer_gone is not None and now >= next_check:
                next_check = now + _PEER_CHECK_NS
                reason = self._peer_gone()
                if reason is not None:
                    raise IoError(
                        errno.ENOTCONN,
                        f"{what} on {self.name} cannot complete: {reason}",
                        device=self.name,
                        op=op,
                        offset=offset,
                        length=length,
                    )

    # ---------------------------------------------------------- checks and requests

    def _read_request(self, offset: int, length: int) -> Request:
        self.bounds.span(offset, length)
        request = Request(self, "read", lib.PYSPDK_IO_READ, offset, length)
        ptr = request.dma_for(None, length, copy_in=False)
        request.io.buf = ptr
        request.result = lambda: ffi.buffer(ptr, length)[:]
        return request

    def _read_into_request(self, offset: int, buffer: Any) -> Request:
        view = byte_view(buffer, writable=True)
        length = nbytes(view)
        self.bounds.span(offset, length)
        request = Request(self, "read", lib.PYSPDK_IO_READ, offset, length)
        if isinstance(view, DmaBuffer):
            request.io.buf = request.dma_for(view, length, copy_in=False)
        else:
            request.pin(view)
            ptr = request.dma_for(None, length, copy_in=False)
            request.io.buf = ptr
            request.copies.append((view, ptr, length))
        request.result = lambda: length
        return request

    def _write_request(self, offset: int, data: Any) -> Request:
        self.bounds.need_write("write")
        view = byte_view(data, writable=False)
        length = nbytes(view)
        self.bounds.span(offset, length)
        request = Request(self, "write", lib.PYSPDK_IO_WRITE, offset, length)
        if isinstance(view, DmaBuffer):
            request.io.buf = request.dma_for(view, length, copy_in=False)
        else:
            with view:
                request.io.buf = request.dma_for(view, length, copy_in=True)
        return request

    def _vector_request(self, offset: int, buffers: Sequence[Any], write: bool) -> Request:
        if write:
            self.bounds.need_write("write")
        views, lengths = vector_views(buffers, writable=not write)
        length = sum(lengths)
        try:
            self.bounds.span(offset, length)
        except BaseException:
            release_views(views)
            raise
        op = lib.PYSPDK_IO_WRITEV if write else lib.PYSPDK_IO_READV
        request = Request(self, "writev" if write else "readv", op, offset, length)
        iov = ffi.new("struct iovec[]", len(views))
        request.keep.append(iov)
        try:
            for i, (view, size) in enumerate(zip(views, lengths, strict=True)):
                if isinstance(view, DmaBuffer):
                    ptr = request.dma_for(view, size, copy_in=False)
                else:
                    request.pin(view)
                    ptr = request.dma_for(view, size, copy_in=write)
                    if not write:
                        request.copies.append((view, ptr, size))
                iov[i].iov_base = ptr
                iov[i].iov_len = size
        except BaseException:
            request.release()
            release_views(views)
            raise
        request.io.iov = iov
        request.io.iovcnt = len(views)
        request.result = (lambda: None) if write else (lambda: length)
        return request

    def _range_request(self, name: str, op: int, offset: int, length: int | None) -> Request:
        length = self.bounds.to_end(offset, length)
        self.bounds.span(offset, length)
        return Request(self, name, op, offset, length)

    def _unmap_request(self, offset: int, length: int) -> Request:
        self.bounds.need_write("unmap")
        self.bounds.need_type("unmap")
        return self._range_request("unmap", lib.PYSPDK_IO_UNMAP, offset, length)

    def _write_zeroes_request(self, offset: int, length: int) -> Request:
        self.bounds.need_write("write zeroes")
        return self._range_request("write_zeroes", lib.PYSPDK_IO_WRITE_ZEROES, offset, length)

    def _flush_request(self, offset: int = 0, length: int | None = None) -> Request:
        self.bounds.need_type("flush")
        return self._range_request("flush", lib.PYSPDK_IO_FLUSH, offset, length)

    def _reset_request(self) -> Request:
        self.bounds.need_type("reset")
        return Request(self, "reset", lib.PYSPDK_IO_RESET, 0, 0)

    def _refusal(self, rc: int, what: str, offset: int, length: int) -> Exception:
        if rc == -errno.EBADF:
            return self.gate.refusal()
        return io_error(self.name, what, offset, length, rc)

    # ---------------------------------------------------------- the blocking path

    def _run(self, request: Request, timeout_ns: int | None = None) -> Any:
        """Submit one request and wait for it; its owner is released whatever happens.

        `timeout_ns`: this call's limit instead of the device's (-1: none).
        """
        limit = self._timeout_ns if timeout_ns is None else timeout_ns
        first = WAIT_SLICE_NS if limit < 0 else min(WAIT_SLICE_NS, limit)
        refuse_wait_on_spdk_thread(f"a blocking {request.name}")
        gate = self.gate
        try:
            gate.enter_blocking()
        except BaseException:
            request.release()
            raise
        io = request.io
        try:
            rc = lib.pyspdk_io_run(self._dev, io, self._spin_ns, first)
            if rc in _NOT_YET:
                rc = self._wait_more(
                    lambda step: lib.pyspdk_io_wait(io, 0, step),
                    f"{request.name} at offset {request.offset}",
                    request.name,
                    request.offset,
                    request.length,
                    limit - first if limit >= 0 else None,
                )
            if rc != 0:
                raise self._refusal(rc, request.name, request.offset, request.length)
            return request.finish()
        except BaseException:
            gate.hand_over(request)
            raise
        finally:
            gate.leave_blocking()

    def _slot(self, length: int) -> BlockingSlot:
        slot: BlockingSlot | None = getattr(self._local, "slot", None)
        if slot is None or slot.capacity < length:
            fresh = BlockingSlot(self.pool, BufferPool.size_class(length))
            with self.gate.lock:
                if slot is not None:
                    self._slots.remove(slot)
                    slot.release()
                self._slots.append(fresh)
            self._local.slot = slot = fresh
            self.gate.sweep()
        return slot

    def _retire(self, slot: BlockingSlot) -> None:
        """The slot's I/O outlived its caller: the gate keeps the slot until it is over."""
        self._local.slot = None
        with self.gate.lock:
            if slot in self._slots:
                self._slots.remove(slot)
        self.gate.hand_over(slot)

    def _run_slot(
        self, op: int, name: str, offset: int, length: int, source: Any = None
    ) -> BlockingSlot:
        """The blocking path for one contiguous range: checks, copies `source` in, waits."""
        self.bounds.check(offset, length)
        refuse_wait_on_spdk_thread(f"a blocking {name}")
        gate = self.gate
        gate.enter_blocking()
        try:
            slot = self._slot(length)
            io = slot.io
            io.op = op
            io.offset_blocks = offset // self.block_size
            io.num_blocks = length // self.block_size
            io.buf = slot.buf
            if source is not None:
                ffi.memmove(slot.buf, source, length)
            rc = lib.pyspdk_io_run(self._dev, io, self._spin_ns, self._first_slice)
            if rc in _NOT_YET:
                rc = self._wait_more(
                    lambda step: lib.pyspdk_io_wait(io, 0, step),
                    f"{name} at offset {offset}",
                    name,
                    offset,
                    length,
                )
        except BaseException:
            current: BlockingSlot | None = getattr(self._local, "slot", None)
            if current is not None and not current.is_over():
                self._retire(current)
            raise
        finally:
            gate.leave_blocking()
        if rc != 0:
            raise self._refusal(rc, name, offset, length)
        if io.status != 0:
            raise status_error(self, name, offset, length, io)
        return slot

    def read(self, offset: int, length: int) -> bytes:
        """Read `length` bytes at byte `offset`."""
        slot = self._run_slot(_READ, "read", offset, length)
        data: bytes = ffi.buffer(slot.buf, length)[:]
        return data

    def read_into(self, offset: int, buffer: Any) -> int:
        """Read len(buffer) bytes at `offset` into a writable buffer or DmaBuffer."""
        if type(buffer) is bytearray:
            # Pinned for the whole I/O: resizing it meanwhile raises BufferError.
            with memoryview(buffer) as pinned:
                length = len(pinned)
                slot = self._run_slot(_READ, "read", offset, length)
                ffi.memmove(pinned, slot.buf, length)
            return length
        return int(self._run(self._read_into_request(offset, buffer)))

    def write(self, offset: int, data: Any) -> None:
        """Write a bytes-like object or DmaBuffer at byte `offset`."""
        if type(data) is bytes or type(data) is bytearray:
            self.bounds.need_write("write")
            self._run_slot(lib.PYSPDK_IO_WRITE, "write", offset, len(data), data)
            return
        self._run(self._write_request(offset, data))

    def readv(self, offset: int, buffers: Sequence[Any]) -> int:
        """Read into several buffers, one I/O (scatter)."""
        return int(self._run(self._vector_request(offset, buffers, write=False)))

    def writev(self, offset: int, buffers: Sequence[Any]) -> None:
        """Write several buffers, one I/O (gather)."""
        self._run(self._vector_request(offset, buffers, write=True))

    def read_blocks(self, block: int, count: int) -> bytes:
        return self.read(self.bounds.blocks("block", block), self.bounds.blocks("count", count))

    def write_blocks(self, block: int, data: Any) -> None:
        self.write(self.bounds.blocks("block", block), data)

    def flush(self, offset: int = 0, length: int | None = None) -> None:
        self._run(self._flush_request(offset, length))

    def unmap(self, offset: int, length: int) -> None:
        self._run(self._unmap_request(offset, length))

    def write_zeroes(self, offset: int, length: int) -> None:
        self._run(self._write_zeroes_request(offset, length))

    def reset(self) -> None:
        self._run(self._reset_request())

    # ---------------------------------------------------------- NVMe commands of one's own

    def nvme_admin(
        self,
        opcode: int,
        *,
        nsid: int | None = None,
        cdw10: int = 0,
        cdw11: int = 0,
        cdw12: int = 0,
        cdw13: int = 0,
        cdw14: int = 0,
        cdw15: int = 0,
        data: Any = None,
        timeout: float | None = None,
    ) -> NvmeCompletion:
        """Send an NVMe admin command to the controller behind this bdev (an NVMe bdev).

        `data` is the buffer the command reads into or writes from, as its
        opcode's direction says (a DmaBuffer goes without a copy). Returns
        the completion (its cdw0); NvmeError when the status is not
        success, TimeoutError after `timeout` seconds (the command may still
        run; its memory is kept until it ends).
        """
        cdws = _cdws(cdw10, cdw11, cdw12, cdw13, cdw14, cdw15)
        request = nvme_request(self, "admin", opcode, nsid, cdws, data)
        return self._run_nvme(request, timeout)  # type: ignore[no-any-return]

    def nvme_io(
        self,
        opcode: int,
        *,
        cdw10: int = 0,
        cdw11: int = 0,
        cdw12: int = 0,
        cdw13: int = 0,
        cdw14: int = 0,
        cdw15: int = 0,
        data: Any = None,
        metadata: Any = None,
        timeout: float | None = None,
    ) -> NvmeCompletion:
        """Send an NVMe I/O command on this bdev's namespace (SPDK sets the nsid).

        As nvme_admin(); `metadata`, a separate metadata buffer, sends it
        with its metadata (namespaces formatted with separate metadata).
        """
        cdws = _cdws(cdw10, cdw11, cdw12, cdw13, cdw14, cdw15)
        kind = "io" if metadata is None else "io_md"
        request = nvme_request(self, kind, opcode, None, cdws, data, metadata)
        return self._run_nvme(request, timeout)  # type: ignore[no-any-return]

    def _run_nvme(self, request: Request, timeout: float | None) -> Any:
        seconds = check_timeout("timeout", timeout)
        return self._run(request, None if seconds is None else int(seconds * 1e9))

    # ---------------------------------------------------------- futures and asyncio

    def _submit(self, owner: Request, completions: Completions, token: Any) -> None:
        """Hand `owner` to SPDK, its completion going to `completions` with `token`.

        Called inside the gate. On any exception, the hand-over rule: the
        side that removes the pending entry owns the request (here, or the reader).
        """
        try:
            completions.track(owner, token)
            rc = lib.pyspdk_dev_submit(self._dev, owner.submit, 1)
            if rc != 0:
                raise self._refusal(rc, owner.name, owner.offset, owner.length)
        except BaseException:
            if self.gate.hand_over(owner, _claim_tracked(owner, completions)):
                self.gate.leave()
            raise

    def _range_submit(
        self,
        op: int,
        name: str,
        offset: int,
        length: int,
        source: Any,
        completions: Completions | None = None,
        token: Any = None,
    ) -> Any:
        """Read or write one range through a free async slot (a write's bytes copied in).

        The hot path of futures and asyncio: the engine checks the range and
        queues the request in one call, and the count of users is taken
        without the gate's lock (see Gate.enter). With no `completions`, the
        running asyncio loop's queue is used with a new future of that loop
        as the token. Returns the token.
        """
        if completions is None:
            last = self._last_loop
            # See _loop_future: the same lookup, one call less on the hot path.
            if last is not None and getattr(last[0], "_thread_id", None) == _get_ident():
                completions, token = last[1], last[0].create_future()
            else:
                token, completions = self._loop_future()
        gate = self.gate
        gate.holds.append(None)  # gate.enter(), without its call on the hot path
        if gate.closed:
            gate.leave()
            raise gate.refusal()
        slot: AsyncSlot | None = None
        calling = False
        try:
            try:
                slot = self._afree.pop()
            except IndexError:
                slot = AsyncSlot(self, self._afree)
                with gate.lock:
                    self._aslots.append(slot)
            if (
                type(offset) is not int
                or type(length) is not int
                or not 0 < length <= slot.capacity
            ):
                # Worded errors first, and then a length that is valid to reserve.
                self.bounds.check(offset, length)
                slot.reserve(length)
            slot.op = op
            slot.offset = offset
            if length != slot.length:
                slot.set_length(length)
            if source is not None:
                slot.result_view[:] = source  # type: ignore[index]
            if slot.cq is not completions.cq:
                slot.complete_to(completions.cq)
            completions.pending[slot.tag] = (slot, token)
            calling = True
            try:
                rc = lib.pyspdk_dev_submit_range(self._dev, slot.io, op, offset, length)
            except OverflowError:  # below 0 or past 2**64: not a range either
                rc = -errno.ERANGE
            if rc != 0:
                if rc == -errno.ERANGE:
                    self.bounds.span(offset, length)
                raise self._refusal(rc, name, offset, length)
            return token
        except BaseException:
            if slot is None or gate.hand_over(slot, _claim_slot(slot, completions, calling)):
                gate.leave()
            raise

    def _request_submit(self, request: Request, completions: Completions, token: Any) -> None:
        try:
            self.gate.enter()
        except BaseException:
            request.release()
            raise
        self._submit(request, completions, token)

    def read_async(self, offset: int, length: int) -> Future:  # type: ignore[type-arg]
        """Like read(), returning a concurrent.futures.Future of the bytes."""
        completions = self._futures_queue or self._reaper_queue()
        future: Future = self._range_submit(  # type: ignore[type-arg]
            _READ, "read", offset, length, None, completions, SpdkFuture()
        )
        return future

    def _reaper_queue(self) -> Completions:
        """The completion queue of the runtime's thread behind futures (kept for the next call)."""
        self._futures_queue = future_reaper(self.runtime).completions
        return self._futures_queue

    def read_into_async(self, offset: int, buffer: Any) -> Future:  # type: ignore[type-arg]
        future = SpdkFuture()
        request = self._read_into_request(offset, buffer)
        self._request_submit(request, future_reaper(self.runtime).completions, future)
        return future

    def write_async(self, offset: int, data: Any) -> Future:  # type: ignore[type-arg]
        """Like write(), returning a concurrent.futures.Future of None."""
        future = SpdkFuture()
        self._write_submit(offset, data, self._futures_queue or self._reaper_queue(), future)
        return future

    def _write_submit(self, offset: int, data: Any, completions: Completions, token: Any) -> None:
        """Submit a write whose completion goes to `completions` with `token`."""
        if type(data) is bytes or type(data) is bytearray:
            self.bounds.need_write("write")
            self._range_submit(
                lib.PYSPDK_IO_WRITE, "write", offset, len(data), data, completions, token
            )
        else:
            self._request_submit(self._write_request(offset, data), completions, token)

    def _loop_future(self) -> tuple[asyncio.Future[Any], Completions]:
        last = self._last_loop
        # The loop this device served last, when it runs on this thread, is
        # the running loop: a loop sets _thread_id while it runs. This spares
        # get_running_loop(), which costs a getpid() system call per I/O.
        if last is not None and getattr(last[0], "_thread_id", None) == _get_ident():
            return last[0].create_future(), last[1]
        loop = asyncio.get_running_loop()
        if last is not None and last[0] is loop:
            return loop.create_future(), last[1]
        completions = loop_reaper(loop, self.runtime).completions
        self._last_loop = (loop, completions)
        return loop.create_future(), completions

    async def aread(self, offset: int, length: int) -> bytes:
        """asyncio form of read()."""
        result: bytes = await self._range_submit(_READ, "read", offset, length, None)
        return result

    async def aread_into(self, offset: int, buffer: Any) -> int:
        future, completions = self._loop_future()
        self._request_submit(self._read_into_request(offset, buffer), completions, future)
        return int(await future)

    async def awrite(self, offset: int, data: Any) -> None:
        """asyncio form of write()."""
        if type(data) is bytes or type(data) is bytearray:
            self.bounds.need_write("write")
            await self._range_submit(_WRITE, "write", offset, len(data), data)
            return
        future, completions = self._loop_future()
        self._write_submit(offset, data, completions, future)
        await future

    async def aflush(self, offset: int = 0, length: int | None = None) -> None:
        future, completions = self._loop_future()
        self._request_submit(self._flush_request(offset, length), completions, future)
        await future

    def nvme_admin_async(self, opcode: int, **fields: Any) -> Future:  # type: ignore[type-arg]
        """nvme_admin() returning a concurrent.futures.Future of the NvmeCompletion."""
        request = nvme_request(self, "admin", opcode, *_command_fields(fields))
        future = SpdkFuture()
        self._request_submit(request, future_reaper(self.runtime).completions, future)
        return future

    def nvme_io_async(self, opcode: int, **fields: Any) -> Future:  # type: ignore[type-arg]
        """nvme_io() returning a concurrent.futures.Future of the NvmeCompletion."""
        request = _io_request(self, opcode, fields)
        future = SpdkFuture()
        self._request_submit(request, future_reaper(self.runtime).completions, future)
        return future

    async def anvme_admin(self, opcode: int, **fields: Any) -> NvmeCompletion:
        """asyncio form of nvme_admin() (bound it with asyncio.wait_for)."""
        request = nvme_request(self, "admin", opcode, *_command_fields(fields))
        future, completions = self._loop_future()
        self._request_submit(request, completions, future)
        return await future  # type: ignore[no-any-return]

    async def anvme_io(self, opcode: int, **fields: Any) -> NvmeCompletion:
        """asyncio form of nvme_io() (bound it with asyncio.wait_for)."""
        request = _io_request(self, opcode, fields)
        future, completions = self._loop_future()
        self._request_submit(request, completions, future)
        return await future  # type: ignore[no-any-return]

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
        the next started from each completion, on the SPDK threads (split
        over the device's lanes, each with its share of `depth`). `into` is
        a DmaBuffer (zero-copy), a writable buffer, or None for a new bytes
        object; it must hold len(offsets) * length bytes. A plain buffer goes
        through two DMA bounce buffers per I/O in flight, copied by the SPDK
        threads as each read ends (while the next runs in the other buffer)
        or write starts. A failed I/O raises IoError once all are over, with `failed`: the
        indices of every failure; the others' data is in `into` (when one was
        given), and a failed read leaves its bytes of `into` as they were.
        """
        return self._many(lib.PYSPDK_IO_READ, "read_many", offsets, length, into, depth)

    def write_many(
        self, offsets: Iterable[int], length: int, data: Any, *, depth: int | None = None
    ) -> None:
        """Write bytes [i*length, (i+1)*length) of `data` at offsets[i], as read_many reads."""
        self.bounds.need_write("write")
        self._many(lib.PYSPDK_IO_WRITE, "write_many", offsets, length, data, depth)

    async def aread_many(
        self,
        offsets: Iterable[int],
        length: int,
        into: Any = None,
        *,
        depth: int | None = None,
    ) -> Any:
        """asyncio form of read_many(): the loop stays free while the job runs.

        The job's wait happens on a thread of the loop's default executor.
        Cancelling the awaiting task does not stop the job: its I/Os run to
        the end (into `into`, when given), as they would on SPDK's side anyway.
        """
        table = offset_table(offsets)  # a generator is read here, on the loop's thread
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            None, lambda: self._many(lib.PYSPDK_IO_READ, "read_many", table, length, into, depth)
        )

    async def awrite_many(
        self, offsets: Iterable[int], length: int, data: Any, *, depth: int | None = None
    ) -> None:
        """asyncio form of write_many(), as aread_many() is of read_many()."""
        self.bounds.need_write("write")
        table = offset_table(offsets)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(
            None, lambda: self._many(lib.PYSPDK_IO_WRITE, "write_many", table, length, data, depth)
        )

    def _many(
        self,
        op: int,
        name: str,
        offsets: Iterable[int],
        length: int,
        buffer: Any,
        depth: int | None,
    ) -> Any:
        self.bounds.many(length, depth, _MAX_DEPTH)
        table = offset_table(offsets)
        count = len(table)
        total = count * length
        writing = op == lib.PYSPDK_IO_WRITE
        view = None
        if buffer is not None or writing:
            view = byte_view(buffer, writable=not writing)
            if nbytes(view) < total:
                size = nbytes(view)
                release_views([view])
                raise ValueError(
                    f"the buffer holds {size} bytes; {count} I/Os of {length} need {total}"
                )
        if count == 0:
            release_views([view])
            return buffer if buffer is not None else b""
        refuse_wait_on_spdk_thread(name)
        depth = min(depth or self.queue_depth, count)
        job = Job(table, self.lanes)
        handed = False
        gate = self.gate
        try:
            gate.enter_blocking()
        except BaseException:
            release_views([view])
            raise
        try:
            user = ffi.NULL
            if isinstance(view, DmaBuffer):
                base = view.acquire()
                job.held = view
            elif view is None:
                base = self.pool.get(total)  # the new bytes object is made from it at the end
                job.pooled = (self.pool, base, total)
            else:
                # Plain memory: two DMA bounce buffers per slot, the copies done
                # by the SPDK threads as each I/O ends (reads) or starts (writes).
                job.pins.append(view)
                user = job.pin_user(view, writable=not writing)
                bounce = 2 * depth * length
                base = self.pool.get(bounce)
                job.pooled = (self.pool, base, bounce)
            rc = lib.pyspdk_job_post(
                self._dev,
                job.job,
                job.parts,
                self.lanes,
                op,
                ffi.from_buffer("uint64_t[]", table),
                count,
                length,
                base,
                user,
                job.statuses,
                depth,
                job.bad,
            )
            if rc == -errno.EINVAL:
                raise self.bounds.bad_offset(table, job.bad[0], length)
            if rc != 0:
                raise self._refusal(rc, name, 0, total)
            rc = lib.pyspdk_job_wait(job.job, self._spin_ns, self._first_slice)
            if rc in _NOT_YET:
                rc = self._wait_more(
                    lambda step: lib.pyspdk_job_wait(job.job, 0, step),
                    f"{name} of {count} I/Os",
                    name,
                    0,
                    total,
                )
            if lib.pyspdk_job_failures(job.job):
                statuses = array.array("i")
                statuses.frombytes(ffi.buffer(job.statuses))
                failed = [i for i, status in enumerate(statuses) if status]
                first = failed[0]
                offset = table[first] * self.block_size  # the engine converted it to blocks
                status = statuses[first]
                if status > _JOB_ERRNO:  # the bdev's own errno (a timeout, an aio error)
                    error = io_error(
                        self.name, name, offset, length, 1, aio_status=_JOB_ERRNO - status
                    )
                else:
                    error = io_error(self.name, name, offset, length, status)
                error.failed = failed
                raise error
            if writing:
                return None
            return ffi.buffer(base, total)[:] if view is None else buffer
        except BaseException:
            handed = True
            gate.hand_over(job)
            raise
        finally:
            if not handed:
                job.release()
            gate.leave_blocking()

    # ---------------------------------------------------------- batches

    def _batch_request(self, op: Sequence[Any]) -> Request:
        if not isinstance(op, (tuple, list)) or not op or not isinstance(op[0], str):
            raise TypeError(
                f"a batch operation is a tuple like ('read', offset, length), not {op!r}"
            )
        kind, *args = op
        makers: dict[str, Callable[..., Request]] = {
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

        One call into C submits the whole batch. Operations are tuples:
        ('read', offset, length), ('read_into', offset, buffer),
        ('write', offset, data), ('readv'|'writev', offset, buffers),
        ('flush', offset, length), ('unmap', offset, length),
        ('write_zeroes', offset, length). A failed operation raises its
        IoError once all are done, or with return_exceptions=True stands in the
        list in place of its result. The batch's completions arrive on a
        queue of its own: an interrupted batch never hands them to another.
        """
        check_bool("return_exceptions", return_exceptions)
        refuse_wait_on_spdk_thread("run_batch")
        requests: list[Request] = []
        try:
            for op in ops:
                requests.append(self._batch_request(op))
        except BaseException:
            for request in requests:
                request.release()
            raise
        if not requests:
            return []
        results: list[Any] = [None] * len(requests)

        def deliver(index: int, result: Any, exc: BaseException | None) -> None:
            results[index] = result if exc is None else exc

        try:
            completions = self._spare_queues.pop()
            completions.deliver = deliver
        except IndexError:
            completions = Completions(deliver)
        for index, request in enumerate(requests):
            completions.track(request, index)
        ios = ffi.new("struct pyspdk_io *[]", [r.io for r in requests])
        gate = self.gate
        try:
            gate.enter_many(len(requests))
        except BaseException:
            for request in requests:
                request.release()
            completions.destroy()
            raise
        submitted = False
        try:
            rc = lib.pyspdk_dev_submit(self._dev, ios, len(requests))
            if rc != 0:
                raise self._refusal(rc, "run_batch", 0, 0)
            submitted = True
            remaining = len(requests)
            while remaining:
                got = completions.dispatch(self._queue_spin_ns, WAIT_SLICE_NS)
                if got < 0:
                    raise error_from_rc(got, "waiting for batch completions")
                remaining -= got
        except BaseException:
            if not submitted and all(r.is_over() for r in requests):
                for request in requests:
                    if gate.hand_over(request, _claim_tracked(request, completions)):
                        gate.leave()
                completions.destroy()
            else:
                # SPDK holds some: the batch's queue is their owner now, and
                # the gate keeps it until SPDK handed every one back.
                gate.leave_many(len(completions.pending))
                gate.hand_over(completions)
            raise
        # Over and empty: the next batch may use it. One that was interrupted
        # is never reused, so its late completions reach no other batch.
        with gate.lock:
            if gate.closed:
                completions.destroy()
            else:
                self._spare_queues.append(completions)
        if not return_exceptions:
            for item in results:
                if isinstance(item, BaseException):
                    raise item
        return results


def open_bdev(runtime: Runtime, name: str, **options: Any) -> BlockDevice:
    """Open the block device `name`; see BlockDevice for the options."""
    return BlockDevice(runtime, name, **options)


_CDW_NAMES = tuple(f"cdw{index}" for index in range(10, 16))


def _cdws(*values: int) -> dict[str, int]:
    return dict(zip(_CDW_NAMES, values, strict=True))


def _command_fields(
    fields: dict[str, Any], *, io: bool = False
) -> tuple[int | None, dict[str, int], Any]:
    """(nsid, cdws, data) of the keyword arguments of an asynchronous NVMe form."""
    allowed = {*_CDW_NAMES, "data"} | ({"metadata"} if io else {"nsid"})
    unknown = sorted(set(fields) - allowed)
    if unknown:
        raise TypeError(f"unexpected NVMe command fields {unknown}; expected {sorted(allowed)}")
    cdws = {name: fields.get(name, 0) for name in _CDW_NAMES}
    return fields.get("nsid"), cdws, fields.get("data")


def _io_request(device: BlockDevice, opcode: int, fields: dict[str, Any]) -> Request:
    nsid, cdws, data = _command_fields(fields, io=True)
    metadata = fields.get("metadata")
    kind = "io" if metadata is None else "io_md"
    return nvme_request(device, kind, opcode, nsid, cdws, data, metadata)


def _claim_tracked(request: Request, completions: Completions) -> Callable[[], bool]:
    """The hand-over claim of a request a completion queue tracks: take its entry back."""
    io = request.io
    return lambda: io.tag == 0 or completions.pending.pop(int(io.tag), None) is not None


def _claim_slot(slot: AsyncSlot, completions: Completions, calling: bool) -> Callable[[], bool]:
    """The claim of an async slot: its entry taken back, or the engine never had it.

    A slot keeps its tag from one I/O to the next; taken back after the
    engine may have queued its completion, it gets a new tag first.
    """

    def claim() -> bool:
        if completions.pending.pop(slot.tag, None) is None and calling:
            return False
        if calling:
            slot.retag()
        return True

    return claim


# The frames that mark a thread as inside a blocking call (see Gate.forget_leaked).
mark_blocking_calls(BlockDevice._run, BlockDevice._run_slot, BlockDevice._many)


provide("open_bdev", open_bdev)
