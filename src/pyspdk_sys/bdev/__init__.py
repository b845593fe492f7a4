"""Block devices: open any SPDK bdev by name and read and write bytes from Python.

- `manage`: list, describe, create and delete devices in any SPDK application
  (a Runtime or an SpdkProcess).
- `device`: BlockDevice, every I/O form over one C engine, and NVMe commands
  of one's own on NVMe bdevs.
- `_gate`: a device's admission gate and the hand-over rule; `_bounds`: its
  range and buffer checks; `_requests`: the owners of I/Os, one per request;
  `_nvme`: NVMe command requests.
"""

from ..dma import DmaBuffer
from ._nvme import NvmeCompletion
from .device import BlockDevice, open_bdev
from .manage import (
    BdevInfo,
    bdev_info,
    create_aio,
    create_error,
    create_malloc,
    create_null,
    delete_bdev,
    list_bdevs,
)

__all__ = [
    "BdevInfo",
    "BlockDevice",
    "DmaBuffer",
    "NvmeCompletion",
    "bdev_info",
    "create_aio",
    "create_error",
    "create_malloc",
    "create_null",
    "delete_bdev",
    "list_bdevs",
    "open_bdev",
]
