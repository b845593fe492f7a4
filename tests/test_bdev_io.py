"""Block I/O on real SPDK bdevs in this process: every operation, every check."""

from __future__ import annotations

import array
import asyncio
import errno
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import run_threads, skip_or_fail


@pytest.fixture
def dev(runtime: Any, malloc: str) -> Iterator[Any]:
    device = runtime.open_bdev(malloc)
    yield device
    device.close()


def test_list_and_describe(runtime: Any, malloc: str) -> None:
    from pyspdk_sys.bdev import bdev_info, list_bdevs

    (info,) = [b for b in list_bdevs(runtime) if b.name == malloc]
    assert (info.block_size, info.num_blocks, info.size) == (512, 32768, 16 << 20)
    assert info.product_name == "Malloc disk"
    assert {"read", "write", "unmap", "flush", "reset", "write_zeroes"} <= info.io_types
    assert len(info.uuid) == 36
    assert bdev_info(runtime, malloc) == info


def test_unknown_device(runtime: Any) -> None:
    from pyspdk_sys.bdev import bdev_info
    from pyspdk_sys.errors import DeviceNotFoundError

    with pytest.raises(DeviceNotFoundError, match="no block device named 'Nope'"):
        runtime.open_bdev("Nope")
    with pytest.raises(DeviceNotFoundError):
        bdev_info(runtime, "Nope")


def test_read_write_roundtrip(dev: Any) -> None:
    data = os.urandom(64 * 1024)
    dev.write(8192, data)
    assert dev.read(8192, len(data)) == data
    target = bytearray(4096)
    assert dev.read_into(8192 + 4096, target) == 4096
    assert bytes(target) == data[4096:8192]
    view = memoryview(bytearray(1024))
    dev.read_into(8192, view)
    assert view.tobytes() == data[:1024]


def test_blocks_api(dev: Any) -> None:
    dev.write_blocks(10, b"\xab" * 1024)
    assert dev.read_blocks(10, 2) == b"\xab" * 1024
    assert dev.read(10 * 512, 512) == b"\xab" * 512


def test_vectored(dev: Any) -> None:
    parts = [b"1" * 512, b"2" * 1536, b"3" * 2048]
    dev.writev(0, parts)
    assert dev.read(0, 4096) == b"".join(parts)
    into = [bytearray(1024), bytearray(3072)]
    assert dev.readv(0, into) == 4096
    assert bytes(into[0]) + bytes(into[1]) == b"".join(parts)


def _iostat(rpc: Any, name: str) -> dict[str, Any]:
    (stat,) = rpc("bdev_get_iostat", {"names": [name]})["bdevs"]
    return dict(stat)


def test_write_zeroes_and_unmap_zero_exactly_their_range(dev: Any, rpc: Any) -> None:
    """A malloc bdev reads back zeroes where it was unmapped (it fills the range with 0)."""
    dev.write(0, b"\xff" * 12288)
    dev.write_zeroes(0, 4096)
    assert dev.read(0, 12288) == bytes(4096) + b"\xff" * 8192
    before = _iostat(rpc, dev.name)
    dev.unmap(4096, 4096)
    after = _iostat(rpc, dev.name)
    assert after["num_unmap_ops"] - before["num_unmap_ops"] == 1
    assert after["bytes_unmapped"] - before["bytes_unmapped"] == 4096
    assert dev.read(0, 12288) == bytes(8192) + b"\xff" * 4096


def test_flush_reaches_the_device(error_dev: tuple[Any, str], rpc: Any) -> None:
    """flush() is a real FLUSH I/O: a failure the device injects on flushes is reported."""
    from pyspdk_sys.errors import IoError

    device, name = error_dev
    data = os.urandom(8192)
    device.write(0, data)
    device.flush()
    device.flush(0, 4096)
    assert device.read(0, 8192) == data
    rpc(
        "bdev_error_inject_error",
        {"name": name, "io_type": "flush", "error_type": "failure", "num": 2},
    )
    with pytest.raises(IoError) as caught:
        device.flush()
    assert caught.value.errno == errno.EIO and caught.value.op == "flush"
    with pytest.raises(IoError):
        device.flush(0, 4096)
    device.flush()  # the two injected failures are used up
    assert device.read(0, 8192) == data


