"""The validation layer, driven by Hypothesis: any argument either works or raises
TypeError/ValueError naming the parameter, never reaching C with a bad value.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(1 << 70), max_value=1 << 70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
    st.binary(max_size=5),
    st.lists(st.integers(), max_size=3),
)
ACCEPTED = (TypeError, ValueError)
SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _named(exc: BaseException, *names: str) -> bool:
    return any(name in str(exc) for name in names)


@SETTINGS
@given(queue_depth=anything, spin_us=anything, timeout=anything, writable=anything)
def test_open_options(
    runtime: Any, malloc: str, queue_depth: Any, spin_us: Any, timeout: Any, writable: Any
) -> None:
    try:
        dev = runtime.open_bdev(
            malloc, queue_depth=queue_depth, spin_us=spin_us, timeout=timeout, writable=writable
        )
    except ACCEPTED as exc:
        assert _named(exc, "queue_depth", "spin_us", "timeout", "writable"), exc
        return
    with dev:
        assert isinstance(writable, bool)
        assert isinstance(queue_depth, int) and 1 <= queue_depth <= 65536
        assert spin_us is None or math.isfinite(float(spin_us))
        assert timeout is None or timeout > 0
        assert len(dev.read(0, 512)) == 512


@pytest.fixture
def dev(runtime: Any, malloc: str) -> Any:
    with runtime.open_bdev(malloc) as device:
        yield device


@SETTINGS
@given(offset=anything, length=anything)
def test_read_ranges(dev: Any, offset: Any, length: Any) -> None:
    for call in (dev.read, lambda o, n: dev.read_async(o, n).result(10)):
        try:
            data = call(offset, length)
        except ACCEPTED as exc:
            assert _named(exc, "offset", "length", "block", "offsets"), exc
            continue
        assert type(offset) is int and type(length) is int
        assert offset % 512 == 0 and length % 512 == 0 and length > 0
        assert offset + length <= dev.size and len(data) == length


@SETTINGS
@given(
    offsets=st.one_of(anything, st.lists(st.integers(-(1 << 65), 1 << 65), max_size=4)),
    length=anything,
    depth=anything,
)
@example(offsets=[0, 4096], length=512, depth=None)  # the successes are rare draws: these run
@example(offsets=[], length=4096, depth=1)
def test_read_many_arguments(dev: Any, offsets: Any, length: Any, depth: Any) -> None:
    try:
        data = dev.read_many(offsets, length, depth=depth)
    except ACCEPTED as exc:
        assert _named(exc, "offsets", "length", "depth", "block size"), exc
        return
    # It worked: so every argument was one read_many takes, and it read what read() reads.
    assert isinstance(offsets, list) and all(type(o) is int for o in offsets)
    assert type(length) is int and length > 0 and length % 512 == 0
    assert all(o >= 0 and o % 512 == 0 and o + length <= dev.size for o in offsets)
    assert depth is None or (type(depth) is int and depth >= 1)
    assert data == b"".join(dev.read(o, length) for o in offsets)


@SETTINGS
@given(size=anything, align=anything)
def test_dma_buffer_arguments(runtime: Any, size: Any, align: Any) -> None:
    from pyspdk_sys.bdev import DmaBuffer

    try:
        buffer = DmaBuffer(runtime, size, align=align)
    except ACCEPTED as exc:
        assert _named(exc, "size", "align"), exc
        return
    except MemoryError:
        assert size > 1 << 20
        return
    with buffer:
        assert buffer.size == size and int(align) & (int(align) - 1) == 0


@SETTINGS
@given(
    ops=st.lists(
        st.tuples(st.sampled_from(["read", "write", "flush", "bogus", 3]), anything), max_size=3
    )
)
@example(ops=[("flush", 0), ("flush", 4096)])
@example(ops=[("flush", 100)])
def test_run_batch_operations(dev: Any, ops: Any) -> None:
    try:
        results = dev.run_batch(ops)
    except ACCEPTED as exc:
        assert _named(exc, "batch operation", "offset", "length"), exc
    else:
        # Only a flush takes a single argument (its offset): that and nothing else works.
        assert all(op[0] == "flush" for op in ops), ops
        assert all(type(op[1]) is int and 0 <= op[1] < dev.size for op in ops), ops
        assert all(op[1] % 512 == 0 for op in ops), ops
        assert results == [None] * len(ops)
    assert dev.gate.holds == []


@pytest.mark.parametrize("offset", [-512, -(1 << 70), 1 << 64, (1 << 70) * 512])
def test_async_offsets_outside_what_the_engine_takes(dev: Any, offset: int) -> None:
    """Offsets the engine's unsigned call cannot even take get the worded error, every form."""
    import asyncio

    dev.read_async(0, 512).result(10)  # a slot with room for 512 bytes: the engine checks
    calls = [
        lambda: dev.read_async(offset, 512).result(10),
        lambda: dev.write_async(offset, b"w" * 512).result(10),
        lambda: asyncio.run(dev.aread(offset, 512)),
        lambda: asyncio.run(dev.awrite(offset, b"w" * 512)),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="offset"):
            call()
    assert dev.gate.holds == []
    assert len(dev._afree) == len(dev._aslots)
