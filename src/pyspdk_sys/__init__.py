"""SPDK in-process from Python, over one fat library in which every module registers.

`ffi` and `lib` are the raw cffi binding: `lib` holds every declared SPDK
function, type constant and C shim that the SPDK release compiled against has
(`FEATURES` says which release-dependent groups are there). Importing this package loads
libspdk_fat.so, so every SPDK module registers itself before the first call.
"""

from ._binding import (
    BUILD_INFO,
    BUILT_AGAINST,
    DPDK_VERSION,
    FEATURES,
    LIBRARY_PATH,
    SPDK_VERSION,
    ffi,
    lib,
)

__version__ = "0.1.0"

__all__ = [
    "BUILD_INFO",
    "BUILT_AGAINST",
    "DPDK_VERSION",
    "FEATURES",
    "LIBRARY_PATH",
    "SPDK_VERSION",
    "__version__",
    "ffi",
    "lib",
]
