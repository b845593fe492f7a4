"""DMA-capable memory: what SPDK's devices read into and write from.

DmaBuffer is the caller's, for zero-copy I/O; BufferPool is a device's own
store of buffers that plain bytes-like objects are copied through.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

from . import _fork
from ._binding import ffi, lib
from ._checks import INT64_MAX, check_int, check_power_of_two
from ._resource import Resource, Stage
from .errors import RuntimeStateError
from .runtime import Runtime, State

__all__ = [
    "MAX_ALIGN",
    "MIN_ALIGN",
    "BufferPool",
    "DmaBuffer",
    "dma_allocated_bytes",
]

MIN_ALIGN = 4096
# DPDK's allocator takes the alignment as an unsigned int; past a 2 MiB page
# an alignment buys nothing, and 1 << 32 would silently become 0.
MAX_ALIGN = 1 << 21


class DmaBuffer(Resource):
    """DMA-capable memory for zero-copy I/O: pass it where a buffer is expected.

    `view` is a writable memoryview of it. Free it with close() (or let the
    runtime free it when SPDK stops); close() refuses while an I/O uses it.
    """

    def __init__(self, runtime: Runtime, size: int, align: int = MIN_ALIGN) -> None:
        check_int("size", size, 1, INT64_MAX)
        check_power_of_two("align", align, 1, MAX_ALIGN)
        require_running(runtime)
        ptr = lib.spdk_dma_zmalloc(size, align, ffi.NULL)
        if ptr == ffi.NULL:
            raise MemoryError(f"SPDK has no {size} bytes of DMA memory left (raise mem_size_mb)")
        self._ptr: Any = ptr
        self.size = size
        self.align = align
        self._cbuffer = ffi.buffer(ptr, size)
        self.view = memoryview(self._cbuffer)
        self._runtime = runtime
        self._users = 0
        self._lock = threading.Lock()
        self._adopt(runtime)

    TEARDOWN_STAGE = Stage.MEMORY
    CLOSE_WAITS = False
    _closed_why = "has been freed"

    def _after_fork_in_child(self) -> None:
        super()._after_fork_in_child()
        self._lock = threading.Lock()
        self._ptr = None  # the parent's memory: never free or hand it out here

    def _gone(self) -> RuntimeStateError:
        if self._forked:
            return RuntimeStateError(_fork.forked_message("this DmaBuffer"))
        return RuntimeStateError("this DmaBuffer has been freed")

    @property
    def ptr(self) -> Any:
        if self._ptr is None:
            raise self._gone()
        return self._ptr

    def acquire(self) -> Any:
        """For a request: the pointer, held until release()."""
        with self._lock:
            if self._ptr is None or self._closed:
                raise self._gone()
            self._users += 1
            return self._ptr

    def release(self) -> None:
        with self._lock:
            self._users -= 1

    def close(self, timeout: float = 30.0) -> None:
        """Free the memory now; RuntimeStateError while an I/O or a memoryview uses it."""
        super().close(timeout)

    def _mark_closed(self) -> bool:
        # Under the lock acquire() takes: no I/O can start using it past this check.
        with self._lock:
            if self._closed:
                return False
            if self._users:
                raise RuntimeStateError(f"this DmaBuffer is in use by {self._users} I/O(s)")
            if self._views_alive():
                raise RuntimeStateError(
                    "memoryviews of this DmaBuffer are still alive: release them first"
                )
            self._closed = True
            return True

    def _views_alive(self) -> bool:
        """Whether a memoryview of the memory besides `view` lives (then `view` stays)."""
        if self._cbuffer is None:
            return False
        try:
            self.view.release()
        except BufferError:
            alive = True
        else:
            # Every live memoryview of the memory (slices too) keeps a reference
            # to the cffi buffer object; only ours and getrefcount's may remain.
            alive = sys.getrefcount(self._cbuffer) > 2
        if alive:
            self.view = memoryview(self._cbuffer)
        return alive

    def _free(self) -> None:
        if self._ptr is None:
            return
        if self._views_alive():
            raise RuntimeStateError(
                "memoryviews of this DmaBuffer are still alive: its memory is not freed"
            )
        lib.spdk_dma_free(self._ptr)
        self._ptr = None
        self._cbuffer = None


class BufferPool:
    """DMA buffers by power-of-two size class, reused across I/Os and threads.

    The pool records every buffer it allocates until it frees it, so each is
    freed exactly once: by put() after the pool closed, or by free_all(),
    whichever comes first. An owner interrupted while holding a buffer (a
    KeyboardInterrupt can land anywhere) therefore leaks nothing: free_all()
    runs once the device is closed and SPDK holds none of its buffers.
    """

    def __init__(self, align: int) -> None:
        self.align = align
        self._free: dict[int, list[Any]] = {}
        self._all: dict[int, Any] = {}  # every buffer allocated and not yet freed
        self._slot = ffi.new("void *[1]")
        self._lock = threading.Lock()
        self.closed = False

    @staticmethod
    def size_class(size: int) -> int:
        return max(MIN_ALIGN, 1 << (size - 1).bit_length())

    def get(self, size: int) -> Any:
        size_class = self.size_class(size)
        with self._lock:
            if self.closed:
                raise RuntimeStateError("the device's DMA buffers are gone: it is closed")
            free = self._free.get(size_class)
            if free:
                return free.pop()
            # Allocated under the lock into a slot the pool owns: whatever
            # interrupts us, the pointer is recorded or freed here.
            slot = self._slot
            slot[0] = ffi.NULL
            try:
                ptr = lib.pyspdk_dma_alloc_into(size_class, self.align, slot)
                if ptr == ffi.NULL:
                    raise MemoryError(
                        f"SPDK has no {size_class} bytes of DMA memory left (raise mem_size_mb)"
                    )
                self._all[int(ffi.cast("uintptr_t", ptr))] = ptr
                return ptr
            except BaseException:
                leftover = slot[0]
                if leftover != ffi.NULL and int(ffi.cast("uintptr_t", leftover)) not in self._all:
                    lib.spdk_dma_free(leftover)
                raise

    def put(self, ptr: Any, size: int) -> None:
        address = int(ffi.cast("uintptr_t", ptr))
        with self._lock:
            if not self.closed:
                self._free.setdefault(self.size_class(size), []).append(ptr)
                return
            if self._all.pop(address, None) is None:
                return  # freed already by free_all()
        lib.spdk_dma_free(ptr)

    def forked(self) -> None:
        """In a forked child: the buffers are the parent's; refuse, never free."""
        self._lock = threading.Lock()
        self.closed = True
        self._free.clear()
        self._all.clear()

    def free_all(self) -> None:
        """The device is closed and SPDK holds none of its buffers: free every one, once."""
        with self._lock:
            self.closed = True
            buffers = list(self._all.values())
            self._free.clear()
            self._all.clear()
        for ptr in buffers:
            lib.spdk_dma_free(ptr)


def require_running(runtime: Runtime) -> None:
    if not isinstance(runtime, Runtime):
        raise TypeError(f"expected a Runtime, not {type(runtime).__name__}")
    if runtime.state is not State.RUNNING:
        raise RuntimeStateError(f"the SPDK runtime is {runtime.state.value}")


def dma_allocated_bytes(runtime: Runtime) -> int:
    """Bytes allocated in SPDK's DMA heaps now: what a leak would raise."""
    require_running(runtime)
    return int(runtime.call(lib.pyspdk_dma_allocated_bytes))