def test_reset_ends_the_io_in_flight(runtime: Any, rpc: Any, malloc: str) -> None:
    """A reset aborts what the delay bdev still holds: the 10 s read fails at once."""
    from pyspdk_sys import lib
    from pyspdk_sys.errors import IoError

    slow = f"{malloc}Reset"
    latency = {f"{k}_{rw}_latency": 10_000_000 for k in ("avg", "p99") for rw in ("read", "write")}
    rpc("bdev_delay_create", {"base_bdev_name": malloc, "name": slow, **latency})
    try:
        with runtime.open_bdev(slow) as device:
            started = time.monotonic()
            future = device.read_async(0, 512)
            deadline = started + 5
            while lib.pyspdk_dev_inflight(device._dev) == 0:
                assert time.monotonic() < deadline, "the read never reached SPDK"
                time.sleep(0.001)
            device.reset()
            with pytest.raises(IoError) as caught:
                future.result(timeout=5)
            assert caught.value.errno == errno.EIO and caught.value.op == "read"
            assert time.monotonic() - started < 5  # ended by the reset, not by the device
            assert lib.pyspdk_dev_inflight(device._dev) == 0
    finally:
        rpc("bdev_delay_delete", {"name": slow})
    with runtime.open_bdev(malloc) as device:
        device.reset()  # a device that holds nothing resets too, and stays usable
        device.write(0, b"r" * 512)
        assert device.read(0, 512) == b"r" * 512


def test_dma_buffer_zero_copy(runtime: Any, dev: Any) -> None:
    from pyspdk_sys.bdev import DmaBuffer

    with DmaBuffer(runtime, 8192) as buffer:
        buffer.view[:] = os.urandom(8192)
        expected = bytes(buffer.view)
        dev.write(0, buffer)
        buffer.view[:] = bytes(8192)
        dev.read_into(0, buffer)
        assert bytes(buffer.view) == expected
    from pyspdk_sys.errors import RuntimeStateError

    with pytest.raises(RuntimeStateError, match="freed"):
        dev.write(0, buffer)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (
            lambda d: d.read(100, 512),
            ValueError,
            "offset 100 is not a multiple of the block size 512",
        ),
        (lambda d: d.read(0, 1000), ValueError, "length 1000 is not a multiple"),
        (lambda d: d.read(0, 0), ValueError, "at least one block"),
        (lambda d: d.read(-512, 512), ValueError, "must not be negative"),
        (lambda d: d.read(16 << 20, 512), ValueError, "run past the end"),
        (lambda d: d.read((16 << 20) - 512, 1024), ValueError, "run past the end"),
        (lambda d: d.read(True, 512), TypeError, "offset must be an int"),
        (lambda d: d.read(0.0, 512), TypeError, "offset must be an int"),
        (lambda d: d.write(0, b"x" * 100), ValueError, "length 100 is not a multiple"),
        (lambda d: d.write(0, "text" * 128), TypeError, "expected a bytes-like object"),
        (lambda d: d.read_into(0, b"x" * 512), TypeError, "must be writable"),
        (lambda d: d.writev(0, []), ValueError, "must not be empty"),
        (lambda d: d.writev(0, b"x" * 512), TypeError, "sequence of bytes-like"),
        (lambda d: d.write_blocks(32768, b"x" * 512), ValueError, "run past the end"),
        (lambda d: d.run_batch([("format", 0, 512)]), ValueError, "unknown batch operation"),
        (lambda d: d.run_batch([("read", 0)]), TypeError, "batch operation"),
    ],
)
def test_bad_arguments_are_refused_before_spdk(
    dev: Any, call: Any, error: type, message: str
) -> None:
    before = os.urandom(4096)
    dev.write(0, before)
    with pytest.raises(error, match=message):
        call(dev)
    # Nothing reached the device, and it still works.
    assert dev.read(0, 4096) == before
    assert dev.gate.holds == []


def test_read_only_descriptor(runtime: Any, malloc: str) -> None:
    with runtime.open_bdev(malloc, writable=False) as ro:
        assert len(ro.read(0, 512)) == 512
        for call in (
            lambda: ro.write(0, b"x" * 512),
            lambda: ro.write_zeroes(0, 512),
            lambda: ro.unmap(0, 512),
            lambda: ro.run_batch([("write", 0, b"x" * 512)]),
        ):
            with pytest.raises(PermissionError, match="read-only"):
                call()


def test_closed_device(runtime: Any, malloc: str) -> None:
    from pyspdk_sys.errors import RuntimeStateError

    device = runtime.open_bdev(malloc)
    device.close()
    device.close()  # twice is fine
    assert device.closed
    with pytest.raises(RuntimeStateError, match="is closed"):
        device.read(0, 512)
    with pytest.raises(RuntimeStateError, match="is closed"):
        device.read_async(0, 512)


def test_open_options_checked(runtime: Any, malloc: str) -> None:
    with pytest.raises(ValueError, match="queue_depth"):
        runtime.open_bdev(malloc, queue_depth=0)
    with pytest.raises(TypeError, match="device name is a str"):
        runtime.open_bdev(b"Malloc0")
    for lanes in (0, 65):
        with pytest.raises(ValueError, match="lanes"):
            runtime.open_bdev(malloc, lanes=lanes)
    # More lanes than reactor cores: one per core (this runtime has one).
    with runtime.open_bdev(malloc, lanes=4) as dev:
        assert dev.lanes == 1
        dev.write(0, b"L" * 512)
        assert dev.read(0, 512) == b"L" * 512


