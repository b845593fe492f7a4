"""Typed NVMe admin and I/O commands over BlockDevice.nvme_admin / nvme_io.

Each helper builds one command as the NVMe base specification lays it out
and parses what comes back (Identify data, log pages) into a dataclass.
They work on any NVMe bdev: a PCIe controller, or NVMe over fabrics (where
the target answers what it implements: SPDK's answers Identify, Get Log
Page and Get/Set Features, and refuses Format NVM).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from ._checks import check_bool, check_int
from .bdev._nvme import NvmeCompletion
from .bdev.device import BlockDevice

__all__ = [
    "ControllerIdentity",
    "LbaFormat",
    "NamespaceIdentity",
    "SmartLog",
    "dataset_management",
    "format_nvm",
    "get_features",
    "get_log_page",
    "identify_controller",
    "identify_namespace",
    "namespace_id",
    "set_features",
    "smart_log",
]

# Admin opcodes and I/O opcodes (NVMe base specification).
_GET_LOG_PAGE = 0x02
_IDENTIFY = 0x06
_SET_FEATURES = 0x09
_GET_FEATURES = 0x0A
_FORMAT_NVM = 0x80
_DATASET_MANAGEMENT = 0x09
_CNS_NAMESPACE = 0x00
_CNS_CONTROLLER = 0x01
_IDENTIFY_BYTES = 4096
_SMART_LID = 0x02
_SMART_BYTES = 512
_MAX_RANGES = 256  # Dataset Management: NR is 0-based in 8 bits


def _text(data: bytes | bytearray, start: int, end: int) -> str:
    return bytes(data[start:end]).decode("ascii", "replace").rstrip(" \0")


def _u(data: bytes | bytearray, start: int, size: int) -> int:
    return int.from_bytes(data[start : start + size], "little")


@dataclass(frozen=True)
class ControllerIdentity:
    """Identify Controller (CNS 01h): who the controller is and what it can do."""

    vid: int  # PCI vendor id
    ssvid: int
    serial: str
    model: str
    firmware: str
    ieee_oui: int
    mdts: int  # maximum data transfer size, as a power of two of the minimum page size (0: none)
    cntlid: int
    version: tuple[int, int, int]  # NVMe version (major, minor, tertiary)
    oacs: int  # optional admin commands supported (bit 1: Format NVM)
    sqes: int
    cqes: int
    maxcmd: int
    nn: int  # namespaces
    oncs: int  # optional NVM commands supported (bit 2: Dataset Management)
    vwc: int  # volatile write cache
    sgls: int
    subnqn: str
    raw: bytes

    @classmethod
    def parse(cls, data: bytes | bytearray) -> ControllerIdentity:
        ver = _u(data, 80, 4)
        return cls(
            vid=_u(data, 0, 2),
            ssvid=_u(data, 2, 2),
            serial=_text(data, 4, 24),
            model=_text(data, 24, 64),
            firmware=_text(data, 64, 72),
            ieee_oui=_u(data, 73, 3),
            mdts=data[77],
            cntlid=_u(data, 78, 2),
            version=(ver >> 16, (ver >> 8) & 0xFF, ver & 0xFF),
            oacs=_u(data, 256, 2),
            sqes=data[512],
            cqes=data[513],
            maxcmd=_u(data, 514, 2),
            nn=_u(data, 516, 4),
            oncs=_u(data, 520, 2),
            vwc=data[525],
            sgls=_u(data, 536, 4),
            subnqn=_text(data, 768, 1024),
            raw=bytes(data),
        )


@dataclass(frozen=True)
class LbaFormat:
    """One LBA format of a namespace."""

    block_size: int
    metadata_size: int
    relative_performance: int  # 0 best .. 3 degraded


@dataclass(frozen=True)
class NamespaceIdentity:
    """Identify Namespace (CNS 00h): size, capacity, use and formats of one namespace."""

    nsid: int
    size: int  # NSZE, in blocks
    capacity: int  # NCAP, in blocks
    utilization: int  # NUSE, in blocks
    features: int  # NSFEAT
    formats: tuple[LbaFormat, ...]
    format_index: int  # the LBA format in use
    block_size: int  # of the format in use
    metadata_size: int
    raw: bytes

    @classmethod
    def parse(cls, nsid: int, data: bytes | bytearray) -> NamespaceIdentity:
        count = data[25] + 1  # NLBAF is 0-based
        formats = tuple(
            LbaFormat(
                block_size=1 << data[128 + 4 * i + 2] if data[128 + 4 * i + 2] else 0,
                metadata_size=_u(data, 128 + 4 * i, 2),
                relative_performance=data[128 + 4 * i + 3] & 0x3,
            )
            for i in range(min(count, 64))
        )
        flbas = data[26]
        index = (flbas & 0xF) | ((flbas >> 5) & 0x3) << 4
        current = formats[index] if index < len(formats) else LbaFormat(0, 0, 0)
        return cls(
            nsid=nsid,
            size=_u(data, 0, 8),
            capacity=_u(data, 8, 8),
            utilization=_u(data, 16, 8),
            features=data[24],
            formats=formats,
            format_index=index,
            block_size=current.block_size,
            metadata_size=current.metadata_size,
            raw=bytes(data),
        )


@dataclass(frozen=True)
class SmartLog:
    """The SMART / Health Information log page (LID 02h)."""

    critical_warning: int
    temperature_kelvin: int
    available_spare: int  # percent
    available_spare_threshold: int
    percentage_used: int
    data_units_read: int  # thousands of 512-byte units
    data_units_written: int
    host_read_commands: int
    host_write_commands: int
    controller_busy_minutes: int
    power_cycles: int
    power_on_hours: int
    unsafe_shutdowns: int
    media_errors: int
    error_log_entries: int
    warning_temperature_minutes: int
    critical_temperature_minutes: int
    raw: bytes

    @classmethod
    def parse(cls, data: bytes | bytearray) -> SmartLog:
        return cls(
            critical_warning=data[0],
            temperature_kelvin=_u(data, 1, 2),
            available_spare=data[3],
            available_spare_threshold=data[4],
            percentage_used=data[5],
            data_units_read=_u(data, 32, 16),
            data_units_written=_u(data, 48, 16),
            host_read_commands=_u(data, 64, 16),
            host_write_commands=_u(data, 80, 16),
            controller_busy_minutes=_u(data, 96, 16),
            power_cycles=_u(data, 112, 16),
            power_on_hours=_u(data, 128, 16),
            unsafe_shutdowns=_u(data, 144, 16),
            media_errors=_u(data, 160, 16),
            error_log_entries=_u(data, 176, 16),
            warning_temperature_minutes=_u(data, 192, 4),
            critical_temperature_minutes=_u(data, 196, 4),
            raw=bytes(data),
        )


def _check_device(dev: Any) -> BlockDevice:
    if not isinstance(dev, BlockDevice):
        raise TypeError(f"dev must be a BlockDevice, not {type(dev).__name__}")
    return dev


def identify_controller(dev: BlockDevice, *, timeout: float | None = 30.0) -> ControllerIdentity:
    """Identify Controller of the controller behind an NVMe bdev."""
    data = bytearray(_IDENTIFY_BYTES)
    _check_device(dev).nvme_admin(_IDENTIFY, cdw10=_CNS_CONTROLLER, data=data, timeout=timeout)
    return ControllerIdentity.parse(data)


def namespace_id(dev: BlockDevice) -> int:
    """The NVMe namespace id behind an NVMe bdev (from SPDK's description of it)."""
    entries = _check_device(dev).runtime.rpc("bdev_get_bdevs", {"name": dev.name})
    try:
        return int(entries[0]["driver_specific"]["nvme"][0]["ns_data"]["id"])
    except (IndexError, KeyError, TypeError):
        raise ValueError(f"{dev.name} is not an NVMe bdev: SPDK names no namespace") from None


def identify_namespace(
    dev: BlockDevice, nsid: int | None = None, *, timeout: float | None = 30.0
) -> NamespaceIdentity:
    """Identify Namespace of `nsid` (default: the bdev's own namespace)."""
    if nsid is None:
        nsid = namespace_id(dev)
    check_int("nsid", nsid, 1, 0xFFFFFFFE)
    data = bytearray(_IDENTIFY_BYTES)
    _check_device(dev).nvme_admin(
        _IDENTIFY, nsid=nsid, cdw10=_CNS_NAMESPACE, data=data, timeout=timeout
    )
    return NamespaceIdentity.parse(nsid, data)


def get_log_page(
    dev: BlockDevice,
    lid: int,
    length: int,
    *,
    nsid: int = 0xFFFFFFFF,
    offset: int = 0,
    lsp: int = 0,
    retain: bool = False,
    timeout: float | None = 30.0,
) -> bytes:
    """Get Log Page `lid`: `length` bytes (a multiple of 4) from byte `offset` of it."""
    check_int("lid", lid, 0, 0xFF)
    check_int("length", length, 4, 1 << 32)
    if length % 4:
        raise ValueError(f"length must be a multiple of 4 (log pages are in dwords), not {length}")
    check_int("offset", offset, 0, (1 << 64) - 4)
    if offset % 4:
        raise ValueError(f"offset must be a multiple of 4, not {offset}")
    check_int("lsp", lsp, 0, 0x7F)
    check_bool("retain", retain)
    dwords = length // 4 - 1
    data = bytearray(length)
    _check_device(dev).nvme_admin(
        _GET_LOG_PAGE,
        nsid=nsid,
        cdw10=lid | lsp << 8 | int(retain) << 15 | (dwords & 0xFFFF) << 16,
        cdw11=dwords >> 16,
        cdw12=offset & 0xFFFFFFFF,
        cdw13=offset >> 32,
        data=data,
        timeout=timeout,
    )
    return bytes(data)


def smart_log(dev: BlockDevice, *, timeout: float | None = 30.0) -> SmartLog:
    """The SMART / Health Information log page, parsed."""
    return SmartLog.parse(get_log_page(dev, _SMART_LID, _SMART_BYTES, timeout=timeout))


def get_features(
    dev: BlockDevice,
    fid: int,
    *,
    select: int = 0,
    cdw11: int = 0,
    nsid: int = 0,
    data: Any = None,
    timeout: float | None = 30.0,
) -> int:
    """Get Features `fid`: the value (completion dword 0); `select` 0 current, 1 default,
    2 saved, 3 supported capabilities."""
    check_int("fid", fid, 0, 0xFF)
    check_int("select", select, 0, 3)
    completion = _check_device(dev).nvme_admin(
        _GET_FEATURES,
        nsid=nsid,
        cdw10=fid | select << 8,
        cdw11=cdw11,
        data=data,
        timeout=timeout,
    )
    return completion.cdw0


def set_features(
    dev: BlockDevice,
    fid: int,
    value: int,
    *,
    save: bool = False,
    nsid: int = 0,
    data: Any = None,
    timeout: float | None = 30.0,
) -> int:
    """Set Features `fid` to `value` (dword 11); returns the completion's dword 0."""
    check_int("fid", fid, 0, 0xFF)
    check_bool("save", save)
    completion = _check_device(dev).nvme_admin(
        _SET_FEATURES,
        nsid=nsid,
        cdw10=fid | int(save) << 31,
        cdw11=value,
        data=data,
        timeout=timeout,
    )
    return completion.cdw0


def format_nvm(
    dev: BlockDevice,
    lbaf: int,
    *,
    nsid: int | None = None,
    secure_erase: int = 0,
    protection: int = 0,
    timeout: float | None = 600.0,
) -> NvmeCompletion:
    """Format NVM: the namespace (default: the bdev's) to LBA format `lbaf`.

    Every block's data is lost. A controller that does not offer Format NVM
    (Identify Controller's OACS bit 1) answers with NvmeError.
    """
    check_int("lbaf", lbaf, 0, 63)
    check_int("secure_erase", secure_erase, 0, 2)
    check_int("protection", protection, 0, 3)
    if nsid is None:
        nsid = namespace_id(dev)
    cdw10 = (lbaf & 0xF) | protection << 5 | secure_erase << 9 | (lbaf >> 4) << 12
    return _check_device(dev).nvme_admin(_FORMAT_NVM, nsid=nsid, cdw10=cdw10, timeout=timeout)


def dataset_management(
    dev: BlockDevice,
    ranges: list[tuple[int, int]],
    *,
    deallocate: bool = True,
    timeout: float | None = 30.0,
) -> NvmeCompletion:
    """Dataset Management on `ranges` of (first block, block count): deallocate them
    (trim) by default."""
    _check_device(dev)
    if not isinstance(ranges, (list, tuple)) or not ranges:
        raise ValueError("ranges must be a non-empty list of (first block, block count)")
    if len(ranges) > _MAX_RANGES:
        raise ValueError(f"at most {_MAX_RANGES} ranges, not {len(ranges)}")
    check_bool("deallocate", deallocate)
    table = bytearray()
    for index, item in enumerate(ranges):
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            raise TypeError(f"ranges[{index}] must be (first block, block count), not {item!r}")
        first, count = item
        check_int(f"ranges[{index}] first block", first, 0, (1 << 64) - 1)
        check_int(f"ranges[{index}] block count", count, 1, 0xFFFFFFFF)
        if first + count > dev.num_blocks:
            raise ValueError(
                f"ranges[{index}]: {count} blocks at block {first} run past the end of "
                f"{dev.name} ({dev.num_blocks} blocks)"
            )
        table += struct.pack("<IIQ", 0, count, first)
    return dev.nvme_io(
        _DATASET_MANAGEMENT,
        cdw10=len(ranges) - 1,
        cdw11=int(deallocate) << 2,
        data=table,
        timeout=timeout,
    )
