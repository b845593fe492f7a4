"""The one backend bench/peers.py serves both ways: 4 KiB reads from a bytearray.

PythonBdev calls `readinto(offset, buffer)`; nbdkit's python plugin calls the
module-level `pread(h, buf, offset, flags)` below, which hands over to the
same method. Nothing but the standard library, so nbdkit's own embedded
Python can load this file as its plugin script.
"""

from __future__ import annotations

from typing import Any

SIZE = 128 << 20  # bytes; NUM_BLOCKS * 4096, as the benchmark's other devices


class Ram:
    """Reads and writes a bytearray; a read is one copy out of it."""

    def __init__(self, size: int = SIZE) -> None:
        self.data = bytearray(size)
        self.view = memoryview(self.data)

    def readinto(self, offset: int, buffer: Any) -> None:
        buffer[:] = self.view[offset : offset + len(buffer)]

    def write(self, offset: int, data: Any) -> None:
        self.view[offset : offset + len(data)] = data


# ---------------------------------------------------------------- nbdkit's python plugin
# (nbdkit ... python bench/peers_backend.py); API version 2: pread fills buf,
# pwrite stores it (bench/kernel_peers.py checks each device's data).

API_VERSION = 2
_backend: Ram | None = None


def thread_model() -> int:
    """Parallel: nbdkit runs requests on all its threads (the GIL still serialises Python)."""
    import nbdkit  # type: ignore[import-not-found]  # nbdkit's embedded module

    return int(nbdkit.THREAD_MODEL_PARALLEL)


def open(readonly: bool) -> int:  # nbdkit's callback name
    global _backend
    if _backend is None:
        _backend = Ram()
    return 1


def get_size(h: int) -> int:
    return SIZE


def pread(h: int, buf: Any, offset: int, flags: int) -> None:
    assert _backend is not None
    _backend.readinto(offset, buf)


def pwrite(h: int, buf: Any, offset: int, flags: int) -> None:
    assert _backend is not None
    _backend.write(offset, buf)
