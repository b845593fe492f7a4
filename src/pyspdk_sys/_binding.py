"""Load the compiled extension and check it matches the fat library.

Importing the extension loads libspdk_fat.so, and with it every SPDK, DPDK and
ISA-L constructor runs: all modules register themselves at this point.
`lib` is the extension's library less the names of every PYSPDK_HAS_* flag
that is 0 for the SPDK release compiled against (`_conditional.py`), so a
function that release lacks is an AttributeError, never a call through NULL.
"""

from __future__ import annotations

import json
import types
from typing import Any

from ._conditional import CONDITIONAL_NAMES

__all__ = [
    "BUILD_INFO",
    "BUILT_AGAINST",
    "DPDK_VERSION",
    "FEATURES",
    "JSONRPC_REQUEST_MAX_BYTES",
    "JSONRPC_REQUEST_MAX_VALUES",
    "LIBRARY_PATH",
    "SPDK_VERSION",
    "ffi",
    "lib",
    "raw_lib",
]

_NO_LIBRARY_HINT = (
    "Build and install the fat library with ./build.sh from the pyspdk-sys source tree, "
    "then reinstall this package (pip install .). For a non-standard prefix set "
    "PKG_CONFIG_PATH=<prefix>/lib/pkgconfig when installing."
)

try:
    from ._pyspdk_sys import ffi
    from ._pyspdk_sys import lib as raw_lib
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


def _without_absent(full: Any, conditional: dict[str, tuple[str, ...]]) -> Any:
    """A module holding every name of `full` but those whose flag is 0.

    Functions and constants are copied, so calls cost what they cost on the
    extension's own library object. (cffi global variables would need
    `ffi.addressof(raw_lib, name)`; the cdefs declare none.)
    """
    absent = {
        name for flag, names in conditional.items() if not getattr(full, flag) for name in names
    }
    result = types.ModuleType("pyspdk_sys.lib", "SPDK as declared in cdefs/, for this release.")
    for name in dir(full):
        if name not in absent:
            setattr(result, name, getattr(full, name))
    return result


lib: Any = _without_absent(raw_lib, CONDITIONAL_NAMES)

FEATURES: dict[str, bool] = {flag: bool(getattr(raw_lib, flag)) for flag in CONDITIONAL_NAMES}
"""Each PYSPDK_HAS_* flag: does the SPDK release compiled against have it?"""

JSONRPC_REQUEST_MAX_BYTES: int = raw_lib.PYSPDK_JSONRPC_RECV_BUF_SIZE
"""Longest request SPDK's JSON-RPC server reads (32 KiB in v26.01, 256 KiB in v26.05)."""

JSONRPC_REQUEST_MAX_VALUES: int = raw_lib.PYSPDK_JSONRPC_MAX_VALUES
"""JSON values one request may hold, names included (1024 in v26.01, 8192 in v26.05)."""


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

BUILT_AGAINST: str = _text(lib.PYSPDK_BUILT_AGAINST)
"""The library the module was compiled against: version, file, identity, prefix or bundled."""

if lib.pyspdk_fat_spdk_version_num() != lib.PYSPDK_HEADERS_VERSION_NUM:
    _headers = lib.PYSPDK_HEADERS_VERSION_NUM
    raise ImportError(
        f"pyspdk_sys was compiled against SPDK headers {_headers // 10000}."
        f"{_headers // 100 % 100:02d} but {LIBRARY_PATH} is SPDK {SPDK_VERSION}: "
        "reinstall pyspdk_sys (pip install .) against the installed fat library."
    )
