"""Build the _pyspdk_sys extension from the curated declarations in cdefs/.

cffi runs this file at `pip install` time (see setup.py). The declarations are
joined in the explicit order of AREAS; each area names the SPDK headers the
compiler checks it against. The extension links the fat library found with
pkg-config (name `spdk_fat`); set PKG_CONFIG_PATH to `<prefix>/lib/pkgconfig`
for a prefix pkg-config does not search.

One set of declarations serves every release in SUPPORTED: what only some
releases have is behind a PYSPDK_HAS_* flag (`_conditional.py`). The C source
records the library it is built against (BUILD_KEY), so switching libraries
changes the source and setuptools rebuilds instead of reusing old objects.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import cffi

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_DIR = PACKAGE_DIR.parents[1]
CDEFS_DIR = PROJECT_DIR / "cdefs"
SHIMS_DIR = PACKAGE_DIR / "_shims"

# The SPDK releases these declarations compile against (major, minor). The
# preamble refuses other headers; the package refuses at import a library
# from another release than its headers.
SUPPORTED: tuple[tuple[int, int], ...] = ((26, 1), (26, 5))

# SPDK's JSON-RPC server limits (lib/jsonrpc/jsonrpc_internal.h, not installed).
JSONRPC_LIMITS = """\
#if SPDK_VERSION >= SPDK_VERSION_NUM(26, 5, 0)
static const long PYSPDK_JSONRPC_RECV_BUF_SIZE = 256 * 1024;
static const long PYSPDK_JSONRPC_MAX_VALUES = 8192;
#else
static const long PYSPDK_JSONRPC_RECV_BUF_SIZE = 32 * 1024;
static const long PYSPDK_JSONRPC_MAX_VALUES = 1024;
#endif
"""


def _load_conditional() -> ModuleType:
    """`_conditional.py`, by path: at build time the package is not importable."""
    spec = importlib.util.spec_from_file_location(
        "_pyspdk_sys_conditional", PACKAGE_DIR / "_conditional.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # as an import would: typing looks it up there
    spec.loader.exec_module(module)
    return module


conditional = _load_conditional()

# (declarations file in cdefs/, SPDK headers it mirrors), in dependency order:
# a file may use types declared by the files before it, never after.
AREAS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("types.h", ("spdk/stdinc.h", "spdk/uuid.h")),
    ("env.h", ("spdk/env.h", "spdk/env_dpdk.h")),
    ("log.h", ("spdk/log.h",)),
    ("thread.h", ("spdk/thread.h", "spdk/cpuset.h")),
    ("json.h", ("spdk/json.h",)),
    ("jsonrpc.h", ("spdk/jsonrpc.h",)),
    ("rpc.h", ("spdk/rpc.h",)),
    ("init.h", ("spdk/init.h",)),
    ("event.h", ("spdk/event.h",)),
    ("bdev.h", ("spdk/bdev.h",)),
    ("bdev_module.h", ("spdk/bdev_module.h",)),
    ("accel.h", ("spdk/accel.h", "spdk/accel_module.h")),
    ("sock.h", ("spdk/sock.h",)),
    ("nvme.h", ("spdk/nvme.h",)),
    ("nvmf.h", ("spdk/nvmf.h", "spdk/nvmf_transport.h")),
    ("fsdev.h", ("spdk/fsdev.h", "spdk/fsdev_module.h")),
    ("trace.h", ("spdk/trace.h",)),
    ("vhost.h", ("spdk/vhost.h",)),
    ("ublk.h", ("spdk/ublk.h",)),
    # The fat library's own additions and the runtime's C shims.
    ("pyspdk.h", ()),
    # extern "Python" trampolines come last: they use every type above.
    ("callbacks.h", ()),
)

# The C shims compiled into the module, in dependency order. A shim with
# declarations keeps them beside it (_shims/<name>.h); they are joined after
# every SPDK area and before callbacks.h.
SHIMS: tuple[str, ...] = (
    "version",
    "runtime",
    "rpc_server",
    "wait",
    "bdev_io",
    "cq",
    "bdev_jobs",
    "dma",
    "pybdev",
)


def shim_declarations() -> list[tuple[str, str]]:
    """(file name, text) of every shim's declarations, in SHIMS order."""
    found = []
    for name in SHIMS:
        path = SHIMS_DIR / f"{name}.h"
        if path.exists():
            found.append((path.name, path.read_text()))
    return found


def read_cdefs() -> str:
    """The declarations of every area, joined in order."""
    files = [(f"cdefs/{name}", (CDEFS_DIR / name).read_text()) for name, _ in AREAS]
    shims = [(f"_shims/{name}", text) for name, text in shim_declarations()]
    parts = []
    for label, text in [*files[:-1], *shims, files[-1]]:
        parts.append(f"/* ---- {label} ---- */\n")
        parts.append(text)
    return "\n".join(parts)


