"""Build the _pyspdk_sys extension from the curated declarations in cdefs/.

cffi runs this file at `pip install` time (see setup.py). The declarations are
joined in the explicit order of AREAS; each area names the SPDK headers the
compiler checks it against. The extension links the fat library found with
pkg-config (name `spdk_fat`); set PKG_CONFIG_PATH to `<prefix>/lib/pkgconfig`
for a prefix pkg-config does not search.
"""

from __future__ import annotations

from pathlib import Path

import cffi

PROJECT_DIR = Path(__file__).resolve().parents[2]
CDEFS_DIR = PROJECT_DIR / "cdefs"
SHIMS_DIR = Path(__file__).resolve().parent / "_shims"

# The SPDK release these declarations were written against. The preamble
# refuses other headers, and the package refuses at import a library built
# from another release.
SPDK_MAJOR, SPDK_MINOR = 26, 1

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


def preamble() -> str:
    """C source compiled into the extension: headers, version pin, shims."""
    includes = [f'#include "{h}"' for _name, headers in AREAS for h in headers]
    pin = (
        '#include "spdk/version.h"\n'
        f"#if SPDK_VERSION_MAJOR != {SPDK_MAJOR} || SPDK_VERSION_MINOR != {SPDK_MINOR}\n"
        f'#error "pyspdk_sys declares SPDK v{SPDK_MAJOR}.{SPDK_MINOR:02d}; '
        'these SPDK headers are another release"\n'
        "#endif\n"
    )
    shims = [(SHIMS_DIR / f"{name}.c").read_text() for name in SHIMS]
    return "\n".join([*includes, pin, *shims])


def link_options() -> dict[str, list[str]]:
    """Compiler and linker options for spdk_fat, from pkg-config."""
    import pkgconfig

    if not pkgconfig.exists("spdk_fat"):
        raise SystemExit(
            "pyspdk_sys: pkg-config cannot find spdk_fat. Build and install the fat "
            "library first (./build.sh), or point PKG_CONFIG_PATH at "
            "<prefix>/lib/pkgconfig for a non-standard prefix."
        )
    found = pkgconfig.parse("spdk_fat")
    libdir = pkgconfig.variables("spdk_fat")["libdir"]
    return {
        "include_dirs": found["include_dirs"],
        "library_dirs": found["library_dirs"],
        "libraries": found["libraries"],
        # Find the library where it was installed, even before ldconfig ran.
        "extra_link_args": [f"-Wl,-rpath,{libdir}"],
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
        builder.set_source("pyspdk_sys._pyspdk_sys", preamble(), **link_options())
    return builder


if __name__ == "__main__":
    make_ffibuilder().compile(verbose=True)