def test_futures_and_asyncio(dev: Any) -> None:
    dev.write_async(0, b"f" * 4096).result(timeout=10)
    assert dev.read_async(0, 4096).result(timeout=10) == b"f" * 4096
    target = bytearray(512)
    assert dev.read_into_async(0, target).result(timeout=10) == 512

    async def main() -> bytes:
        await dev.awrite(4096, b"a" * 4096)
        await dev.aflush()
        reads = await asyncio.gather(*(dev.aread(4096, 4096) for _ in range(16)))
        assert len(set(reads)) == 1
        return reads[0]

    assert asyncio.run(main()) == b"a" * 4096
    assert bytes(target) == b"f" * 512


def test_batch_results_in_order(dev: Any) -> None:
    writes = [("write", i * 4096, bytes([i]) * 4096) for i in range(100)]
    assert dev.run_batch(writes) == [None] * 100
    reads = dev.run_batch([("read", i * 4096, 4096) for i in range(100)])
    assert reads == [bytes([i]) * 4096 for i in range(100)]
    assert dev.run_batch([]) == []


@pytest.fixture
def error_dev(runtime: Any, rpc: Any, malloc: str) -> Iterator[tuple[Any, str]]:
    name = f"EE_{malloc}"
    assert rpc("bdev_error_create", {"base_name": malloc}) is True
    device = runtime.open_bdev(name)
    yield device, name
    device.close()
    rpc("bdev_error_delete", {"name": name})


def test_injected_failures_surface_once_each(error_dev: tuple[Any, str], rpc: Any) -> None:
    from pyspdk_sys.errors import IoError

    device, name = error_dev
    rpc(
        "bdev_error_inject_error",
        {"name": name, "io_type": "write", "error_type": "failure", "num": 3},
    )
    outcomes = []
    for i in range(10):
        try:
            device.write(i * 512, b"w" * 512)
            outcomes.append("ok")
        except IoError as exc:
            assert exc.errno == errno.EIO
            assert exc.op == "write" and exc.offset == i * 512 and exc.device == name
            outcomes.append("failed")
    assert outcomes == ["failed"] * 3 + ["ok"] * 7
    assert device.read(3 * 512, 512) == b"w" * 512  # usable after failures


def test_injected_failures_in_a_batch(error_dev: tuple[Any, str], rpc: Any) -> None:
    from pyspdk_sys.errors import IoError

    device, name = error_dev
    rpc(
        "bdev_error_inject_error",
        {"name": name, "io_type": "read", "error_type": "failure", "num": 5},
    )
    results = device.run_batch([("read", i * 512, 512) for i in range(64)], return_exceptions=True)
    failures = [r for r in results if isinstance(r, IoError)]
    assert len(failures) == 5
    assert all(f.errno == errno.EIO for f in failures)
    assert sum(isinstance(r, bytes) for r in results) == 59
    rpc(
        "bdev_error_inject_error",
        {"name": name, "io_type": "read", "error_type": "failure", "num": 1},
    )
    with pytest.raises(IoError):
        device.run_batch([("read", 0, 512)])
    assert device.run_batch([("read", 0, 512)]) == [device.read(0, 512)]


def test_injected_failure_reaches_the_future(error_dev: tuple[Any, str], rpc: Any) -> None:
    from pyspdk_sys.errors import IoError

    device, name = error_dev
    rpc(
        "bdev_error_inject_error",
        {"name": name, "io_type": "read", "error_type": "failure", "num": 1},
    )
    with pytest.raises(IoError, match="NVMe status"):
        device.read_async(0, 512).result(timeout=10)
    rpc(
        "bdev_error_inject_error",
        {"name": name, "io_type": "read", "error_type": "failure", "num": 1},
    )

    async def main() -> None:
        with pytest.raises(IoError):
            await device.aread(0, 512)
        assert len(await device.aread(0, 512)) == 512

    asyncio.run(main())


def test_exceptions_in_spdk_thread_work_reach_the_future(runtime: Any) -> None:
    with pytest.raises(ZeroDivisionError):
        runtime.submit(lambda: 1 / 0).result(timeout=10)
    with pytest.raises(SystemExit):
        runtime.call(lambda: (_ for _ in ()).throw(SystemExit(3)), timeout=10)
    assert runtime.call(lambda: 42, timeout=10) == 42  # the reactor goes on


def test_no_blocking_wait_on_the_spdk_thread(runtime: Any) -> None:
    from pyspdk_sys.errors import RuntimeStateError

    def waits_on_itself() -> Any:
        return runtime.submit(lambda: 1).result()

    with pytest.raises(RuntimeStateError, match="deadlock"):
        runtime.call(waits_on_itself, timeout=10)


def test_async_run(runtime: Any) -> None:
    async def main() -> int:
        return await runtime.run(lambda x: x * 2, 21)

    assert asyncio.run(main()) == 42


