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

# The C shims compiled into the module, each its own translation unit (a
# `sources` entry of the extension), so none can lean on another's text: each
# <name>.c includes <name>.h and the headers of what it uses. A header is C
# with an include guard; the part between the lines CFFI_BEGIN and CFFI_END
# is also what Python sees of it (shim_cdef). Inside that part, an
# `#ifdef PYSPDK_CDEF` block is for cffi only (a partial struct, a constant
# whose value the compiler gives), with an optional `#else` for the compiler.
SHIMS: tuple[str, ...] = (
    "bdev_io",
    "bdev_jobs",
    "cq",
    "dma",
    "intr",
    "log",
    "pybdev",
    "rpc_server",
    "runtime",
    "version",
    "wait",
)
CFFI_BEGIN = "/* cffi begin */"
CFFI_END = "/* cffi end */"
CDEF_MACRO = "PYSPDK_CDEF"


def shim_cdef(label: str, text: str) -> str:
    """The cffi declarations of one shim header: its CFFI_BEGIN..CFFI_END part,
    with the `#ifdef PYSPDK_CDEF` branches cffi reads and without the others.
    A malformed header raises ValueError naming it."""
    lines = text.splitlines()
    try:
        start = lines.index(CFFI_BEGIN)
        end = lines.index(CFFI_END, start)
    except ValueError:
        raise ValueError(f"{label}: no '{CFFI_BEGIN}' ... '{CFFI_END}' part") from None
    kept: list[str] = []
    branch: str | None = None  # None outside a conditional, else "cdef" or "c"
    for number, line in enumerate(lines[start + 1 : end], start + 2):
        directive = line.strip()
        if directive.startswith("#") and not directive.startswith("#define"):
            word = directive.split()
            if word[:2] == ["#ifdef", CDEF_MACRO] and branch is None:
                branch = "cdef"
            elif word[:2] == ["#ifndef", CDEF_MACRO] and branch is None:
                branch = "c"
            elif word[:1] == ["#else"] and branch is not None:
                branch = "c" if branch == "cdef" else "cdef"
            elif word[:1] == ["#endif"] and branch is not None:
                branch = None
            else:
                raise ValueError(
                    f"{label}:{number}: only #define and #ifdef/#ifndef {CDEF_MACRO} "
                    f"(#else, #endif) may appear between the cffi lines: {directive}"
                )
            continue
        if branch != "c":
            kept.append(line)
    if branch is not None:
        raise ValueError(f"{label}: #ifdef {CDEF_MACRO} without #endif")
    return "\n".join(kept) + "\n"


def shim_declarations() -> list[tuple[str, str]]:
    """(header name, cffi declarations) of every shim, in SHIMS order."""
    found = []
    for name in SHIMS:
        path = SHIMS_DIR / f"{name}.h"
        found.append((path.name, shim_cdef(f"_shims/{path.name}", path.read_text())))
    return found


def shim_sources() -> list[str]:
    """The shims' C files, as setuptools compiles them: relative to the working
    directory when under it (objects then land inside the build directory)."""
    here = Path.cwd().resolve()
    sources = []
    for name in SHIMS:
        path = SHIMS_DIR / f"{name}.c"
        sources.append(str(path.relative_to(here)) if path.is_relative_to(here) else str(path))
    return sources


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
    """C source of the module cffi generates: headers, version range, flags,
    and the shims' headers (their code is compiled apart, see SHIMS)."""
    includes = [f'#include "{h}"' for _name, headers in AREAS for h in headers]
    key = build_key.replace("\\", "\\\\").replace('"', '\\"')
    built_against = f'static const char *const PYSPDK_BUILT_AGAINST = "{key}";\n'
    shims = [f'#include "{SHIMS_DIR.name}/{name}.h"' for name in SHIMS]
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


# Options for every C file of the module, the shims as compiled alone too.
COMPILE_ARGS: tuple[str, ...] = (
    # sched_getcpu, CPU_COUNT, dladdr (Python.h sets it too, to the same value).
    "-D_GNU_SOURCE",
    # The shims' functions are the module's own: not exported from it.
    "-fvisibility=hidden",
    # spdk_app_opts is packed; taking its members' addresses is expected.
    "-Wno-address-of-packed-member",
    # A shim that uses what it does not include fails to build.
    "-Werror=implicit-function-declaration",
    "-Werror=incompatible-pointer-types",
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
        "extra_compile_args": list(COMPILE_ARGS),
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
            sources=shim_sources(),
            depends=[str(path) for path in sorted(SHIMS_DIR.iterdir())],
            include_dirs=[str(PACKAGE_DIR), *options["include_dirs"]],
            library_dirs=options["library_dirs"],
            libraries=options["libraries"],
            extra_link_args=options["extra_link_args"],
            extra_compile_args=options["extra_compile_args"],
        )
    return builder


if __name__ == "__main__":
    make_ffibuilder().compile(verbose=True)
