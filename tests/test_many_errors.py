"""read_many/write_many report each failed I/O's own errno, as the single-I/O forms do.

A bdev that fails an I/O with an errno (a Python-served bdev's backend or
its io_timeout, an aio bdev) must not have it turned into EIO on the
throughput path.
"""

from __future__ import annotations

import errno
import threading
from itertools import count
from typing import Any

import pytest

_names = count()


class FailsAt:
    """4 KiB blocks of zeros; reads of block `bad` raise OSError(code), or hang until released."""

    def __init__(self, bad: int, code: int | None) -> None:
        self.bad = bad * 4096
        self.code = code
        self.release = threading.Event()

    def readinto(self, offset: int, buffer: Any) -> None:
        if offset == self.bad:
            if self.code is None:
                self.release.wait(30)
            else:
                raise OSError(self.code, "injected")
        buffer[:] = bytes(len(buffer))

    def write(self, offset: int, data: Any) -> None:
        if offset == self.bad and self.code is not None:
            raise OSError(self.code, "injected")


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_read_many_carries_a_backends_errno(runtime: Any, code: int) -> None:
    from pyspdk_sys.errors import IoError
    from pyspdk_sys.pybdev import PythonBdev

    name = f"Errs{next(_names)}"
    backend = FailsAt(5, code)
    with (
        PythonBdev(runtime, name, backend, num_blocks=64, block_size=4096, workers=1),
        runtime.open_bdev(name) as dev,
    ):
        with pytest.raises(IoError) as single:
            dev.read(5 * 4096, 4096)
        assert single.value.errno == code
        offsets = [i * 4096 for i in range(8)]
        with pytest.raises(IoError) as many:
            dev.read_many(offsets, 4096)
        assert many.value.errno == code, many.value
        assert many.value.failed == [5]
        assert many.value.offset == 5 * 4096
        assert "injected" not in str(many.value)  # SPDK carries the errno, not the text
        with pytest.raises(IoError) as writes:
            dev.write_many(offsets, 4096, bytes(8 * 4096))
        assert writes.value.errno == code and writes.value.failed == [5]


def test_read_many_reports_a_timeout_as_a_timeout(runtime: Any) -> None:
    from pyspdk_sys.errors import IoError
    from pyspdk_sys.pybdev import PythonBdev

    name = f"Late{next(_names)}"
    backend = FailsAt(3, None)
    try:
        with PythonBdev(
            runtime, name, backend, num_blocks=64, block_size=4096, workers=2, io_timeout=0.3
        ) as served:
            with runtime.open_bdev(name) as dev:
                with pytest.raises(IoError) as many:
                    dev.read_many([i * 4096 for i in range(6)], 4096, depth=1)
                assert many.value.errno == errno.ETIMEDOUT, many.value
                assert many.value.failed == [3]
                assert served.expired == 1
            backend.release.set()
    finally:
        backend.release.set()


def test_a_refused_registration_is_freed_while_spdk_runs(runtime: Any) -> None:
    """A taken name: the refused device's memory goes back once SPDK lets go, and the
    runtime keeps no record of it (its teardown would free it otherwise)."""
    import time

    from pyspdk_sys.pybdev import PythonBdev, _RefusedBdev

    name = f"Taken{next(_names)}"
    with PythonBdev(runtime, name, FailsAt(0, errno.EIO), num_blocks=8, block_size=4096):
        with pytest.raises(ValueError, match="name exists"):
            PythonBdev(runtime, name, FailsAt(0, errno.EIO), num_blocks=8, block_size=4096)
        deadline = time.monotonic() + 10
        while any(isinstance(r, _RefusedBdev) for r in runtime._resources):
            assert time.monotonic() < deadline, "the refused device was never freed"
            time.sleep(0.01)


def test_a_stop_right_after_a_refused_registration_frees_it_in_time(spdk: Any) -> None:
    """The stop's teardown frees the refused device before SPDK's environment ends
    (a late free after the end would touch memory DPDK no longer has)."""
    from conftest import run_python

    result = run_python(
        """
import errno
from pyspdk_sys.pybdev import PythonBdev, _RefusedBdev
from pyspdk_sys.runtime import Runtime
from cores import reactor_mask

class Zeros:
    def readinto(self, offset, buffer):
        buffer[:] = bytes(len(buffer))

rt = Runtime(cpu_mask=reactor_mask()).start()
kept = PythonBdev(rt, "Taken", Zeros(), num_blocks=8, block_size=4096)
try:
    PythonBdev(rt, "Taken", Zeros(), num_blocks=8, block_size=4096)
except ValueError as exc:
    assert "name exists" in str(exc), exc
pending = [r for r in rt._resources if isinstance(r, _RefusedBdev)]
kept.close()
rt.stop()
assert all(r._pb is None for r in pending), "the teardown left the refused device unfreed"
print("ok", len(pending))
""",
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[0] == "ok"
