"""The validation layer, driven by Hypothesis: any argument either works or raises
TypeError/ValueError naming the parameter, never reaching C with a bad value.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

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
def test_read_many_arguments(dev: Any, offsets: Any, length: Any, depth: Any) -> None:
    try:
        dev.read_many(offsets, length, depth=depth)
    except ACCEPTED as exc:
        assert _named(exc, "offsets", "length", "depth", "block size"), exc


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
    ops=st.lists(st.tuples(st.sampled_from(["read", "write", "bogus", 3]), anything), max_size=3)
)
def test_run_batch_operations(dev: Any, ops: Any) -> None:
    with contextlib.suppress(*ACCEPTED):
        dev.run_batch(ops)
    assert dev._holds == []


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
    assert dev._holds == []
    assert len(dev._afree) == len(dev._aslots)
