"""Block devices served by Python code (pyspdk_sys.pybdev), read and written through SPDK.

The in-process tests share the session runtime; what may hang or crash (a
backend that never answers, unregistering under load) runs in a subprocess.
"""

from __future__ import annotations

import array
import asyncio
import errno
import logging
import os
import random
import textwrap
import time
from collections.abc import Iterator
from typing import Any

import cffi
import pytest

from conftest import run_python

BLOCK = 512
BLOCKS = 8192  # 4 MiB
SIZE = BLOCK * BLOCKS
# At least 200,000 verified I/Os; PYSPDK_PYBDEV_INTEGRITY_IOS bounds it (e.g. in CI).
INTEGRITY_IOS = int(os.environ.get("PYSPDK_PYBDEV_INTEGRITY_IOS", "200000"))


class Ram:
    """A backend that keeps the device in a bytearray and serves every operation."""

    def __init__(self, size: int = SIZE) -> None:
        self.data = bytearray(size)
        self.flushes = 0
        self.resets = 0
        self.unmaps: list[tuple[int, int]] = []
        self.calls = 0

    def readinto(self, offset: int, buffer: memoryview) -> None:
        self.calls += 1
        buffer[:] = self.data[offset : offset + len(buffer)]

    def write(self, offset: int, data: memoryview) -> None:
        self.calls += 1
        self.data[offset : offset + len(data)] = data

    def flush(self) -> None:
        self.flushes += 1

    def unmap(self, offset: int, length: int) -> None:
        self.unmaps.append((offset, length))
        self.data[offset : offset + length] = bytes(length)

    def write_zeroes(self, offset: int, length: int) -> None:
        self.data[offset : offset + length] = bytes(length)

    def reset(self) -> None:
        self.resets += 1


