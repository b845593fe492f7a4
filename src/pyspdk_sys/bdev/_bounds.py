"""Range and buffer checks for one device: the single home of "is this I/O well formed".

Every form (blocking, futures, asyncio, batches, read_many) asks here
before a request is built, so one bad offset gets the same words whichever
way it came. check() is the hot path's one-expression test; span() says
what exactly is wrong.
"""

from __future__ import annotations

import array
import errno
from collections.abc import Iterable, Sequence
from typing import Any

from .._checks import check_int
from ..dma import DmaBuffer

__all__ = [
    "MAX_VECTOR",
    "Bounds",
    "byte_view",
    "nbytes",
    "offset_table",
    "release_views",
    "vector_views",
]

MAX_VECTOR = 1024  # buffers in one readv/writev


class Bounds:
    """The shape of one device: its size, block size, and what it may be asked."""

    __slots__ = ("block_size", "io_types", "name", "product", "size", "writable")

    def __init__(
        self,
        name: str,
        block_size: int,
        size: int,
        writable: bool,
        io_types: Iterable[str],
        product: str,
    ) -> None:
        self.name = name
        self.block_size = block_size
        self.size = size
        self.writable = writable
        self.io_types = frozenset(io_types)
        self.product = product

    def span(self, offset: int, length: int) -> None:
        """Raise the worded error for a bad (offset, length); nothing if it is good."""
        for label, value in (("offset", offset), ("length", length)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{label} must be an int, not {type(value).__name__}")
            if value < 0:
                raise ValueError(f"{label} must not be negative, not {value}")
            if value % self.block_size:
                raise ValueError(
                    f"{label} {value} is not a multiple of the block size "
                    f"{self.block_size} of {self.name}"
                )
        if length == 0:
            raise ValueError("length must be at least one block")
        if offset + length > self.size:
            raise ValueError(
                f"{length} bytes at offset {offset} run past the end of {self.name} "
                f"({self.size} bytes)"
            )

    def check(self, offset: int, length: int) -> None:
        """span()'s checks in one expression for the hot paths; span() words the error."""
        block_size = self.block_size
        if (
            type(offset) is not int
            or type(length) is not int
            or offset < 0
            or length <= 0
            or offset % block_size
            or length % block_size
            or offset + length > self.size
        ):
            self.span(offset, length)

    def to_end(self, offset: int, length: int | None) -> int:
        """`length`, or (None) the bytes from `offset` to the end of the device."""
        if length is None:
            return self.size - offset if type(offset) is int else 0
        return length

    def blocks(self, label: str, n: int) -> int:
        """Block number or count `n` in bytes."""
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"{label} must be an int block number, not {type(n).__name__}")
        return n * self.block_size

    def need_write(self, what: str) -> None:
        if not self.writable:
            raise PermissionError(errno.EBADF, f"{self.name} is open read-only: cannot {what}")

    def need_type(self, io_type: str) -> None:
        if io_type not in self.io_types:
            raise NotImplementedError(f"{self.name} ({self.product}) does not support {io_type}")

    def many(self, length: int, depth: int | None, max_depth: int) -> None:
        """The length and depth of a read_many/write_many call."""
        check_int("length", length, 1, 1 << 40)
        if length % self.block_size:
            raise ValueError(
                f"length {length} is not a positive multiple of the block size {self.block_size}"
            )
        if depth is not None:
            check_int("depth", depth, 1, max_depth)

    def bad_offset(self, table: Sequence[int], index: int, length: int) -> ValueError:
        """The error for offsets[index], which the engine found outside the device."""
        return ValueError(
            f"offsets[{index}] = {table[index]}: not a multiple of the block size "
            f"{self.block_size}, or {length} bytes there run past the end of "
            f"{self.name} ({self.size} bytes)"
        )


def byte_view(buffer: Any, writable: bool) -> Any:
    """A DmaBuffer as is, or a flat byte memoryview of `buffer` (which pins it)."""
    if isinstance(buffer, DmaBuffer):
        return buffer
    try:
        view = memoryview(buffer)
    except TypeError:
        raise TypeError(
            f"expected a bytes-like object or DmaBuffer, not {type(buffer).__name__}"
        ) from None
    if writable and view.readonly:
        view.release()
        raise TypeError(
            f"the buffer to read into must be writable ({type(buffer).__name__} is not)"
        )
    if not view.c_contiguous:
        view.release()
        raise ValueError("the buffer must be C-contiguous")
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view


def nbytes(view: Any) -> int:
    """The size of what byte_view() returned."""
    return view.size if isinstance(view, DmaBuffer) else view.nbytes


def release_views(views: Iterable[Any]) -> None:
    """Unpin what byte_view() pinned."""
    for view in views:
        if isinstance(view, memoryview):
            view.release()


def vector_views(buffers: Sequence[Any], writable: bool) -> tuple[list[Any], list[int]]:
    """byte_view() of each buffer of a readv/writev, and their sizes (all checked)."""
    if isinstance(buffers, (bytes, bytearray, memoryview)) or not isinstance(buffers, Sequence):
        raise TypeError("buffers must be a sequence of bytes-like objects or DmaBuffers")
    if not buffers:
        raise ValueError("buffers must not be empty")
    if len(buffers) > MAX_VECTOR:
        raise ValueError(f"at most {MAX_VECTOR} buffers in one I/O, not {len(buffers)}")
    views: list[Any] = []
    try:
        for buffer in buffers:
            views.append(byte_view(buffer, writable))
        lengths = [nbytes(v) for v in views]
        if 0 in lengths:
            raise ValueError("every buffer must hold at least one byte")
    except BaseException:
        release_views(views)
        raise
    return views, lengths


def offset_table(offsets: Iterable[int]) -> array.array[int]:
    """read_many's offsets as the engine takes them (unsigned 64-bit)."""
    if isinstance(offsets, (str, bytes, bytearray)):
        raise TypeError("offsets must be an iterable of ints")
    try:
        table = array.array("Q", offsets)
    except OverflowError:
        raise ValueError("offsets must not be negative (nor 2**64 or more)") from None
    except TypeError:
        raise TypeError("offsets must be an iterable of ints") from None
    return table
