"""Load the compiled extension and check it matches the fat library.

Importing the extension loads libspdk_fat.so, and with it every SPDK, DPDK and
ISA-L constructor runs: all modules register themselves at this point.
"""

from __future__ import annotations

import json
from typing import Any

_NO_LIBRARY_HINT = (
    "Build and install the fat library with ./build.sh from the pyspdk-sys source tree, "
    "then reinstall this package (pip install .). For a non-standard prefix set "
    "PKG_CONFIG_PATH=<prefix>/lib/pkgconfig when installing."
)

try:
    from ._pyspdk_sys import ffi, lib
except ImportError as exc:
    message = str(exc)
    if "libspdk_fat" in message:
        raise ImportError(
            f"pyspdk_sys cannot load the SPDK fat library ({message}). {_NO_LIBRARY_HINT}"
        ) from exc
    if "undefined symbol" in message:
        raise ImportError(
            f"pyspdk_sys was compiled against a different fat library than the one found "
            f"({message}). Rebuild the library with this package's build.sh and reinstall "
            f"the package."
        ) from exc
    if "_pyspdk_sys" in message:
        raise ImportError(
            "pyspdk_sys is not compiled: install it with 'pip install .' from the source "
            f"tree, after building the fat library. {_NO_LIBRARY_HINT}"
        ) from exc
    raise


def _text(pointer: Any) -> str:
    return ffi.string(pointer).decode() if pointer != ffi.NULL else ""


SPDK_VERSION: str = _text(lib.pyspdk_fat_spdk_version()).removeprefix("SPDK v")
"""SPDK release the fat library was built from, for example '26.01'."""

DPDK_VERSION: str = _text(lib.rte_version()).removeprefix("DPDK ")
"""DPDK release fused into the fat library, for example '25.11.0'."""

LIBRARY_PATH: str = _text(lib.pyspdk_fat_library_path())
"""Path of the fat library this process loaded."""

BUILD_INFO: dict[str, Any] = json.loads(_text(lib.pyspdk_fat_build_info()))
"""What build.sh recorded in the library: versions, CPU baseline, configure args."""

if lib.pyspdk_fat_spdk_version_num() != lib.PYSPDK_HEADERS_VERSION_NUM:
    _headers = lib.PYSPDK_HEADERS_VERSION_NUM
    raise ImportError(
        f"pyspdk_sys was compiled against SPDK headers {_headers // 10000}."
        f"{_headers // 100 % 100:02d} but {LIBRARY_PATH} is SPDK {SPDK_VERSION}: "
        "reinstall pyspdk_sys (pip install .) against the installed fat library."
    )