class ReadOnly:
    """The other minimal form: read(offset, length) returning bytes, no write."""

    def read(self, offset: int, length: int) -> bytes:
        return bytes((offset // BLOCK + i) % 251 for i in range(length))


_names = iter(range(1_000_000))


@pytest.fixture
def served(runtime: Any) -> Iterator[tuple[Any, Ram]]:
    from pyspdk_sys.pybdev import PythonBdev

    backend = Ram()
    dev = PythonBdev(runtime, f"Py{next(_names)}", backend, num_blocks=BLOCKS, workers=2)
    yield dev, backend
    dev.close()


def pattern(seed: int, length: int) -> bytes:
    return random.Random(seed).randbytes(length)


def test_every_blockdevice_form(runtime: Any, served: tuple[Any, Ram]) -> None:

    from pyspdk_sys.bdev import DmaBuffer

    dev, ram = served
    with runtime.open_bdev(dev.name) as bd:
        assert (bd.block_size, bd.num_blocks) == (BLOCK, BLOCKS)
        # write / read
        bd.write(4096, pattern(1, 4096))
        assert ram.data[4096:8192] == pattern(1, 4096)
        assert bd.read(4096, 4096) == pattern(1, 4096)
        # read_into
        into = bytearray(1024)
        assert bd.read_into(4096, into) == 1024
        assert into == pattern(1, 4096)[:1024]
        # writev / readv: several buffers in one I/O reach the backend as one view
        bd.writev(8192, [pattern(2, 512), pattern(3, 1024)])
        assert ram.data[8192 : 8192 + 1536] == pattern(2, 512) + pattern(3, 1024)
        parts = [bytearray(1024), bytearray(512)]
        assert bd.readv(8192, parts) == 1536
        assert bytes(parts[0] + parts[1]) == pattern(2, 512) + pattern(3, 1024)
        # blocks
        bd.write_blocks(100, pattern(4, BLOCK))
        assert bd.read_blocks(100, 1) == pattern(4, BLOCK)
        # futures
        futures = [bd.write_async(i * 4096, pattern(10 + i, 4096)) for i in range(16)]
        for future in futures:
            assert future.result(30) is None
        reads = [bd.read_async(i * 4096, 4096) for i in range(16)]
        assert [f.result(30) for f in reads] == [pattern(10 + i, 4096) for i in range(16)]

        # asyncio
        async def main() -> list[bytes]:
            await asyncio.gather(
                *(bd.awrite(65536 + i * 512, pattern(50 + i, 512)) for i in range(8))
            )
            buf = bytearray(512)
            await bd.aread_into(65536, buf)
            assert buf == pattern(50, 512)
            await bd.aflush()
            return list(await asyncio.gather(*(bd.aread(65536 + i * 512, 512) for i in range(8))))

        assert asyncio.run(main()) == [pattern(50 + i, 512) for i in range(8)]
        # read_many / write_many, and zero-copy into a DmaBuffer
        offsets = [i * 2048 for i in range(64)]
        blob = pattern(99, 64 * 2048)
        bd.write_many(offsets, 2048, blob, depth=32)
        assert bytes(ram.data[: 64 * 2048]) == blob
        assert bytes(bd.read_many(offsets, 2048, depth=32)) == blob
        with DmaBuffer(runtime, 64 * 2048) as dma:
            bd.read_many(reversed(offsets), 2048, dma, depth=8)
            assert bytes(dma.view[:2048]) == blob[-2048:]
        into_future = bd.read_into_async(0, bytearray(2048))
        assert into_future.result(30) == 2048
        # run_batch
        results = bd.run_batch([("write", 0, b"\1" * 512), ("read", 512, 512)])
        assert results[1] == blob[512:1024]
        # flush, unmap, write_zeroes, reset reach the backend
        flushes = ram.flushes
        bd.flush()
        assert ram.flushes == flushes + 1
        bd.unmap(0, 4096)
        assert (0, 4096) in ram.unmaps
        assert bd.read(0, 4096) == bytes(4096)
        bd.write(0, b"\xff" * 4096)
        bd.write_zeroes(0, 4096)
        assert bd.read(0, 4096) == bytes(4096)
        bd.reset()
        assert ram.resets >= 1


def test_io_type_supported_follows_the_backend(runtime: Any) -> None:
    from pyspdk_sys.errors import IoError
    from pyspdk_sys.pybdev import PythonBdev

    with PythonBdev(runtime, f"Py{next(_names)}", ReadOnly(), num_blocks=64) as dev:
        assert dev.ops == {"read"}
        (info,) = runtime.rpc("bdev_get_bdevs", {"name": dev.name})
        types = info["supported_io_types"]
        assert types["read"] and not types["write"] and not types["flush"]
        assert not types["unmap"] and not types["write_zeroes"] and not types["reset"]
        assert info["product_name"] == "Python bdev"
        with runtime.open_bdev(dev.name) as bd:
            assert bd.read(1024, 1024) == ReadOnly().read(1024, 1024)
            with pytest.raises(IoError) as info:
                bd.write(0, bytes(512))
            assert info.value.errno == errno.ENOTSUP


def test_integrity(runtime: Any, served: tuple[Any, Ram]) -> None:
    """Random writes, then reads checked against what was written: >= 200,000 verified reads.

    Each round writes 512 random 4 KiB slots with data naming the slot and the round, reads
    those back, and reads 512 other random slots (old data, or zeros); every read is checked.
    """
    dev, ram = served
    length = 4096
    slots = SIZE // length
    rng = random.Random(7)
    stamp = [0] * slots  # the round whose data each slot holds
    verified = written = 0
    verified_data = 0  # reads checked against data a write put there (not zeros)
    generation = 0
    with runtime.open_bdev(dev.name, queue_depth=64) as bd:
        while verified < INTEGRITY_IOS:
            generation += 1
            chosen = rng.sample(range(slots), 512)
            data = b"".join(_block(slot, generation, length) for slot in chosen)
            bd.write_many([slot * length for slot in chosen], length, data, depth=32)
            written += len(chosen)
            for slot in chosen:
                stamp[slot] = generation
            reads = chosen + rng.sample(range(slots), 512)
            rng.shuffle(reads)
            got = bytes(bd.read_many([slot * length for slot in reads], length, depth=32))
            for i, slot in enumerate(reads):
                expected = _block(slot, stamp[slot], length)
                assert got[i * length : (i + 1) * length] == expected, (
                    f"slot {slot} round {stamp[slot]}: another I/O's data or none"
                )
                verified_data += stamp[slot] > 0
            verified += len(reads)
    # The backend holds exactly what was written, too.
    for slot in range(slots):
        assert ram.data[slot * length : (slot + 1) * length] == _block(slot, stamp[slot], length)
    print(f"{verified} verified reads ({verified_data} of written data), {written} writes")
    # Half the reads are of the slots just written: at least that many were
    # checked against data, not zeros; and no I/O failed on the way.
    assert verified_data >= verified // 2
    assert written == generation * 512
    assert dev.failures == 0


def _block(slot: int, generation: int, length: int) -> bytes:
    if generation == 0:
        return bytes(length)
    head = f"{slot}:{generation}:".encode()
    return (head * (length // len(head) + 1))[:length]


class Faulty(Ram):
    """Fails reads in one range: ValueError, or OSError(ENOSPC) for writes there."""

    def readinto(self, offset: int, buffer: memoryview) -> None:
        if 8192 <= offset < 16384:
            raise ValueError("injected read fault")
        super().readinto(offset, buffer)

    def write(self, offset: int, data: memoryview) -> None:
        if 8192 <= offset < 16384:
            raise OSError(errno.ENOSPC, "injected: no space")
        super().write(offset, data)


def test_backend_exception_fails_that_io_only(
    runtime: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from pyspdk_sys.errors import IoError
    from pyspdk_sys.pybdev import PythonBdev

    caplog.set_level(logging.ERROR, logger="pyspdk_sys.pybdev")
    with (
        PythonBdev(runtime, f"Py{next(_names)}", Faulty(), num_blocks=BLOCKS) as dev,
        runtime.open_bdev(dev.name) as bd,
    ):
        for _ in range(3):
            with pytest.raises(IoError) as info:
                bd.read(8192, 512)
            assert info.value.errno == errno.EIO
        with pytest.raises(IoError) as info:
            bd.write(12288, bytes(512))
        assert info.value.errno == errno.ENOSPC
        # The device stays up, and the other I/Os of a batch succeed.
        bd.write(0, b"ok" * 256)
        assert bd.read(0, 512) == b"ok" * 256
        with pytest.raises(IoError) as info:
            bd.read_many([0, 8192, 4096, 9216], 512)
        assert info.value.failed == [1, 3]
        assert dev.failures == 6
        # One traceback per failing place, not one per I/O.
        faults = [r for r in caplog.records if "injected read fault" in str(r.exc_info)]
        assert len(faults) == 1
        assert faults[0].exc_info is not None


class Keeps(Ram):
    """A backend that keeps an export of every buffer it reads into."""

    def __init__(self) -> None:
        super().__init__()
        self.ffi = cffi.FFI()
        self.kept: list[Any] = []

    def readinto(self, offset: int, buffer: memoryview) -> None:
        super().readinto(offset, buffer)
        self.kept.append(self.ffi.from_buffer(buffer))


def test_a_backend_keeping_a_buffer_is_logged_and_the_device_serves_on(
    runtime: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from pyspdk_sys.pybdev import PythonBdev

    caplog.set_level(logging.ERROR, logger="pyspdk_sys.pybdev")
    backend = Keeps()
    backend.data[:BLOCK] = b"k" * BLOCK
    with (
        PythonBdev(runtime, f"Py{next(_names)}", backend, num_blocks=BLOCKS) as dev,
        runtime.open_bdev(dev.name) as bd,
    ):
        for _ in range(3):
            assert bd.read(0, BLOCK) == b"k" * BLOCK
        assert dev.failures == 0
        kept = [r for r in caplog.records if "still holds a buffer export" in r.getMessage()]
        assert len(kept) == 1, [r.getMessage() for r in caplog.records]
        backend.kept.clear()


def test_async_backend_on_an_event_loop(runtime: Any) -> None:
    from pyspdk_sys.pybdev import PythonBdev

    class AsyncRam:
        def __init__(self) -> None:
            self.data = bytearray(SIZE)

        async def readinto(self, offset: int, buffer: memoryview) -> None:
            await asyncio.sleep(0)
            buffer[:] = self.data[offset : offset + len(buffer)]

        async def write(self, offset: int, data: memoryview) -> None:
            await asyncio.sleep(0)
            self.data[offset : offset + len(data)] = data

    backend = AsyncRam()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        dev = PythonBdev(runtime, f"Py{next(_names)}", backend, num_blocks=BLOCKS, loop=loop)
        bd = runtime.open_bdev(dev.name)
        try:
            await asyncio.gather(*(bd.awrite(i * 4096, pattern(i, 4096)) for i in range(32)))
            assert backend.data[4096:8192] == pattern(1, 4096)
            got = await asyncio.gather(*(bd.aread(i * 4096, 4096) for i in range(32)))
            assert got == [pattern(i, 4096) for i in range(32)]
            with pytest.raises(Exception, match="aclose"):
                dev.close()
            assert not dev.closed  # the refused close() left it open
        finally:
            bd.close()
            await dev.aclose()
        assert dev.closed
        names = [b["name"] for b in await runtime.arpc("bdev_get_bdevs")]
        assert dev.name not in names

    asyncio.run(main())


def test_arguments_are_checked(runtime: Any, served: tuple[Any, Ram]) -> None:
    from pyspdk_sys.pybdev import PythonBdev

    dev, _ram = served
    with pytest.raises(TypeError, match="readinto"):
        PythonBdev(runtime, "PyBad", object(), num_blocks=8)
    with pytest.raises(ValueError, match="block_size"):
        PythonBdev(runtime, "PyBad", Ram(), num_blocks=8, block_size=1000)
    with pytest.raises(ValueError, match="num_blocks"):
        PythonBdev(runtime, "PyBad", Ram(), num_blocks=0)
    with pytest.raises(ValueError, match="workers"):
        PythonBdev(runtime, "PyBad", Ram(), num_blocks=8, workers=0)
    with pytest.raises(ValueError, match="no such method"):
        PythonBdev(runtime, "PyBad", ReadOnly(), num_blocks=8, ops=["read", "write"])

    class Async:
        async def readinto(self, offset: int, buffer: memoryview) -> None:
            pass

    with pytest.raises(TypeError, match="coroutine"):
        PythonBdev(runtime, "PyBad", Async(), num_blocks=8)
    with pytest.raises(ValueError, match="name exists"):
        PythonBdev(runtime, dev.name, Ram(), num_blocks=8)
    with pytest.raises(TypeError):
        PythonBdev(runtime, 7, Ram(), num_blocks=8)  # type: ignore[arg-type]
    names = [b["name"] for b in runtime.rpc("bdev_get_bdevs")]
    assert "PyBad" not in names
    closed = PythonBdev(runtime, f"Py{next(_names)}", Ram(), num_blocks=8)
    closed.close()
    closed.close()
    assert closed.name not in [b["name"] for b in runtime.rpc("bdev_get_bdevs")]
    with pytest.raises(Exception, match="closed"):
        _ = closed.queued


# ---------------------------------------------------------------- in a subprocess

_PRELUDE = textwrap.dedent(
    """
    import errno, threading, time, logging
    from pyspdk_sys.runtime import Runtime
    from cores import reactor_mask
    from pyspdk_sys.pybdev import PythonBdev
    from pyspdk_sys.errors import IoError, SpdkError
    logging.basicConfig(level=logging.ERROR)

    import ram_backend

    class Ram(ram_backend.Ram):
        def __init__(self, size=1 << 22):
            super().__init__(size)

    # Reads from 64 KiB on (past the blocks SPDK's examine reads) wait for release.
    class HangsFrom(Ram):
        def __init__(self):
            super().__init__()
            self.release = threading.Event()
            self.entered = threading.Event()
        def readinto(self, offset, buffer):
            if offset >= 65536:
                self.entered.set()
                self.release.wait(60)
                return
            super().readinto(offset, buffer)
    """
)


def _run(body: str, timeout: float = 120) -> str:
    result = run_python(_PRELUDE + textwrap.dedent(body), timeout=timeout)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.mark.usefixtures("spdk")
def test_timeout_fails_an_unanswered_io_and_close_completes() -> None:
    out = _run(
        """
        backend = HangsFrom()   # never answers in time
        with Runtime(cpu_mask=reactor_mask()) as rt:
            dev = PythonBdev(rt, "Hang", backend, num_blocks=8192, workers=2, io_timeout=0.5)
            bd = rt.open_bdev("Hang")
            start = time.monotonic()
            try:
                bd.read(65536, 512)
            except IoError as exc:
                assert exc.errno == errno.ETIMEDOUT, exc
                took = time.monotonic() - start
                assert 0.4 < took < 5, took
            else:
                raise AssertionError("read of a hung backend returned")
            # The other worker still serves, and the device is up.
            bd.write(4096, b"y" * 512)
            assert bd.read(4096, 512) == b"y" * 512
            assert dev.expired == 1
            # A second hang: close while it is outstanding, then let the backend answer late.
            backend.entered.clear()
            future = bd.read_async(65536, 512)
            assert backend.entered.wait(10)   # the other worker holds it in the backend
            bd.close()   # waits for the outstanding read (it times out)
            late = future.exception(10)
            assert isinstance(late, IoError) and late.errno == errno.ETIMEDOUT, repr(late)
            start = time.monotonic()
            dev.close(timeout=5)
            closed_in = time.monotonic() - start
            # Nothing was left to drain: close() needed neither its 5 s drain
            # nor a cancel, only the worker's join (1 s: it is still stuck).
            assert closed_in < 5, closed_in
            backend.release.set()
            print("ok", round(took, 2), round(closed_in, 2))
        """
    )
    print(out)
    assert out.startswith("ok")


@pytest.mark.usefixtures("spdk")
def test_queued_ios_time_out_behind_a_hung_worker() -> None:
    # One worker, stuck in the backend: the I/Os behind it are still queued
    # when they time out, and are failed out of the queue.
    out = _run(
        """
        backend = HangsFrom()
        with Runtime(cpu_mask=reactor_mask()) as rt:
            dev = PythonBdev(rt, "Hang", backend, num_blocks=8192, workers=1, io_timeout=0.5)
            bd = rt.open_bdev("Hang")
            start = time.monotonic()
            futures = [bd.read_async(65536 + i * 512, 512) for i in range(8)]
            errors = [f.exception(10) for f in futures]
            took = time.monotonic() - start
            assert all(getattr(e, "errno", None) == errno.ETIMEDOUT for e in errors), errors
            assert 0.4 < took < 5, took
            assert dev.expired == 8 and dev.queued == 0, (dev.expired, dev.queued)
            backend.release.set()   # the late answer is dropped; the worker serves again
            bd.write(4096, b"z" * 512)
            assert bd.read(4096, 512) == b"z" * 512
            bd.close()
            dev.close(timeout=5)
            print("ok", round(took, 2))
        """
    )
    print(out)
    assert out.startswith("ok")


@pytest.mark.usefixtures("spdk")
def test_more_io_than_the_ring_holds_waits_and_loses_nothing() -> None:
    # One worker held in its first read while 20,000 more are submitted: the
    # incoming ring (16,384) fills, SPDK holds the rest (sent back NOMEM) and
    # retries them as the ring drains. Every read completes with its data.
    out = _run(
        """
        count, size = 20_000, 512

        class Gate:
            def __init__(self):
                self.release = threading.Event()
                self.first = True
            def readinto(self, offset, buffer):
                if self.first:
                    self.first = False
                    self.release.wait(60)
                buffer[:8] = offset.to_bytes(8, "little")

        backend = Gate()
        with Runtime(cpu_mask=reactor_mask()) as rt:
            dev = PythonBdev(rt, "Gate", backend, num_blocks=1 << 16, workers=1, batch=64)
            bd = rt.open_bdev("Gate", queue_depth=count)
            offsets = [((i * 7919) % (1 << 16)) * size for i in range(count)]
            into = bytearray(count * size)
            job = threading.Thread(target=bd.read_many, args=(offsets, size, into))
            job.start()
            deadline = time.monotonic() + 30
            full = -1
            while dev.queued != full and time.monotonic() < deadline:
                full = dev.queued
                time.sleep(0.5)   # until the ring stops filling
            backend.release.set()
            job.join(60)
            assert not job.is_alive()
            view = memoryview(into)
            wrong = [i for i, o in enumerate(offsets)
                     if int.from_bytes(view[i * size:i * size + 8], "little") != o]
            # The ring holds 16,383 (and the worker's batch); the rest waited in SPDK.
            assert 16_000 < full < 16_384 and not wrong, (full, wrong[:5])
            bd.close()
            dev.close(timeout=5)
            print("ok", full)
        """
    )
    print(out)
    assert out.startswith("ok")


@pytest.mark.usefixtures("spdk")
def test_close_with_a_hung_backend_and_no_timeout_cancels() -> None:
    out = _run(
        """
        entered = threading.Event()
        class Hangs(Ram):
            def readinto(self, offset, buffer):
                entered.set()
                threading.Event().wait(30)
        with Runtime(cpu_mask=reactor_mask()) as rt:
            dev = PythonBdev(rt, "Hang", Hangs(), num_blocks=64, workers=1)
            bd = rt.open_bdev("Hang")
            futures = [bd.read_async(i * 512, 512) for i in range(8)]
            assert entered.wait(10)   # the worker is stuck in the backend, the rest queued
            start = time.monotonic()
            dev.close(timeout=1)     # drains for 1 s, then cancels
            took = time.monotonic() - start
            errors = [f.exception(10) for f in futures]
            assert all(isinstance(e, SpdkError) for e in errors), errors
            assert took < 5, took
            assert "Hang" not in [b["name"] for b in rt.rpc("bdev_get_bdevs")]
            print("ok", round(took, 2))
        """
    )
    print(out)
    assert out.startswith("ok")


@pytest.mark.usefixtures("spdk")
def test_unregister_under_load() -> None:
    out = _run(
        """
        with Runtime(cpu_mask=reactor_mask()) as rt:
            for cancel in (False, True):
                dev = PythonBdev(rt, "Busy", Ram(), num_blocks=8192, workers=2)
                bd = rt.open_bdev("Busy", queue_depth=64)
                stop = threading.Event()
                removed = threading.Event()
                counts = {"ok": 0, "failed": 0, "other": [], "errnos": set()}
                def load(seed):
                    offsets = [((seed * 7919 + i * 104729) % 8192) * 512 for i in range(256)]
                    while not stop.is_set():
                        try:
                            bd.read_many(offsets, 512, depth=32)
                            counts["ok"] += 1
                        except SpdkError as exc:
                            counts["failed"] += 1
                            counts["errnos"].add(getattr(exc, "errno", None))
                            if removed.is_set():
                                return
                        except Exception as exc:
                            counts["other"].append(repr(exc))
                            return
                threads = [threading.Thread(target=load, args=(s,)) for s in range(3)]
                for t in threads:
                    t.start()
                deadline = time.monotonic() + 30
                while counts["ok"] < 3:   # the load runs: three batches served
                    assert time.monotonic() < deadline and not counts["other"], counts
                    time.sleep(0.005)
                start = time.monotonic()
                dev.close(cancel=cancel, timeout=10)
                took = time.monotonic() - start
                removed.set()
                stop.set()
                for t in threads:
                    t.join(30)
                    assert not t.is_alive()
                assert counts["ok"] > 0 and not counts["other"], counts
                # The I/O the removal stopped failed as a removal or a cancel does.
                assert counts["failed"] > 0, counts
                known = {errno.ENODEV, errno.ECANCELED, errno.EBADF, errno.EIO}
                assert counts["errnos"] <= known, counts
                # Well inside close()'s own timeout: it never had to cancel by time.
                assert took < 10, took
                try:
                    bd.read(0, 512)
                except IoError as exc:   # the removed device refuses I/O
                    assert exc.errno in known, exc
                else:
                    raise AssertionError("a removed bdev served a read")
                bd.close()
                assert "Busy" not in [b["name"] for b in rt.rpc("bdev_get_bdevs")]
                print(cancel, counts["ok"], counts["failed"], sorted(counts["errnos"]),
                      round(took, 3))
            print("ok")
        """
    )
    print(out)
    assert out.strip().endswith("ok")


@pytest.mark.usefixtures("spdk")
def test_runtime_stop_with_a_served_bdev_and_io_in_flight() -> None:
    out = _run(
        """
        rt = Runtime(cpu_mask=reactor_mask()).start()
        dev = PythonBdev(rt, "Busy", Ram(), num_blocks=8192, workers=2)
        bd = rt.open_bdev("Busy")
        futures = [bd.read_async(i * 512, 512) for i in range(64)]
        rt.stop(timeout=30)
        dev.close()
        # Every read ended (none is left hanging): served, or failed as SPDK stopped.
        outcomes = [f.exception(5) for f in futures]
        failed = [e for e in outcomes if e is not None]
        assert all(isinstance(e, SpdkError) for e in failed), failed
        assert dev.closed
        print("ok", len(outcomes) - len(failed), len(failed))
        """
    )
    print(out)
    assert out.startswith("ok")


@pytest.mark.usefixtures("spdk")
def test_close_after_the_runtime_stopped_frees_a_device_its_worker_held() -> None:
    # The worker is inside the backend when the runtime tears down, so the
    # device cannot be freed then (SPDK's part of it is given back); close()
    # after the stop frees the rest, without SPDK's environment and without
    # a crash. It used to return at once and leave the device allocated.
    out = _run(
        """
        backend = HangsFrom()
        rt = Runtime(cpu_mask=reactor_mask()).start()
        dev = PythonBdev(rt, "Stuck", backend, num_blocks=8192, workers=1)
        bd = rt.open_bdev("Stuck")
        future = bd.read_async(65536, 512)
        assert backend.entered.wait(10)
        rt.stop(timeout=30)
        assert future.exception(10) is not None
        assert not dev._freed    # white-box: the teardown had to keep it
        backend.release.set()
        # The worker commits late, to a device SPDK let go, and leaves (white-box).
        for worker in dev._threads:
            worker.join(10)
            assert not worker.is_alive()
        dev.close()
        print("ok", dev.closed, dev._freed)
        """
    )
    print(out)
    assert out.startswith("ok True True")


# ---------------------------------------------------------------- what a backend raises


@pytest.mark.usefixtures("spdk")
def test_base_exceptions_from_a_backend_fail_one_io_and_reach_the_program() -> None:
    # One worker: before, a BaseException killed it and every later I/O hung.
    out = _run(
        """
        import signal

        class Custom(BaseException):
            pass

        raises = {65536: KeyboardInterrupt, 69632: SystemExit, 73728: GeneratorExit,
                  77824: Custom}

        class Raiser(Ram):
            def readinto(self, offset, buffer):
                kind = raises.get(offset)
                if kind is SystemExit:
                    raise SystemExit(7)
                if kind is not None:
                    raise kind()
                super().readinto(offset, buffer)

        with Runtime(cpu_mask=reactor_mask()) as rt:
            dev = PythonBdev(rt, "Raise", Raiser(), num_blocks=8192, workers=1)
            bd = rt.open_bdev("Raise", timeout=20)
            bd.write(0, b"a" * 512)
            # KeyboardInterrupt: that read fails with EINTR, the main thread is interrupted.
            interrupted = False
            future = bd.read_async(65536, 512)
            try:
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    time.sleep(0.01)
            except KeyboardInterrupt:
                interrupted = True
            assert interrupted, "the backend's KeyboardInterrupt never reached the main thread"
            failed = future.exception(10)
            assert isinstance(failed, IoError) and failed.errno == errno.EINTR, repr(failed)
            assert bd.read(0, 512) == b"a" * 512   # the same worker serves on
            # The others fail their I/O with EIO; the worker serves on after each.
            for offset in (69632, 73728, 77824):
                try:
                    bd.read(offset, 512)
                except IoError as exc:
                    assert exc.errno == errno.EIO, (offset, exc)
                else:
                    raise AssertionError(f"read at {offset} succeeded")
                assert bd.read(0, 512) == b"a" * 512
            assert dev.failures == 4, dev.failures
            bd.close()
            # SystemExit is raised by close(), once the device is closed.
            try:
                dev.close()
            except SystemExit as exc:
                code = exc.code
            else:
                code = None
            assert code == 7 and dev.closed, code
            assert "Raise" not in [b["name"] for b in rt.rpc("bdev_get_bdevs")]
        print("ok")
        """,
        timeout=90,
    )
    assert out.startswith("ok")


@pytest.mark.usefixtures("spdk")
def test_base_exceptions_on_an_event_loop_fail_the_io_and_leave_the_loop() -> None:
    out = _run(
        """
        import asyncio

        class AsyncRaiser:
            def __init__(self):
                self.data = bytearray(1 << 22)
            async def readinto(self, offset, buffer):   # a task of the loop
                await asyncio.sleep(0)
                if offset == 65536:
                    raise KeyboardInterrupt
                if offset == 69632:
                    raise SystemExit(5)
                buffer[:] = self.data[offset:offset + len(buffer)]
            def write(self, offset, data):   # served inline by the loop's reader
                if offset == 4096:
                    raise KeyboardInterrupt
                self.data[offset:offset + len(data)] = data

        def leaves(loop, kind):
            try:
                loop.run_until_complete(asyncio.sleep(10))
            except kind as exc:
                return exc
            raise AssertionError(f"{kind.__name__} did not leave the loop")

        with Runtime(cpu_mask=reactor_mask()) as rt:
            loop = asyncio.new_event_loop()
            backend = AsyncRaiser()
            dev = PythonBdev(rt, "ARaise", backend, num_blocks=8192, loop=loop)
            bd = rt.open_bdev("ARaise", timeout=20)
            backend.data[:512] = b"b" * 512

            async def read0():
                return await bd.aread(0, 512)

            future = bd.read_async(65536, 512)
            leaves(loop, KeyboardInterrupt)
            failed = future.exception(10)
            assert isinstance(failed, IoError) and failed.errno == errno.EINTR, repr(failed)
            assert loop.run_until_complete(read0()) == b"b" * 512   # it serves on

            future = bd.read_async(69632, 512)
            assert leaves(loop, SystemExit).code == 5
            failed = future.exception(10)
            assert isinstance(failed, IoError) and failed.errno == errno.EIO, repr(failed)
            assert loop.run_until_complete(read0()) == b"b" * 512

            future = bd.write_async(4096, b"w" * 512)
            leaves(loop, KeyboardInterrupt)
            failed = future.exception(10)
            assert isinstance(failed, IoError) and failed.errno == errno.EINTR, repr(failed)
            assert loop.run_until_complete(read0()) == b"b" * 512
            bd.close()
            dev.close()
            loop.close()
        print("ok")
        """,
        timeout=90,
    )
    assert out.startswith("ok")


# ---------------------------------------------------------------- event loops


def test_a_closed_loop_is_refused_before_anything_is_registered(runtime: Any) -> None:
    from pyspdk_sys.pybdev import PythonBdev

    name = f"Py{next(_names)}"
    loop = asyncio.new_event_loop()
    loop.close()
    with pytest.raises(ValueError, match=r"loop .* is closed"):
        PythonBdev(runtime, name, Ram(), num_blocks=8, loop=loop)
    assert name not in [b["name"] for b in runtime.rpc("bdev_get_bdevs")]
    PythonBdev(runtime, name, Ram(), num_blocks=8).close()  # the name is free


def test_a_loop_that_refuses_the_reader_rolls_the_registration_back(runtime: Any) -> None:
    from pyspdk_sys.pybdev import PythonBdev

    class Refusing(asyncio.SelectorEventLoop):
        def add_reader(self, *args: Any) -> None:  # type: ignore[override]
            raise RuntimeError("no readers here")

    name = f"Py{next(_names)}"
    loop = Refusing()
    try:
        with pytest.raises(RuntimeError, match="no readers here"):
            PythonBdev(runtime, name, Ram(), num_blocks=8, loop=loop)
    finally:
        loop.close()
    assert name not in [b["name"] for b in runtime.rpc("bdev_get_bdevs")]


def test_with_around_a_loop_that_is_not_running_closes_at_once(runtime: Any) -> None:
    from pyspdk_sys.pybdev import PythonBdev

    class AsyncRam(Ram):
        async def readinto(self, offset: int, buffer: memoryview) -> None:  # type: ignore[override]
            super().readinto(offset, buffer)

    backend = AsyncRam()
    backend.data[:BLOCK] = b"o" * BLOCK
    loop = asyncio.new_event_loop()
    try:
        with PythonBdev(runtime, f"Py{next(_names)}", backend, num_blocks=BLOCKS, loop=loop) as dev:

            async def main() -> bytes:
                with runtime.open_bdev(dev.name) as bd:
                    return bytes(await bd.aread(0, BLOCK))

            assert loop.run_until_complete(main()) == b"o" * BLOCK
            start = time.monotonic()
        exited_in = time.monotonic() - start
    finally:
        loop.close()
    assert dev.closed and dev.name not in [b["name"] for b in runtime.rpc("bdev_get_bdevs")]
    # It used to wait 5 s for a loop nobody runs to take its reader off; the
    # reader is off now, and the device freed (white-box).
    assert exited_in < 2.5, exited_in
    assert dev._freed


def test_with_and_async_with_inside_the_serving_loop(runtime: Any) -> None:
    from pyspdk_sys.errors import IoError
    from pyspdk_sys.pybdev import PythonBdev

    class Gated(Ram):
        def __init__(self) -> None:
            super().__init__()
            self.gate = asyncio.Event()
            self.entered = asyncio.Event()

        async def readinto(self, offset: int, buffer: memoryview) -> None:  # type: ignore[override]
            if offset >= 65536:
                self.entered.set()
                await self.gate.wait()
            super().readinto(offset, buffer)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        names = lambda: [b["name"] for b in runtime.rpc("bdev_get_bdevs")]  # noqa: E731
        # async with drains: the read in the backend at exit is served, then
        # the device goes (SPDK removes it from under the open BlockDevice).
        backend = Gated()
        backend.data[65536 : 65536 + BLOCK] = b"d" * BLOCK
        async with PythonBdev(
            runtime, f"Py{next(_names)}", backend, num_blocks=BLOCKS, loop=loop
        ) as dev:
            bd = runtime.open_bdev(dev.name)
            read = asyncio.ensure_future(bd.aread(65536, BLOCK))
            await backend.entered.wait()
            loop.call_later(0.2, backend.gate.set)
        assert await read == b"d" * BLOCK
        bd.close()
        assert dev.closed and dev.name not in names()
        # with (not async) on the loop's own thread cannot drain without blocking
        # the loop: it cancels what is in flight, and leaves without raising.
        backend = Gated()
        with PythonBdev(runtime, f"Py{next(_names)}", backend, num_blocks=BLOCKS, loop=loop) as dev:
            bd = runtime.open_bdev(dev.name)
            future = bd.read_async(65536, BLOCK)
            await backend.entered.wait()
        failed = future.exception(10)
        assert isinstance(failed, IoError) and failed.errno == errno.ECANCELED, repr(failed)
        bd.close()
        assert dev.closed and dev.name not in names()
        backend.gate.set()  # the backend answers late: dropped, and the device is freed
        for _ in range(100):
            if dev._freed:  # white-box: the last task let go
                break
            await asyncio.sleep(0.01)
        assert dev._freed

    asyncio.run(main())


# ---------------------------------------------------------------- SPDK's memory


@pytest.mark.usefixtures("spdk")
def test_a_late_answer_after_a_timeout_writes_no_memory_of_spdk() -> None:
    out = _run(
        """
        from pyspdk_sys.bdev import DmaBuffer

        class Late(Ram):
            def __init__(self):
                super().__init__()
                self.release = threading.Event()
                self.answered = threading.Event()
            def readinto(self, offset, buffer):
                if offset == 65536:
                    self.release.wait(30)
                    buffer[:] = b"L" * len(buffer)   # long after the I/O timed out
                    self.answered.set()
                    return
                super().readinto(offset, buffer)

        backend = Late()
        backend.data[:512] = b"G" * 512
        with Runtime(cpu_mask=reactor_mask()) as rt:
            dev = PythonBdev(rt, "Late", backend, num_blocks=8192, workers=2, io_timeout=0.5)
            bd = rt.open_bdev("Late", timeout=20)
            dma = DmaBuffer(rt, 512)   # zero-copy: SPDK's buffer is this memory
            try:
                bd.read_many([65536], 512, dma)
            except IoError:
                pass   # read_many reports EIO for any failure...
            else:
                raise AssertionError("the hung read returned")
            assert dev.expired == 1   # ...this one timed out
            bd.read_many([0], 512, dma)   # the same memory, now another read's
            assert bytes(dma.view) == b"G" * 512
            backend.release.set()
            assert backend.answered.wait(10)
            bd.close()
            dev.close(timeout=5)
            # Every worker has left (white-box): the late answer was committed or dropped.
            assert not any(worker.is_alive() for worker in dev._threads)
            assert bytes(dma.view) == b"G" * 512, bytes(dma.view[:8])
            dma.close()
        print("ok")
        """
    )
    assert out.startswith("ok")


@pytest.mark.usefixtures("spdk")
def test_views_a_backend_keeps_reach_no_other_request() -> None:
    out = _run(
        """
        from pyspdk_sys.bdev import DmaBuffer

        class Keeper(Ram):
            def __init__(self):
                super().__init__()
                self.kept = []
                self.seen = None
            def readinto(self, offset, buffer):
                super().readinto(offset, buffer)
                if offset == 0:
                    self.kept = [buffer[:], memoryview(buffer), buffer.obj]
                elif offset == 4096:
                    for view in self.kept[:2]:    # written long after their call
                        view[:] = b"K" * len(view)
                    self.kept[2][:4] = b"KKKK"
            def write(self, offset, data):
                super().write(offset, data)
                if offset == 8192:
                    self.seen = memoryview(data)   # read long after its call

        backend = Keeper()
        backend.data[:512] = b"x" * 512
        backend.data[4096:4608] = b"y" * 512
        with Runtime(cpu_mask=reactor_mask()) as rt:
            dev = PythonBdev(rt, "Keep", backend, num_blocks=8192, workers=1)
            bd = rt.open_bdev("Keep", timeout=20)
            first, second = DmaBuffer(rt, 512), DmaBuffer(rt, 512)
            bd.read_many([0], 512, first)
            assert bytes(first.view) == b"x" * 512
            bd.read_many([4096], 512, second)   # the backend writes through its kept views
            assert bytes(second.view) == b"y" * 512, bytes(second.view[:8])
            assert bytes(first.view) == b"x" * 512, bytes(first.view[:8])
            # The same memory for both reads: the second's data is its own.
            bd.read_many([0], 512, first)
            bd.read_many([4096], 512, first)
            assert bytes(first.view) == b"y" * 512, bytes(first.view[:8])
            # A write's view, kept and read later, still shows that write's data.
            source = DmaBuffer(rt, 512)
            source.view[:] = b"A" * 512
            bd.write_many([8192], 512, source)
            source.view[:] = b"B" * 512
            bd.write_many([12288], 512, source)
            assert bytes(backend.seen) == b"A" * 512, bytes(backend.seen[:8])
            assert bytes(bd.read(8192, 512)) == b"A" * 512
            assert dev.failures == 0
            backend.kept.clear()
            backend.seen = None
            bd.close()
            for buffer in (first, second, source):
                buffer.close()
            dev.close(timeout=5)
        print("ok")
        """
    )
    assert out.startswith("ok")


# ---------------------------------------------------------------- Ctrl-C


_CTRL_C = """
import os, signal, sys

entered = threading.Event()

class Slow(Ram):
    def readinto(self, offset, buffer):
        if offset >= 65536:
            entered.set()
            time.sleep(SECONDS)
        super().readinto(offset, buffer)

pressed = []

def ctrl_c():   # once a read is in the backend
    entered.wait(60)
    time.sleep(0.2)
    pressed.append(time.monotonic())
    os.kill(os.getpid(), signal.SIGINT)

threading.Thread(target=ctrl_c, daemon=True).start()
try:
    with Runtime(cpu_mask=reactor_mask()) as rt:
        with PythonBdev(rt, "Slow", Slow(), num_blocks=8192, workers=1,
                        interruptible=INTERRUPTIBLE) as dev:
            if SHAPE == "read":
                with rt.open_bdev("Slow") as bd:
                    while True:
                        bd.read(65536, 512)
            else:   # the program waits; another thread's read is in the backend
                def reader():
                    with rt.open_bdev("Slow") as bd:
                        try:
                            bd.read(65536, 512)
                        except IoError:
                            pass
                threading.Thread(target=reader, daemon=True).start()
                while True:
                    time.sleep(0.05)
except BaseException as exc:
    chain, seen = [], exc
    while seen is not None:
        chain.append(type(seen).__name__)
        seen = seen.__context__
    after = time.monotonic() - pressed[0] if pressed else -1
    print("caught", ",".join(chain), round(after, 2), flush=True)
"""


@pytest.mark.usefixtures("spdk")
@pytest.mark.timeout(200)
@pytest.mark.parametrize(
    ("shape", "seconds", "interruptible"),
    [
        ("read", 25, True),  # Ctrl-C fails the read in the backend: nothing waits for it
        ("idle", 6, True),
        ("idle", 6, False),  # no SIGINT hook: the with-block's exit cancels, not drains
    ],
)
def test_ctrl_c_with_a_slow_backend_ends_promptly_in_keyboard_interrupt(
    shape: str, seconds: int, interruptible: bool
) -> None:
    setting = f"SHAPE, SECONDS, INTERRUPTIBLE = {shape!r}, {seconds}, {interruptible}\n"
    out = _run(setting + _CTRL_C, timeout=150)
    words = out.split()
    # Only a KeyboardInterrupt, no TimeoutError over it, and Ctrl-C pressed
    # while the read was in the backend (not while SPDK started).
    assert words[:2] == ["caught", "KeyboardInterrupt"], out
    after = float(words[2])
    assert after >= 0, out
    # Before, the program lived on 15 s (idle, 6 s per I/O) or 61 s and ended
    # in TimeoutError (read, 25 s per I/O); now the with-blocks leave at once
    # but for a worker's 1 s join. Well under one I/O's time in the backend:
    assert after < min(5, seconds - 1), out


@pytest.mark.usefixtures("spdk")
def test_ctrl_c_fails_the_io_in_flight_and_the_device_serves_on() -> None:
    out = _run(
        """
        import signal
        backend = HangsFrom()
        with Runtime(cpu_mask=reactor_mask()) as rt:
            before = signal.getsignal(signal.SIGINT)
            dev = PythonBdev(rt, "Intr", backend, num_blocks=8192, workers=2)
            bd = rt.open_bdev("Intr", timeout=20)
            future = bd.read_async(65536, 512)
            assert backend.entered.wait(10)
            try:
                signal.raise_signal(signal.SIGINT)
                time.sleep(1)
            except KeyboardInterrupt:
                pass
            else:
                raise AssertionError("no KeyboardInterrupt")
            failed = future.exception(5)
            assert isinstance(failed, IoError) and failed.errno == errno.EINTR, repr(failed)
            assert dev.expired == 1
            bd.write(0, b"s" * 512)
            assert bd.read(0, 512) == b"s" * 512   # later I/O is served
            bd.close()
            dev.close(timeout=5)
            # The last device closed: Python's own handler is back.
            assert signal.getsignal(signal.SIGINT) is before is signal.default_int_handler
            backend.release.set()
        print("ok")
        """
    )
    assert out.startswith("ok")


# ---------------------------------------------------------------- every entry point


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"runtime": None}, TypeError, "runtime must be a Runtime"),
        ({"name": 7}, TypeError, "bdev name"),
        ({"name": ""}, ValueError, "bdev name"),
        ({"name": "a\0b"}, ValueError, "bdev name"),
        ({"backend": None}, TypeError, "backend"),
        ({"num_blocks": 0}, ValueError, "num_blocks"),
        ({"num_blocks": 8.0}, TypeError, "num_blocks"),
        ({"num_blocks": 1 << 62, "block_size": 4096}, ValueError, "num_blocks"),
        ({"block_size": 1000}, ValueError, "block_size"),
        ({"block_size": 1 << 17}, ValueError, "block_size"),
        ({"block_size": "512"}, TypeError, "block_size"),
        ({"workers": 0}, ValueError, "workers"),
        ({"workers": 65}, ValueError, "workers"),
        ({"workers": True}, TypeError, "workers"),
        ({"workers": 1.5}, TypeError, "workers"),
        ({"loop": "loop"}, TypeError, "loop must be an asyncio event loop"),
        ({"io_timeout": 0}, ValueError, "io_timeout"),
        ({"io_timeout": -1.0}, ValueError, "io_timeout"),
        ({"io_timeout": float("nan")}, ValueError, "io_timeout"),
        ({"io_timeout": "1"}, TypeError, "io_timeout"),
        ({"io_timeout": True}, TypeError, "io_timeout"),
        ({"batch": 0}, ValueError, "batch"),
        ({"batch": 1025}, ValueError, "batch"),
        ({"batch": True}, TypeError, "batch"),
        ({"spin_us": -1}, ValueError, "spin_us"),
        ({"spin_us": float("inf")}, ValueError, "spin_us"),
        ({"spin_us": "50"}, TypeError, "spin_us"),
        ({"ops": "read"}, TypeError, "ops"),
        ({"ops": 5}, TypeError, "ops must be an iterable"),
        ({"ops": [1]}, TypeError, "ops holds 1"),
        ({"ops": ["read", "bogus"]}, ValueError, "unknown operations"),
        ({"ops": ["write"]}, ValueError, "must include 'read'"),
        ({"interruptible": 1}, TypeError, "interruptible"),
    ],
)
def test_every_argument_is_checked_before_anything_is_registered(
    runtime: Any, kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    from pyspdk_sys.pybdev import PythonBdev

    name = f"Py{next(_names)}"
    arguments: dict[str, Any] = {
        "runtime": runtime,
        "name": name,
        "backend": Ram(),
        "num_blocks": 8,
        **kwargs,
    }
    with pytest.raises(error, match=match):
        PythonBdev(**arguments)
    assert name not in [b["name"] for b in runtime.rpc("bdev_get_bdevs")]


def test_loop_and_workers_together_are_refused(runtime: Any) -> None:
    from pyspdk_sys.pybdev import PythonBdev

    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(ValueError, match="workers=2"):
            PythonBdev(runtime, f"Py{next(_names)}", Ram(), num_blocks=8, loop=loop, workers=2)
    finally:
        loop.close()


def test_close_checks_its_arguments(runtime: Any) -> None:
    from pyspdk_sys.pybdev import PythonBdev

    dev = PythonBdev(runtime, f"Py{next(_names)}", Ram(), num_blocks=8)
    try:
        with pytest.raises(TypeError, match="cancel"):
            dev.close(cancel="yes")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="timeout"):
            dev.close(timeout=-1)
        assert not dev.closed  # a refused close() left it open
    finally:
        dev.close()


class Wrong(Ram):
    """Returns what a backend must not: one mistake per offset."""

    def readinto(self, offset: int, buffer: memoryview) -> Any:  # type: ignore[override]
        super().readinto(offset, buffer)
        answers: dict[int, Any] = {
            1 * BLOCK: "abc",
            2 * BLOCK: 3.5,
            3 * BLOCK: -1,
            4 * BLOCK: BLOCK + 1,
            5 * BLOCK: True,
            7 * BLOCK: 100,  # a short read: the rest reads zeros
        }
        if offset == 6 * BLOCK:
            return asyncio.sleep(0)  # a plain method that did none of its work
        return answers.get(offset)

    def write(self, offset: int, data: memoryview) -> Any:  # type: ignore[override]
        if offset == 0:
            return len(data) - 1  # a short write
        if offset == BLOCK:
            return asyncio.sleep(0)  # a plain method that did none of its work
        super().write(offset, data)
        return len(data)


class WrongRead:
    def read(self, offset: int, length: int) -> Any:
        return {0: b"x" * (length - 1), BLOCK: "text", 2 * BLOCK: None, 3 * BLOCK: 7}.get(
            offset, array.array("H", bytes(length))
        )


def test_wrong_return_values_fail_that_io_only(runtime: Any) -> None:
    from pyspdk_sys.errors import IoError
    from pyspdk_sys.pybdev import PythonBdev

    backend = Wrong()
    backend.data[: 8 * BLOCK] = b"r" * (8 * BLOCK)
    with (
        PythonBdev(runtime, f"Py{next(_names)}", backend, num_blocks=BLOCKS) as dev,
        runtime.open_bdev(dev.name, timeout=20) as bd,
    ):
        for block in range(1, 7):
            with pytest.raises(IoError) as info:
                bd.read(block * BLOCK, BLOCK)
            assert info.value.errno == errno.EIO, block
        assert bd.read(0, BLOCK) == b"r" * BLOCK  # None: the whole buffer
        assert bd.read(7 * BLOCK, BLOCK) == b"r" * 100 + bytes(BLOCK - 100)
        for offset in (0, BLOCK):
            with pytest.raises(IoError) as info:
                bd.write(offset, b"w" * BLOCK)
            assert info.value.errno == errno.EIO, offset
        bd.write(2 * BLOCK, b"w" * BLOCK)  # len(data): fine
        assert dev.failures == 8
    with (
        PythonBdev(runtime, f"Py{next(_names)}", WrongRead(), num_blocks=BLOCKS) as dev,
        runtime.open_bdev(dev.name, timeout=20) as bd,
    ):
        for block in range(4):
            with pytest.raises(IoError) as info:
                bd.read(block * BLOCK, BLOCK)
            assert info.value.errno == errno.EIO, block
        assert bd.read(4 * BLOCK, BLOCK) == bytes(BLOCK)  # any buffer of the right size


@pytest.mark.usefixtures("spdk")
def test_calls_from_the_spdk_thread_from_the_backend_and_after_the_runtime() -> None:
    out = _run(
        """
        from pyspdk_sys.errors import RuntimeStateError

        class ClosesItself(Ram):
            def readinto(self, offset, buffer):
                if offset >= 65536:
                    dev.close()   # from inside its own I/O
                    return
                super().readinto(offset, buffer)

        rt = Runtime(cpu_mask=reactor_mask()).start()
        dev = PythonBdev(rt, "Self", ClosesItself(), num_blocks=8192, workers=1)
        # close() on the SPDK thread would wait for that thread: refused, not frozen.
        try:
            rt.call(dev.close)
        except RuntimeStateError as exc:
            assert "SPDK thread" in str(exc), exc
        else:
            raise AssertionError("close() ran on the SPDK thread")
        assert not dev.closed
        # Made on the SPDK thread (it waits for nothing there), used from here.
        other = rt.call(lambda: PythonBdev(rt, "OnSpdk", Ram(), num_blocks=64, workers=1))
        with rt.open_bdev("OnSpdk", timeout=20) as od:
            od.write(0, b"o" * 512)
            assert od.read(0, 512) == b"o" * 512
        other.close()
        bd = rt.open_bdev("Self", timeout=20)
        start = time.monotonic()
        try:
            bd.read(65536, 512)
        except IoError as exc:
            assert exc.errno == errno.ECANCELED, exc
        else:
            raise AssertionError("a read of a closing device succeeded")
        took = time.monotonic() - start
        assert took < 10, took   # it cancelled its own I/O rather than drain it for 30 s
        bd.close()
        deadline = time.monotonic() + 10
        while not dev._freed and time.monotonic() < deadline:   # white-box
            time.sleep(0.01)
        assert dev.closed and dev._freed
        assert "Self" not in [b["name"] for b in rt.rpc("bdev_get_bdevs")]
        rt.stop(timeout=30)
        try:
            PythonBdev(rt, "After", Ram(), num_blocks=8)
        except RuntimeStateError as exc:
            assert "stopped" in str(exc), exc
        else:
            raise AssertionError("a bdev was made on a stopped runtime")
        dev.close()   # again, after the stop: nothing to do
        print("ok", round(took, 2))
        """
    )
    assert out.startswith("ok")


class Sizes(Ram):
    """Records the largest read and write it was asked for."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.largest = 0

    def readinto(self, offset: int, buffer: memoryview) -> None:
        self.largest = max(self.largest, len(buffer))
        super().readinto(offset, buffer)

    def write(self, offset: int, data: memoryview) -> None:
        self.largest = max(self.largest, len(data))
        super().write(offset, data)


class AsyncSizes(Sizes):
    async def readinto(self, offset: int, buffer: memoryview) -> None:  # type: ignore[override]
        Sizes.readinto(self, offset, buffer)


@pytest.mark.parametrize("served_by", ["threads", "loop"])
def test_large_ios_grow_the_bounce_memory_and_are_split_at_4_mib(
    runtime: Any, served_by: str
) -> None:
    from pyspdk_sys.pybdev import PythonBdev

    size = 16 << 20
    data = pattern(3, 6 << 20)  # larger than a worker's first arena, and than 4 MiB

    def check(dev: Any, bd: Any, backend: Sizes) -> None:
        bd.write(4096, data)
        assert backend.data[4096 : 4096 + len(data)] == data
        assert bd.read(4096, len(data)) == data
        assert backend.largest == 4 << 20  # the bdev layer split what was larger
        assert dev.failures == 0

    if served_by == "threads":
        backend = Sizes(size)
        with (
            PythonBdev(runtime, f"Py{next(_names)}", backend, num_blocks=size // BLOCK) as dev,
            runtime.open_bdev(dev.name, timeout=60) as bd,
        ):
            check(dev, bd, backend)
        return

    async def main() -> None:
        backend = AsyncSizes(size)
        loop = asyncio.get_running_loop()
        async with PythonBdev(
            runtime, f"Py{next(_names)}", backend, num_blocks=size // BLOCK, loop=loop
        ) as dev:
            bd = runtime.open_bdev(dev.name, timeout=60)
            try:
                await loop.run_in_executor(None, check, dev, bd, backend)
            finally:
                await loop.run_in_executor(None, bd.close)

    asyncio.run(main())


def test_any_return_value_of_readinto_or_write_fails_or_means_what_it_says(runtime: Any) -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from pyspdk_sys.errors import IoError
    from pyspdk_sys.pybdev import PythonBdev

    class Answers(Ram):
        answer: Any = None

        def readinto(self, offset: int, buffer: memoryview) -> Any:  # type: ignore[override]
            buffer[:] = b"z" * len(buffer)
            return self.answer if offset == 0 else None

        def write(self, offset: int, data: memoryview) -> Any:  # type: ignore[override]
            super().write(offset, data)
            return self.answer

    answers = st.one_of(
        st.none(),
        st.integers(-2, BLOCK + 2),
        st.sampled_from([0, BLOCK - 1, BLOCK, 1 << 70]),
        st.booleans(),
        st.floats(allow_nan=True),
        st.text(max_size=3),
        st.binary(max_size=3),
        st.lists(st.integers(), max_size=2),
    )
    backend = Answers()
    with (
        PythonBdev(runtime, f"Py{next(_names)}", backend, num_blocks=BLOCKS, batch=4) as dev,
        runtime.open_bdev(dev.name, timeout=20) as bd,
    ):

        @settings(max_examples=80, deadline=None)
        @given(answers)
        def check(answer: Any) -> None:
            backend.answer = answer
            is_count = isinstance(answer, int) and not isinstance(answer, bool)
            # readinto: None fills it all; a count from 0 to its length is a
            # short read (zeros after); anything else fails the I/O with EIO.
            if answer is None:
                expected: bytes | None = b"z" * BLOCK
            elif is_count and 0 <= answer <= BLOCK:
                expected = b"z" * answer + bytes(BLOCK - answer)
            else:
                expected = None
            try:
                got = bd.read(0, BLOCK)
            except IoError as exc:
                assert expected is None and exc.errno == errno.EIO, (answer, exc)
            else:
                assert got == expected, answer
            # write: a count that is not the whole buffer fails it; other answers are ignored.
            try:
                bd.write(BLOCK, b"w" * BLOCK)
            except IoError as exc:
                assert is_count and answer != BLOCK and exc.errno == errno.EIO, (answer, exc)
            else:
                assert not is_count or answer == BLOCK, answer
            backend.answer = None
            assert bd.read(2 * BLOCK, BLOCK) == b"z" * BLOCK  # and it serves on

        check()
