"""Finding, describing, creating and deleting block devices, in any SPDK application.

Every helper takes a Target: a Runtime (SPDK in this process) or an
SpdkProcess (another process). Creation and deletion go through JSON-RPC;
listing and describing read SPDK directly on its thread when it runs here,
and use bdev_get_bdevs otherwise.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .._binding import ffi, lib
from .._checks import check_int, check_name
from ..errors import DeviceNotFoundError, RpcError, rpc_meaning
from ..runtime import Runtime
from ..target import Target, check_target

__all__ = [
    "BdevInfo",
    "bdev_info",
    "create_aio",
    "create_error",
    "create_malloc",
    "create_null",
    "delete_bdev",
    "list_bdevs",
]

_IO_TYPES = {
    "read": lib.SPDK_BDEV_IO_TYPE_READ,
    "write": lib.SPDK_BDEV_IO_TYPE_WRITE,
    "unmap": lib.SPDK_BDEV_IO_TYPE_UNMAP,
    "flush": lib.SPDK_BDEV_IO_TYPE_FLUSH,
    "reset": lib.SPDK_BDEV_IO_TYPE_RESET,
    "write_zeroes": lib.SPDK_BDEV_IO_TYPE_WRITE_ZEROES,
    "compare": lib.SPDK_BDEV_IO_TYPE_COMPARE,
    "zcopy": lib.SPDK_BDEV_IO_TYPE_ZCOPY,
    "abort": lib.SPDK_BDEV_IO_TYPE_ABORT,
    "copy": lib.SPDK_BDEV_IO_TYPE_COPY,
    "nvme_admin": lib.SPDK_BDEV_IO_TYPE_NVME_ADMIN,
    "nvme_io": lib.SPDK_BDEV_IO_TYPE_NVME_IO,
    "nvme_io_md": lib.SPDK_BDEV_IO_TYPE_NVME_IO_MD,
}


@dataclass(frozen=True)
class BdevInfo:
    """What SPDK says about one block device (buf_align is 0 when read over RPC)."""

    name: str
    product_name: str
    block_size: int
    num_blocks: int
    uuid: str
    io_types: frozenset[str]
    buf_align: int

    @property
    def size(self) -> int:
        return self.block_size * self.num_blocks


def _text(pointer: Any) -> str:
    return ffi.string(pointer).decode() if pointer != ffi.NULL else ""


def describe(bdev: Any) -> BdevInfo:
    """On the SPDK thread: a snapshot of one bdev."""
    uuid = ffi.new("char[]", 40)
    lib.spdk_uuid_fmt_lower(uuid, 40, lib.spdk_bdev_get_uuid(bdev))
    return BdevInfo(
        name=_text(lib.spdk_bdev_get_name(bdev)),
        product_name=_text(lib.spdk_bdev_get_product_name(bdev)),
        block_size=lib.spdk_bdev_get_block_size(bdev),
        num_blocks=lib.spdk_bdev_get_num_blocks(bdev),
        uuid=ffi.string(uuid).decode(),
        io_types=frozenset(
            k for k, v in _IO_TYPES.items() if lib.spdk_bdev_io_type_supported(bdev, v)
        ),
        buf_align=lib.spdk_bdev_get_buf_align(bdev),
    )


def _from_rpc(entry: Mapping[str, Any]) -> BdevInfo:
    supported = entry.get("supported_io_types", {})
    return BdevInfo(
        name=entry["name"],
        product_name=entry.get("product_name", ""),
        block_size=entry["block_size"],
        num_blocks=entry["num_blocks"],
        uuid=entry.get("uuid", ""),
        io_types=frozenset(k for k in _IO_TYPES if supported.get(k)),
        buf_align=0,
    )


def _list_on_spdk_thread() -> list[BdevInfo]:
    found = []
    bdev = lib.spdk_bdev_first()
    while bdev != ffi.NULL:
        found.append(describe(bdev))
        bdev = lib.spdk_bdev_next(bdev)
    return found


def list_bdevs(target: Target) -> list[BdevInfo]:
    """Every block device of the SPDK application."""
    if isinstance(target, Runtime):
        return target.call(_list_on_spdk_thread)
    return [_from_rpc(entry) for entry in check_target(target).rpc("bdev_get_bdevs")]


def bdev_info(target: Target, name: str) -> BdevInfo:
    """One device's description; DeviceNotFoundError if there is none by that name."""
    encoded = check_name(name)
    if isinstance(target, Runtime):

        def lookup() -> BdevInfo:
            bdev = lib.spdk_bdev_get_by_name(encoded)
            if bdev == ffi.NULL:
                raise DeviceNotFoundError(f"no block device named {name!r}")
            return describe(bdev)

        return target.call(lookup)
    try:
        entries = check_target(target).rpc("bdev_get_bdevs", {"name": name})
    except RpcError as exc:
        if rpc_meaning(exc) == "no_device":
            raise DeviceNotFoundError(f"no block device named {name!r}") from None
        raise
    return _from_rpc(entries[0])


