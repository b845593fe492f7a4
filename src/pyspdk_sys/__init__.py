"""SPDK in-process from Python, over one fat library in which every module registers.

`ffi` and `lib` are the raw cffi binding: `lib` holds every declared SPDK
function, type constant and C shim that the SPDK release compiled against has
(`FEATURES` says which release-dependent groups are there). Importing this package loads
libspdk_fat.so, so every SPDK module registers itself before the first call.
"""

# The modules that provide a Runtime's services by name (runtime.SERVICES)
# register them as they load: the package loads them, so `Runtime.rpc` and
# `Runtime.open_bdev` work whatever the program imported first.
from . import bdev as _bdev  # noqa: F401 (registers open_bdev)
from . import rpc as _rpc  # noqa: F401 (registers rpc)
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
