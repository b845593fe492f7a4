"""Data integrity under load: many writers, distinct and overlapping ranges.

Every 4 KiB record names its writer, sequence number and offset, and its body
is derived from them, so a record read back can be checked wherever it came
from: torn, misplaced or stale data shows as a mismatch. In a writer's private
range the record must be exactly the one that writer wrote last.
Each form moves at least 200,000 I/Os.
"""

from __future__ import annotations

import asyncio
import struct
import threading
from collections.abc import Iterator
from concurrent.futures import wait
from typing import Any

import pytest

from conftest import run_threads

RECORD = 4096
MAGIC = 0x5059_5350_444B_0001
HEADER = struct.Struct("<QQQQ")
FILL = struct.Struct("<Q")
WRITERS = 8
PRIVATE_SLOTS = 256  # per writer
SHARED_SLOTS = 64  # written by everyone
TOTAL_IOS = 200_000


def record(writer: int, seq: int, offset: int) -> bytes:
    body = FILL.pack((writer * 1_000_003 + seq * 7_919 + offset) & 0xFFFF_FFFF_FFFF_FFFF)
    return HEADER.pack(MAGIC, writer, seq, offset) + body * ((RECORD - HEADER.size) // 8)


def check(data: bytes, offset: int, expect: tuple[int, int] | None = None) -> None:
    magic, writer, seq, where = HEADER.unpack_from(data)
    assert magic == MAGIC, f"no record at {offset}"
    assert where == offset, f"record for {where} found at {offset}"
    assert data == record(writer, seq, where), f"corrupt record at {offset}"
    if expect is not None:
        assert (writer, seq) == expect, f"stale record at {offset}: {(writer, seq)} != {expect}"


def rounds_for(ios_per_round: int) -> int:
    """Rounds per writer so that all writers together move at least TOTAL_IOS."""
    return -(-TOTAL_IOS // (WRITERS * ios_per_round))


def private_offset(writer: int, slot: int) -> int:
    return (SHARED_SLOTS + writer * PRIVATE_SLOTS + slot) * RECORD


def shared_offset(slot: int) -> int:
    return slot * RECORD


@pytest.fixture
def device(runtime: Any, rpc: Any) -> Iterator[Any]:
    name = "IntegrityDisk"
    slots = SHARED_SLOTS + WRITERS * PRIVATE_SLOTS
    rpc("bdev_malloc_create", {"name": name, "num_blocks": slots * 8, "block_size": 512})
    dev = runtime.open_bdev(name, queue_depth=128)
    yield dev
    dev.close()
    rpc("bdev_malloc_delete", {"name": name})


def run_writers(body: Any) -> None:
    errors = run_threads(body, WRITERS, timeout=None)  # a soak may run long
    if errors:
        failed = f"{len(errors)} of {WRITERS} writers failed; the first: {errors[0]!r}"
        raise AssertionError(failed) from errors[0]


def final_check(device: Any, last: dict[int, tuple[int, int]], moved: list[int]) -> None:
    """Every record is the last one written; and the form moved the I/Os it promises."""
    for offset, expect in last.items():
        check(device.read(offset, RECORD), offset, expect)
    for slot in range(SHARED_SLOTS):
        check(device.read(shared_offset(slot), RECORD), shared_offset(slot))
    assert len(moved) == WRITERS and all(moved), moved
    assert sum(moved) >= TOTAL_IOS, moved


def test_blocking_threads(device: Any) -> None:
    rounds = rounds_for(2)  # a write and a read per round
    last: dict[int, tuple[int, int]] = {}
    moved = [0] * WRITERS
    lock = threading.Lock()

    def body(writer: int) -> None:
        mine: dict[int, tuple[int, int]] = {}
        for seq in range(rounds):
            if seq % 4 == 3:
                offset = shared_offset((seq * 7 + writer) % SHARED_SLOTS)
                device.write(offset, record(writer, seq, offset))
                check(device.read(offset, RECORD), offset)
            else:
                offset = private_offset(writer, (seq * 13) % PRIVATE_SLOTS)
                device.write(offset, record(writer, seq, offset))
                mine[offset] = (writer, seq)
                check(device.read(offset, RECORD), offset, mine[offset])
            moved[writer] += 2
        with lock:
            last.update(mine)

    run_writers(body)
    final_check(device, last, moved)


def test_futures(device: Any) -> None:
    batch = 64
    rounds = rounds_for(2 * batch)
    last: dict[int, tuple[int, int]] = {}
    moved = [0] * WRITERS
    lock = threading.Lock()

    def body(writer: int) -> None:
        for seq in range(rounds):
            offsets = [
                private_offset(writer, (seq * batch + i) % PRIVATE_SLOTS) for i in range(batch - 8)
            ]
            offsets += [shared_offset((seq + writer + i) % SHARED_SLOTS) for i in range(8)]
            done, _ = wait(
                [device.write_async(o, record(writer, seq, o)) for o in offsets], timeout=60
            )
            assert len(done) == batch
            for future in done:
                assert future.result() is None
            reads = [device.read_async(o, RECORD) for o in offsets]
            for offset, future in zip(offsets, reads, strict=True):
                private = offset >= shared_offset(SHARED_SLOTS)
                check(future.result(timeout=60), offset, (writer, seq) if private else None)
            moved[writer] += 2 * batch
            with lock:
                last.update({o: (writer, seq) for o in offsets if o >= shared_offset(SHARED_SLOTS)})

    run_writers(body)
    final_check(device, last, moved)


def test_asyncio(device: Any) -> None:
    batch = 64
    rounds = rounds_for(2 * batch)
    last: dict[int, tuple[int, int]] = {}
    moved = [0] * WRITERS

    async def writer_task(writer: int) -> None:
        for seq in range(rounds):
            offsets = [
                private_offset(writer, (seq * batch + i) % PRIVATE_SLOTS) for i in range(batch - 8)
            ]
            offsets += [shared_offset((seq * 3 + writer + i) % SHARED_SLOTS) for i in range(8)]
            written = await asyncio.gather(
                *(device.awrite(o, record(writer, seq, o)) for o in offsets)
            )
            assert written == [None] * batch
            datas = await asyncio.gather(*(device.aread(o, RECORD) for o in offsets))
            for offset, data in zip(offsets, datas, strict=True):
                private = offset >= shared_offset(SHARED_SLOTS)
                check(data, offset, (writer, seq) if private else None)
                if private:
                    last[offset] = (writer, seq)
            moved[writer] += 2 * batch

    async def main() -> None:
        await asyncio.gather(*(writer_task(w) for w in range(WRITERS)))

    asyncio.run(main())
    final_check(device, last, moved)


def test_batched(device: Any) -> None:
    batch = 256
    rounds = rounds_for(2 * batch)
    last: dict[int, tuple[int, int]] = {}
    moved = [0] * WRITERS
    lock = threading.Lock()

    def body(writer: int) -> None:
        for seq in range(rounds):
            offsets = [private_offset(writer, i) for i in range(PRIVATE_SLOTS)]
            offsets = offsets[: batch - 16]
            offsets += [shared_offset((seq * 5 + writer + i) % SHARED_SLOTS) for i in range(16)]
            written = device.run_batch([("write", o, record(writer, seq, o)) for o in offsets])
            assert written == [None] * len(offsets)
            datas = device.run_batch([("read", o, RECORD) for o in offsets])
            for offset, data in zip(offsets, datas, strict=True):
                private = offset >= shared_offset(SHARED_SLOTS)
                check(data, offset, (writer, seq) if private else None)
            moved[writer] += 2 * len(offsets)
            with lock:
                last.update({o: (writer, seq) for o in offsets if o >= shared_offset(SHARED_SLOTS)})

    run_writers(body)
    final_check(device, last, moved)


def test_many(device: Any) -> None:
    batch = 128
    rounds = rounds_for(2 * batch)
    last: dict[int, tuple[int, int]] = {}
    moved = [0] * WRITERS
    lock = threading.Lock()

    def body(writer: int) -> None:
        for seq in range(rounds):
            offsets = [
                private_offset(writer, (seq * 31 + i) % PRIVATE_SLOTS) for i in range(batch - 8)
            ]
            offsets += [shared_offset((seq * 11 + writer + i) % SHARED_SLOTS) for i in range(8)]
            device.write_many(offsets, RECORD, b"".join(record(writer, seq, o) for o in offsets))
            data = device.read_many(offsets, RECORD)
            assert len(data) == len(offsets) * RECORD
            for index, offset in enumerate(offsets):
                private = offset >= shared_offset(SHARED_SLOTS)
                chunk = data[index * RECORD : (index + 1) * RECORD]
                check(chunk, offset, (writer, seq) if private else None)
            moved[writer] += 2 * len(offsets)
            with lock:
                last.update({o: (writer, seq) for o in offsets if o >= shared_offset(SHARED_SLOTS)})

    run_writers(body)
    final_check(device, last, moved)