def _create_sized(target: Target, method: str, name: str, size: int, block_size: int) -> str:
    check_name(name)
    check_int("block_size", block_size, 1, 1 << 30)
    check_int("size", size, 1, (1 << 63) - 1)
    if size % block_size:
        raise ValueError(f"size {size} is not a multiple of block_size {block_size}")
    params = {"name": name, "num_blocks": size // block_size, "block_size": block_size}
    result: str = check_target(target).rpc(method, params)
    return result


def create_malloc(target: Target, name: str, size: int, block_size: int = 512) -> str:
    """A RAM disk of `size` bytes (taken from SPDK's memory); returns its name."""
    return _create_sized(target, "bdev_malloc_create", name, size, block_size)


def create_null(target: Target, name: str, size: int, block_size: int = 512) -> str:
    """A device that drops writes and reads back nothing in particular; returns its name."""
    return _create_sized(target, "bdev_null_create", name, size, block_size)


def create_aio(
    target: Target, name: str, filename: str | os.PathLike[str], block_size: int = 512
) -> str:
    """A device over a file or block device, through Linux AIO; returns its name.

    The path is resolved here: for an SpdkProcess it must name the same file there.
    """
    check_name(name)
    path = os.fspath(filename)
    if not isinstance(path, str) or "\0" in path:
        raise ValueError(f"filename must be a path without NUL, not {filename!r}")
    if not os.path.exists(path):
        raise FileNotFoundError(errno.ENOENT, "no such file for an aio bdev", path)
    check_int("block_size", block_size, 1, 1 << 30)
    params = {"name": name, "filename": os.path.abspath(path), "block_size": block_size}
    result: str = check_target(target).rpc("bdev_aio_create", params)
    return result


def create_error(target: Target, base: str) -> str:
    """An error-injection device over `base`, named EE_<base>; returns that name.

    Inject failures with target.rpc("bdev_error_inject_error", {...}).
    """
    check_name(base)
    # SPDK accepts a base that does not exist and waits for it to appear, with
    # no device made meanwhile: a name returned then would be no device's.
    bdev_info(target, base)
    check_target(target).rpc("bdev_error_create", {"base_name": base})
    name = f"EE_{base}"
    try:
        bdev_info(target, name)
    except DeviceNotFoundError:
        target.rpc("bdev_error_delete", {"name": name})
        raise DeviceNotFoundError(
            f"bdev_error_create made no device over {base!r} (is it claimed by another module?)"
        ) from None
    return name


_DELETE_METHODS = {
    "Malloc disk": ("bdev_malloc_delete", "name"),
    "Null disk": ("bdev_null_delete", "name"),
    "AIO disk": ("bdev_aio_delete", "name"),
    "Error Injection Disk": ("bdev_error_delete", "name"),
}


def delete_bdev(target: Target, name: str) -> None:
    """Delete a device made by one of the create_* helpers (others: their module's RPC)."""
    info = bdev_info(target, name)
    method = _DELETE_METHODS.get(info.product_name)
    if method is None:
        raise ValueError(
            f"{name} is a {info.product_name!r} device: delete it with its module's RPC method"
        )
    target.rpc(method[0], {method[1]: name})