def test_nothing_left_pending(runtime: Any, dev: Any) -> None:
    from pyspdk_sys._completions import future_reaper

    futures = [dev.read_async(i * 512, 512) for i in range(500)]
    for future in futures:
        future.result(timeout=30)
    assert future_reaper(runtime).completions.pending == {}
    assert dev.gate.holds == []


def test_loops_on_two_threads_share_a_device(dev: Any) -> None:
    """Each thread's loop gets its own completions, whichever loop the device served last."""

    def run(thread: int) -> None:
        async def main() -> None:
            for round_ in range(40):
                offsets = [(thread * 64 + i) * 4096 for i in range(16)]
                datas = [bytes([thread, round_, i]) * 1365 + b"." for i in range(16)]
                await asyncio.gather(
                    *(dev.awrite(o, d) for o, d in zip(offsets, datas, strict=True))
                )
                got = await asyncio.gather(*(dev.aread(o, 4096) for o in offsets))
                assert got == datas, (thread, round_)

        asyncio.run(main())

    assert run_threads(run, 2) == []
    assert dev.gate.holds == []


def test_repeated_asyncio_run_leaks_nothing(runtime: Any, dev: Any) -> None:
    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    asyncio.run(dev.aread(0, 512))
    before = open_fds()
    for _ in range(20):
        assert len(asyncio.run(dev.aread(0, 512))) == 512
    assert open_fds() == before
    from pyspdk_sys._completions import loop_reapers

    assert len(loop_reapers(runtime)._by_loop) == 1


def test_read_many_write_many(runtime: Any, dev: Any) -> None:
    from pyspdk_sys.bdev import DmaBuffer

    offsets = [i * 8192 for i in range(200)]
    data = os.urandom(200 * 4096)
    dev.write_many(offsets, 4096, data, depth=16)
    assert dev.read_many(offsets, 4096) == data
    for i in (0, 57, 199):
        assert dev.read(offsets[i], 4096) == data[i * 4096 : (i + 1) * 4096]
    into = bytearray(200 * 4096)
    assert dev.read_many(reversed(offsets), 4096, into, depth=1) is into
    assert into == b"".join(data[i * 4096 : (i + 1) * 4096] for i in reversed(range(200)))
    with DmaBuffer(runtime, 200 * 4096) as buffer:
        dev.read_many(offsets, 4096, buffer)
        assert bytes(buffer.view) == data
        buffer.view[:] = bytes(200 * 4096)
        dev.write_many(offsets, 4096, buffer)
    assert dev.read(offsets[3], 4096) == bytes(4096)
    assert dev.read_many([], 4096) == b""


