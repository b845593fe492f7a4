"""In-memory backends for PythonBdev, for the scripts the tests run in other
processes and in the guest: they import this module from tests/, as they import
cores. Standard library only."""

from __future__ import annotations


class Ram:
    """The device in a bytearray, read and written in place; `writes` counts the
    write calls. No flush method: SPDK then serves the device without flush."""

    def __init__(self, size: int) -> None:
        self.data = bytearray(size)
        self.writes = 0

    def readinto(self, offset: int, buffer: memoryview) -> None:
        buffer[:] = self.data[offset : offset + len(buffer)]

    def write(self, offset: int, data: memoryview) -> None:
        self.writes += 1
        self.data[offset : offset + len(data)] = data


class RamWithFlush(Ram):
    """Ram that also takes flushes (nothing to do: the data is already in place)."""

    def flush(self) -> None:
        pass
