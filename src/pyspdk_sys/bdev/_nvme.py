"""NVMe commands of one's own through an NVMe bdev: building the request, reading the completion.

A command is 16 dwords; the caller gives the opcode, the namespace and
dwords 10 to 15, SPDK's NVMe bdev fills in the rest (the command id, the
data pointers; the namespace of an I/O command is always the bdev's). The
data direction comes from the opcode's low two bits, as the NVMe
specification defines it: 01 host to controller, 10 controller to host.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .._binding import ffi, lib
from .._checks import check_int
from ..dma import DmaBuffer
from ..errors import NvmeError
from ._bounds import byte_view, nbytes
from ._requests import IoDevice, Request

__all__ = ["KINDS", "NvmeCompletion", "nvme_request"]

# kind -> (engine op, bdev I/O type, what messages call it)
KINDS: dict[str, tuple[int, str, str]] = {
    "admin": (lib.PYSPDK_IO_NVME_ADMIN, "nvme_admin", "NVMe admin command"),
    "io": (lib.PYSPDK_IO_NVME_IO, "nvme_io", "NVMe I/O command"),
    "io_md": (lib.PYSPDK_IO_NVME_IO_MD, "nvme_io_md", "NVMe I/O command with metadata"),
}
_U32 = 0xFFFFFFFF
_TO_CONTROLLER = 0x1
_FROM_CONTROLLER = 0x2


@dataclass(frozen=True)
class NvmeCompletion:
    """A command that succeeded: its completion's dword 0 (a Get Features value, ...)."""

    cdw0: int
    sct: int = 0
    sc: int = 0


def nvme_request(
    device: IoDevice,
    kind: str,
    opcode: int,
    nsid: int | None,
    cdws: Mapping[str, int],
    data: Any,
    metadata: Any = None,
) -> Request:
    """The request for one command; NvmeError from it when the status is not success."""
    op, io_type, what = KINDS[kind]
    check_int("opcode", opcode, 0, 0xFF)
    if nsid is not None:
        check_int("nsid", nsid, 0, _U32)
    for name, value in cdws.items():
        check_int(name, value, 0, _U32)
    device.bounds.need_type(io_type)
    direction = opcode & 0x3
    reads = bool(direction & _FROM_CONTROLLER)
    writes = bool(direction & _TO_CONTROLLER)
    # A command of a data direction may still move none (Get Features of most
    # features): data is optional there, and refused where no data can move.
    if not direction and data is not None:
        raise ValueError(f"opcode {opcode:#04x} transfers no data: give no data")
    if kind == "io_md" and metadata is None:
        raise ValueError("an NVMe I/O command with metadata needs metadata, a buffer")
    request = Request(device, f"{what} {opcode:#04x}", op, 0, 0)
    try:
        io = request.io
        command = ffi.new("uint32_t[16]")
        command[0] = opcode
        command[1] = nsid or 0
        for index in range(10, 16):
            command[index] = cdws.get(f"cdw{index}", 0)
        request.keep.append(command)
        io.cmd = command
        io.buf, io.nbytes = _attach(request, data, reads, writes)
        io.md_buf, io.md_len = _attach(request, metadata, reads, writes)
    except BaseException:
        request.release()  # and the views it pinned
        raise
    request.length = int(io.nbytes)

    def completion() -> NvmeCompletion:
        return NvmeCompletion(int(io.cdw0), int(io.nvme_sct), int(io.nvme_sc))

    request.result = completion
    request.failure = lambda: NvmeError(
        int(io.nvme_sct),
        int(io.nvme_sc),
        dnr=None,  # the bdev layer does not carry the status's flags
        more=None,
        command=request.name,
        device=device.name,
        cdw0=int(io.cdw0),
        length=request.length,
    )
    return request


def _attach(request: Request, buffer: Any, reads: bool, writes: bool) -> tuple[Any, int]:
    """DMA memory standing for `buffer` for the command's life (pointer, length)."""
    if buffer is None:
        return ffi.NULL, 0
    if isinstance(buffer, DmaBuffer):
        return request.dma_for(buffer, buffer.size, copy_in=False), buffer.size
    view = byte_view(buffer, writable=reads)
    size = nbytes(view)
    if size == 0:
        view.release()
        raise ValueError("an NVMe command's data buffer must hold at least one byte")
    request.pin(view)
    pointer = request.dma_for(view, size, copy_in=writes)
    if reads:
        request.copies.append((view, pointer, size))
    return pointer, size