def version_check() -> str:
    """Preprocessor lines refusing SPDK headers outside SUPPORTED."""
    accepted = " || ".join(
        f"(SPDK_VERSION_MAJOR == {major} && SPDK_VERSION_MINOR == {minor})"
        for major, minor in SUPPORTED
    )
    names = ", ".join(f"v{major}.{minor:02d}" for major, minor in SUPPORTED)
    return (
        '#include "spdk/version.h"\n'
        f"#if !({accepted})\n"
        f'#error "pyspdk_sys supports SPDK {names}; these SPDK headers are another release"\n'
        "#endif\n"
    )


def preamble(build_key: str = "") -> str:
    """C source compiled into the extension: headers, version range, flags, shims."""
    includes = [f'#include "{h}"' for _name, headers in AREAS for h in headers]
    key = build_key.replace("\\", "\\\\").replace('"', '\\"')
    built_against = f'static const char *const PYSPDK_BUILT_AGAINST = "{key}";\n'
    shims = [(SHIMS_DIR / f"{name}.c").read_text() for name in SHIMS]
    return "\n".join(
        [
            *includes,
            version_check(),
            conditional.preamble(),
            JSONRPC_LIMITS,
            built_against,
            *shims,
        ]
    )


# Set to 1 to build for a self-contained wheel (`build.sh wheel`): the
# extension then finds the library in BUNDLE_DIR beside itself, not in the
# prefix it was built against (setup.py copies the library there).
BUNDLE_ENV = "PYSPDK_BUNDLE_LIBRARY"
BUNDLE_DIR = "_lib"


def bundling() -> bool:
    """True when building a wheel that carries the fat library."""
    return os.environ.get(BUNDLE_ENV, "") not in ("", "0")


def find_library() -> dict[str, str]:
    """The fat library pkg-config finds: version, libdir, includedir, manifest, file."""
    import pkgconfig

    if not pkgconfig.exists("spdk_fat"):
        raise SystemExit(
            "pyspdk_sys: pkg-config cannot find spdk_fat. Build and install the fat "
            "library first (./build.sh), or point PKG_CONFIG_PATH at "
            "<prefix>/lib/pkgconfig for a non-standard prefix."
        )
    version = pkgconfig.modversion("spdk_fat")
    major_minor = tuple(int(part) for part in version.split(".")[:2])
    if major_minor not in SUPPORTED:
        names = ", ".join(f"{major}.{minor:02d}" for major, minor in SUPPORTED)
        raise SystemExit(
            f"pyspdk_sys: pkg-config found spdk_fat {version}; this release supports SPDK "
            f"{names}. Build one of those with ./build.sh (SPDK_DIR=<tree>)."
        )
    variables = pkgconfig.variables("spdk_fat")
    libdir = variables["libdir"]
    return {
        "version": version,
        "libdir": libdir,
        "includedir": variables.get("includedir", ""),
        "manifest": variables.get("manifest", ""),
        "file": os.path.realpath(os.path.join(libdir, "libspdk_fat.so")),
    }


def build_key(found: dict[str, str]) -> str:
    """Everything about the library that must force a rebuild when it changes."""
    try:
        stat = os.stat(found["file"])
        identity = f"{stat.st_size}:{stat.st_mtime_ns}"
    except OSError:
        identity = "missing"
    mode = "bundled" if bundling() else "prefix"
    return f"spdk_fat {found['version']} {found['file']} {identity} {mode}"


def link_options(found: dict[str, str]) -> dict[str, list[str]]:
    """Compiler and linker options for spdk_fat, from pkg-config."""
    import pkgconfig

    parsed = pkgconfig.parse("spdk_fat")
    # Find the library where it was installed (even before ldconfig ran), or,
    # in a self-contained wheel, in the copy beside the extension.
    rpath = f"$ORIGIN/{BUNDLE_DIR}" if bundling() else found["libdir"]
    return {
        "include_dirs": parsed["include_dirs"],
        "library_dirs": parsed["library_dirs"],
        "libraries": parsed["libraries"],
        "extra_link_args": [f"-Wl,-rpath,{rpath}"],
        # spdk_app_opts is packed; taking its members' addresses is expected.
        "extra_compile_args": [
            "-Wno-address-of-packed-member",
            "-Werror=implicit-function-declaration",
            "-Werror=incompatible-pointer-types",
        ],
    }


def make_ffibuilder(with_library: bool = True) -> cffi.FFI:
    """An FFI with every area declared; with_library adds the C source."""
    builder = cffi.FFI()
    builder.cdef(read_cdefs())
    if with_library:
        found = find_library()
        options = link_options(found)
        builder.set_source(
            "pyspdk_sys._pyspdk_sys",
            preamble(build_key(found)),
            include_dirs=options["include_dirs"],
            library_dirs=options["library_dirs"],
            libraries=options["libraries"],
            extra_link_args=options["extra_link_args"],
            extra_compile_args=options["extra_compile_args"],
        )
    return builder


if __name__ == "__main__":
    make_ffibuilder().compile(verbose=True)