def test_many_through_plain_memory_keeps_every_io_in_its_place(dev: Any) -> None:
    """Plain buffers go through a few bounce buffers, reused in turn: no I/O gets another's data."""
    count, size = 300, 1024
    offsets = [((i * 7919) % 2048) * 4096 for i in range(count)]
    offsets = list(dict.fromkeys(offsets))
    count = len(offsets)
    source = array.array("Q", range(count * size // 8))  # a buffer of another format
    for depth in (1, 7, 64):
        dev.write_many(offsets, size, memoryview(source), depth=depth)
        into = bytearray(count * size)
        dev.read_many(offsets, size, into, depth=depth)
        assert into == source.tobytes(), depth
        for i in (0, count // 2, count - 1):
            assert dev.read(offsets[i], size) == source.tobytes()[i * size : (i + 1) * size]
    with pytest.raises(TypeError, match="writable"):
        dev.read_many(offsets, size, bytes(count * size))


def test_aread_many_awrite_many_leave_the_loop_free(runtime: Any, rpc: Any, malloc: str) -> None:
    """The asyncio batches give read_many's results, and the loop runs while they wait."""
    slow = f"{malloc}Slow"
    rpc(
        "bdev_delay_create",
        {
            "base_bdev_name": malloc,
            "name": slow,
            "avg_read_latency": 100_000,
            "p99_read_latency": 100_000,
            "avg_write_latency": 100_000,
            "p99_write_latency": 100_000,
        },
    )
    dev = runtime.open_bdev(slow)
    try:
        offsets = [i * 8192 for i in range(4)]
        data = os.urandom(4 * 4096)

        async def main() -> tuple[int, bytes, bytearray, int]:
            ticks = 0

            async def ticker() -> None:
                nonlocal ticks
                while True:
                    await asyncio.sleep(0.005)
                    ticks += 1

            task = asyncio.create_task(ticker())
            await dev.awrite_many(offsets, 4096, data, depth=1)  # 4 x 100 ms
            written_ticks = ticks
            read = await dev.aread_many(iter(offsets), 4096, depth=1)
            into = bytearray(4 * 4096)
            assert await dev.aread_many(offsets, 4096, into, depth=4) is into
            task.cancel()
            return written_ticks, read, into, ticks

        written_ticks, read, into, ticks = asyncio.run(main())
        assert read == data == bytes(into) == dev.read_many(offsets, 4096)
        # 400 ms of I/O per batch, 5 ms ticks: a loop blocked by it would not tick at all.
        assert written_ticks >= 5
        assert ticks >= written_ticks + 5
        with pytest.raises(ValueError, match=r"offsets\[1\]"):
            asyncio.run(dev.aread_many([0, 100], 4096))
    finally:
        dev.close()
        rpc("bdev_delay_delete", {"name": slow})


def test_cancelled_futures_end_cleanly(runtime: Any, rpc: Any, malloc: str) -> None:
    """A future cancelled while its I/O runs: wait() wakes, the slot comes back, I/O goes on."""
    import concurrent.futures

    from pyspdk_sys import lib

    slow = f"{malloc}Slow"
    latency = {"avg_read_latency": 500_000, "p99_read_latency": 500_000}
    latency |= {"avg_write_latency": 50_000, "p99_write_latency": 50_000}
    rpc("bdev_delay_create", {"base_bdev_name": malloc, "name": slow, **latency})
    dev = runtime.open_bdev(slow)
    try:

        def until_spdk_holds_one() -> None:
            deadline = time.monotonic() + 5
            while lib.pyspdk_dev_inflight(dev._dev) == 0:
                assert time.monotonic() < deadline, "the read never reached SPDK"
                time.sleep(0.001)

        future = dev.read_async(0, 4096)
        until_spdk_holds_one()
        assert future.cancel()  # while SPDK holds it, for 0.5 s
        done, _ = concurrent.futures.wait([future], timeout=5)
        assert done == {future} and future.cancelled()
        dev.write(4096, b"\x5a" * 4096)
        assert dev.read_async(4096, 4096).result(timeout=5) == b"\x5a" * 4096

        async def main() -> tuple[int, bytes]:
            task = asyncio.ensure_future(dev.aread(0, 4096))
            deadline = time.monotonic() + 5
            while lib.pyspdk_dev_inflight(dev._dev) == 0:  # until SPDK holds it
                assert time.monotonic() < deadline, "the read never reached SPDK"
                await asyncio.sleep(0.001)
            held = lib.pyspdk_dev_inflight(dev._dev)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return held, await dev.aread(4096, 4096)

        held, data = asyncio.run(main())
        assert held >= 1 and data == b"\x5a" * 4096
        deadline = time.monotonic() + 5
        while dev.gate.holds and time.monotonic() < deadline:
            time.sleep(0.01)
        assert dev.gate.holds == []  # both cancelled reads finished and left
        assert len(dev._afree) == len(dev._aslots)
    finally:
        dev.close()
        rpc("bdev_delay_delete", {"name": slow})


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda d: d.read_many([0, 4096, 100], 512), ValueError, r"offsets\[2\] = 100"),
        (lambda d: d.read_many([(16 << 20) - 512], 1024), ValueError, r"offsets\[0\]"),
        (lambda d: d.read_many([-512], 512), ValueError, "must not be negative"),
        (lambda d: d.read_many(["0"], 512), TypeError, "iterable of ints"),
        (lambda d: d.read_many([0], 1000), ValueError, "multiple of the block size"),
        (lambda d: d.read_many([0, 512], 512, bytearray(512)), ValueError, "need 1024"),
        (lambda d: d.read_many([0], 512, b"x" * 512), TypeError, "must be writable"),
        (lambda d: d.write_many([0, 512], 512, b"x" * 512), ValueError, "need 1024"),
        (lambda d: d.read_many([0], 512, depth=0), ValueError, "depth"),
    ],
)
def test_many_checks(dev: Any, call: Any, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        call(dev)
    assert len(dev.read_many([0, 512], 512)) == 1024  # still fine


def test_write_many_read_only(runtime: Any, malloc: str) -> None:
    with runtime.open_bdev(malloc, writable=False) as ro, pytest.raises(PermissionError):
        ro.write_many([0], 512, b"x" * 512)


def test_read_many_reports_every_failure(error_dev: tuple[Any, str], rpc: Any) -> None:
    from pyspdk_sys.errors import IoError

    device, name = error_dev
    device.write_many(
        [i * 512 for i in range(64)], 512, b"".join(bytes([i]) * 512 for i in range(64))
    )
    rpc(
        "bdev_error_inject_error",
        {"name": name, "io_type": "read", "error_type": "failure", "num": 3},
    )
    into = bytearray(64 * 512)
    with pytest.raises(IoError) as caught:
        device.read_many([i * 512 for i in range(64)], 512, into, depth=8)
    assert caught.value.errno == errno.EIO
    assert len(caught.value.failed) == 3
    good = [i for i in range(64) if i not in caught.value.failed]
    assert all(into[i * 512 : (i + 1) * 512] == bytes([i]) * 512 for i in good)
    # A failed read leaves its bytes alone: no other I/O's data lands there.
    assert all(into[i * 512 : (i + 1) * 512] == bytes(512) for i in caught.value.failed)
    assert len(device.read_many([0], 512)) == 512  # usable afterwards


def test_create_helpers_and_delete(runtime: Any, tmp_path: Any) -> None:
    from pyspdk_sys import bdev

    assert bdev.create_malloc(runtime, "HelperMalloc", 1 << 20, 4096) == "HelperMalloc"
    assert bdev.create_null(runtime, "HelperNull", 1 << 20) == "HelperNull"
    assert bdev.create_error(runtime, "HelperMalloc") == "EE_HelperMalloc"
    names = {b.name: b for b in bdev.list_bdevs(runtime)}
    assert names["HelperMalloc"].num_blocks == 256
    assert names["HelperNull"].block_size == 512
    assert names["EE_HelperMalloc"].product_name == "Error Injection Disk"
    for name in ("EE_HelperMalloc", "HelperMalloc", "HelperNull"):
        bdev.delete_bdev(runtime, name)
    assert not {"EE_HelperMalloc", "HelperMalloc", "HelperNull"} & {
        b.name for b in bdev.list_bdevs(runtime)
    }
    with pytest.raises(ValueError, match="not a multiple"):
        bdev.create_malloc(runtime, "Bad", 1000, 512)
    with pytest.raises(ValueError, match="size must be from 1"):
        bdev.create_null(runtime, "Bad", 0)
    with pytest.raises(FileNotFoundError):
        bdev.create_aio(runtime, "Bad", tmp_path / "missing")
    from pyspdk_sys.errors import DeviceNotFoundError

    with pytest.raises(DeviceNotFoundError):
        bdev.delete_bdev(runtime, "HelperMalloc")


def test_aio_on_a_file(runtime: Any, tmp_path: Any) -> None:
    from pyspdk_sys import bdev

    backing = tmp_path / "disk.img"
    backing.write_bytes(b"\0" * (4 << 20))
    name = bdev.create_aio(runtime, "AioFile", backing)
    try:
        with runtime.open_bdev(name) as device:
            assert device.size == 4 << 20
            payload = os.urandom(64 * 1024)
            device.write(1 << 20, payload)
            device.flush()
            assert device.read(1 << 20, len(payload)) == payload
        with open(backing, "rb") as raw:
            raw.seek(1 << 20)
            assert raw.read(len(payload)) == payload  # it really reached the file
    finally:
        bdev.delete_bdev(runtime, name)


def test_dma_buffer_in_use_cannot_be_freed(runtime: Any, rpc: Any, malloc: str) -> None:
    from pyspdk_sys.bdev import DmaBuffer
    from pyspdk_sys.errors import RuntimeStateError

    slow = f"Slow{malloc}"
    latency = {f"{k}_{rw}_latency": 100_000 for k in ("avg", "p99") for rw in ("read", "write")}
    rpc("bdev_delay_create", {"base_bdev_name": malloc, "name": slow, **latency})
    try:
        with runtime.open_bdev(slow) as device:
            hooks = len(runtime._teardown_hooks)
            buffer = DmaBuffer(runtime, 4096)
            future = device.read_into_async(0, buffer)
            with pytest.raises(RuntimeStateError, match="in use by 1 I/O"):
                buffer.close()
            assert future.result(timeout=10) == 4096
            many = device.read_many([0], 4096, buffer)
            assert many is buffer
            view = buffer.view[:16]
            with pytest.raises(RuntimeStateError, match="memoryviews"):
                buffer.close()
            view.release()
            buffer.close()
            assert len(runtime._teardown_hooks) == hooks
    finally:
        rpc("bdev_delay_delete", {"name": slow})


def test_device_deleted_while_open(runtime: Any, rpc: Any) -> None:
    from pyspdk_sys.errors import IoError

    rpc("bdev_malloc_create", {"name": "GoingAway", "num_blocks": 1024, "block_size": 512})
    device = runtime.open_bdev("GoingAway")
    device.write(0, b"x" * 512)
    rpc("bdev_malloc_delete", {"name": "GoingAway"})  # SPDK_BDEV_EVENT_REMOVE to our descriptor
    with pytest.raises(IoError) as caught:
        device.read(0, 512)
    assert caught.value.errno == errno.ENODEV
    with pytest.raises(IoError, match="removed"):
        device.read_async(0, 512)
    device.close()
    assert "GoingAway" not in {b["name"] for b in rpc("bdev_get_bdevs")}


def _polled_cpus(runtime: Any) -> set[int]:
    from pyspdk_sys.placement import all_held_cores, cores_of

    return {*cores_of(runtime.cpu_mask), *all_held_cores()}


def run_on_thread(fn: Any, cpu: int | None = None) -> Any:
    """fn() in a new thread (pinned to `cpu` if given); its result, or its exception here."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            if cpu is not None:
                os.sched_setaffinity(0, {cpu})
            out["result"] = fn()
        except BaseException as exc:  # handed to the caller below
            out["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(120)
    assert not thread.is_alive(), "the thread did not finish"
    if "error" in out:
        raise out["error"]
    return out["result"]


def _on_cpu(cpu: int, fn: Any) -> Any:
    """fn() in a thread pinned to `cpu`; its result, or its exception raised here."""
    return run_on_thread(fn, cpu)


def _free_cpu(runtime: Any) -> int:
    free = sorted(os.sched_getaffinity(0) - _polled_cpus(runtime))
    if not free:
        skip_or_fail("every CPU this process may use is polled by a reactor: no spin to see")
    return free[0]


def test_adaptive_waits_do_not_spin_on_a_reactors_cpu(runtime: Any, malloc: str) -> None:
    """A waiter on a CPU a reactor busy-polls sleeps at once: its spin is the reactor's loss."""
    from pyspdk_sys import lib

    reactor_cpu = min(_polled_cpus(runtime) & os.sched_getaffinity(0))
    with runtime.open_bdev(malloc) as device:
        for _ in range(200):
            device.read(0, 512)
        assert _on_cpu(reactor_cpu, lib.pyspdk_on_polled_cpu)
        assert (
            _on_cpu(reactor_cpu, lambda: lib.pyspdk_dev_adaptive_spin_ns(device._dev, False)) == 0
        )
        assert _on_cpu(reactor_cpu, lambda: device.read(0, 512)) == device.read(0, 512)
        free = _free_cpu(runtime)
        assert not _on_cpu(free, lib.pyspdk_on_polled_cpu)
        assert _on_cpu(free, lambda: lib.pyspdk_dev_adaptive_spin_ns(device._dev, False)) > 0


def test_waiting_adapts_to_the_latency_the_device_shows(
    runtime: Any, rpc: Any, malloc: str
) -> None:
    """By default a blocking wait spins up to the latency the device shows while that is
    short, hardly at all while it is long, and follows the device both ways."""
    from pyspdk_sys import lib

    free = _free_cpu(runtime)
    with runtime.open_bdev(malloc) as plain:  # the baseline: what a read shows with no delay
        for _ in range(2000):
            plain.read(0, 512)
        baseline_ns = lib.pyspdk_dev_latency_ns(plain._dev, False)
    slow = f"Slow{malloc}"
    latency = {f"{k}_{rw}_latency": 500 for k in ("avg", "p99") for rw in ("read", "write")}
    rpc("bdev_delay_create", {"base_bdev_name": malloc, "name": slow, **latency})
    try:
        with runtime.open_bdev(slow) as device:
            assert device.spin_us is None  # the default adapts
            for _ in range(100):
                device.read(0, 512)
            assert lib.pyspdk_dev_latency_ns(device._dev, False) > 400_000
            spin = _on_cpu(free, lambda: lib.pyspdk_dev_adaptive_spin_ns(device._dev, False))
            assert spin == lib.PYSPDK_ADAPT_MIN_SPIN_NS
            device.read_many([0] * 4, 512)
            assert lib.pyspdk_dev_latency_ns(device._dev, True) > 0
            for kind in ("avg_read", "p99_read"):
                rpc(
                    "bdev_delay_update_latency",
                    {"delay_bdev_name": slow, "latency_type": kind, "latency_us": 0},
                )
            for _ in range(2000):
                device.read(0, 512)
            # Back down from 500 us to about what the plain device showed (and far below
            # the 400 us it showed while delayed, whatever the load).
            shown = lib.pyspdk_dev_latency_ns(device._dev, False)
            assert shown < min(5 * baseline_ns + 25_000, 200_000), (shown, baseline_ns)
            spin = _on_cpu(free, lambda: lib.pyspdk_dev_adaptive_spin_ns(device._dev, False))
            assert 0 < spin <= lib.PYSPDK_ADAPT_MAX_SPIN_NS, spin
    finally:
        rpc("bdev_delay_delete", {"name": slow})


def test_a_fixed_spin_sets_the_cpu_a_wait_burns(runtime: Any, rpc: Any, malloc: str) -> None:
    """spin_us is what a blocking wait spins before it sleeps: the waiting thread's CPU time
    per read follows it, and stays below it, on a device slower than every spin.

    The reads of the three settings take turns, with a busy loop of the same thread as the
    baseline: a loaded machine gives them all the same share of a CPU.
    """
    slow = f"{malloc}Spin"
    latency = {f"{k}_{rw}_latency": 5_000 for k in ("avg", "p99") for rw in ("read", "write")}
    rpc("bdev_delay_create", {"base_bdev_name": malloc, "name": slow, **latency})
    spins = (0.0, 500.0, 2000.0)
    rounds = 40
    try:
        devices = [runtime.open_bdev(slow, spin_us=spin) for spin in spins]
        try:
            assert [d.spin_us for d in devices] == list(spins)

            def measure() -> tuple[list[float], float]:
                cpu = [0.0] * len(devices)
                busy_cpu = busy_wall = 0.0
                for device in devices:
                    device.read(0, 512)
                for _ in range(rounds):
                    for i, device in enumerate(devices):
                        before = time.thread_time()
                        device.read(0, 512)
                        cpu[i] += time.thread_time() - before
                    wall, before = time.monotonic(), time.thread_time()
                    while time.monotonic() - wall < 0.002:
                        pass
                    busy_cpu += time.thread_time() - before
                    busy_wall += time.monotonic() - wall
                return [c / rounds * 1e6 for c in cpu], busy_cpu / busy_wall

            (none, short, long), share = run_on_thread(measure)
        finally:
            for device in devices:
                device.close()
    finally:
        rpc("bdev_delay_delete", {"name": slow})
    detail = f"CPU us per read: {none:.0f}, {short:.0f}, {long:.0f}; CPU share {share:.2f}"
    print(detail)
    # Never more than the spin asked for (plus what a read costs without one): a wait
    # that spun the whole 5 ms would burn more than twice the 2000 us spin.
    assert long < 2000 + none + 500, detail
    assert short < 500 + none + 500, detail
    # And about what was asked for: the share of the CPU the busy loop got, times the spin.
    assert long - none > 0.5 * share * 2000, detail
    assert short - none > 0.5 * share * 500, detail
    assert long - none > 2 * (short - none), detail


def test_a_gone_peer_ends_blocking_waits_with_enotconn(runtime: Any, rpc: Any, malloc: str) -> None:
    """A bdev served by another process (vhost-user) whose peer is gone: IoError, not a hang.

    A delay bdev stands in for requests that do not come back soon; the probe
    that vhost.attach registers is replaced by one the test controls.
    """
    from pyspdk_sys import lib
    from pyspdk_sys.bdev import _peers
    from pyspdk_sys.errors import IoError

    slow = f"{malloc}Peer"
    latency = {f"{k}_{rw}_latency": 2_000_000 for k in ("avg", "p99") for rw in ("read", "write")}
    rpc("bdev_delay_create", {"base_bdev_name": malloc, "name": slow, **latency})
    gone = threading.Event()
    _peers.watch(runtime, [slow], lambda: "the peer left" if gone.is_set() else None)
    try:
        with runtime.open_bdev(slow) as dev:
            # While the peer is there, a slow request is waited for, however long.
            assert len(dev.read(0, 512)) == 512
            gone.set()
            with pytest.raises(IoError) as caught:
                dev.read(0, 512)
            # The wait gave up on the read while the device still held it (for 2 s).
            assert lib.pyspdk_dev_inflight(dev._dev) == 1
            assert caught.value.errno == errno.ENOTCONN
            assert "the peer left" in str(caught.value) and slow in str(caught.value)
            with pytest.raises(IoError) as caught:
                dev.read_many([0, 512, 1024], 512)
            assert caught.value.errno == errno.ENOTCONN
            assert lib.pyspdk_dev_inflight(dev._dev) >= 3
    finally:
        _peers.unwatch(runtime, [slow])
        rpc("bdev_delay_delete", {"name": slow})


def test_asyncio_loop_spins_for_completions_and_still_runs_its_timers(
    runtime: Any, rpc: Any, malloc: str
) -> None:
    """With I/O pending, the loop spins briefly on the queue before sleeping; timers still run."""
    from pyspdk_sys._completions import _SpinningSelector

    with runtime.open_bdev(malloc) as fast:
        fast.write(0, b"F" * 4096)
    slow = f"{malloc}Timer"
    latency = {f"{k}_{rw}_latency": 100_000 for k in ("avg", "p99") for rw in ("read", "write")}
    rpc("bdev_delay_create", {"base_bdev_name": malloc, "name": slow, **latency})
    try:
        with runtime.open_bdev(malloc, writable=False) as fast, runtime.open_bdev(slow) as dev:

            async def main() -> tuple[bool, list[str], bool]:
                for _ in range(200):
                    assert await fast.aread(0, 4096) == b"F" * 4096
                loop = asyncio.get_running_loop()
                spinning = isinstance(loop._selector, _SpinningSelector)  # type: ignore[attr-defined]
                order: list[str] = []

                async def read() -> None:
                    await dev.aread(0, 512)
                    order.append("read")

                async def tick() -> None:
                    await asyncio.sleep(0.005)
                    order.append("timer")

                await asyncio.gather(read(), tick())
                # Many slow reads in a row: the spins miss, then stop for a while.
                for _ in range(12):
                    await dev.aread(0, 512)
                skipping = loop._selector._skip > 0  # type: ignore[attr-defined]
                return spinning, order, skipping

            spinning, order, skipping = asyncio.run(main())
        assert spinning
        assert order == ["timer", "read"]  # the 5 ms timer fired during the 100 ms read
        assert skipping
    finally:
        rpc("bdev_delay_delete", {"name": slow})
