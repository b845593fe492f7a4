"""The C shims stand alone: each .c builds by itself from its own includes.

The extension compiles every shim as its own translation unit, so a shim
that used what it does not include would already fail the build. These tests
say so directly, shim by shim, with the compiler and the spdk_fat flags the
build uses, and check what the build cannot: that every header compiles
alone and in any order with the others, that no shim declares for itself a
function another shim defines, and that cffi reads the headers' declarations
in any order.
"""

from __future__ import annotations

import importlib.util
import random
import re
import subprocess
from pathlib import Path

import cffi
import pytest

from conftest import PROJECT_DIR, require_tool, skip_or_fail

spec = importlib.util.spec_from_file_location(
    "_cffi_build_shims", PROJECT_DIR / "src" / "pyspdk_sys" / "_cffi_build.py"
)
assert spec is not None and spec.loader is not None
build = importlib.util.module_from_spec(spec)
spec.loader.exec_module(build)

SHIMS = list(build.SHIMS)
# Stricter than the build: any warning fails (one for a struct first named
# in a parameter list means a header forgot a declaration), and so does a
# global function with no prototype before it (it belongs in its header).
STRICT = ["-Wall", "-Werror", "-Wmissing-prototypes"]


def _orders() -> list[list[str]]:
    """The listed order, its reverse, and a few shuffles (fixed seeds)."""
    orders = [SHIMS, SHIMS[::-1]]
    for seed in range(3):
        shuffled = SHIMS[:]
        random.Random(seed).shuffle(shuffled)
        orders.append(shuffled)
    return orders


@pytest.fixture(scope="module")
def cflags() -> list[str]:
    """The compiler options of a shim: spdk_fat's headers and the build's own."""
    pkg_config = require_tool("pkg-config")
    require_tool("cc")
    found = subprocess.run(
        [pkg_config, "--cflags", "spdk_fat"], capture_output=True, text=True, check=False
    )
    if found.returncode != 0:
        skip_or_fail(f"pkg-config finds no spdk_fat: {found.stderr.strip()}")
    return [*found.stdout.split(), *build.COMPILE_ARGS, *STRICT]


def _compile(cflags: list[str], source: str, where: Path, *extra: str) -> None:
    """Compile `source` (C text) in `where`, which it may #include from."""
    result = subprocess.run(
        ["cc", "-fsyntax-only", "-x", "c", "-", f"-I{where}", *cflags, *extra],
        input=source,
        capture_output=True,
        text=True,
        check=False,
        cwd=where,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


def test_every_shim_has_its_header_and_is_listed() -> None:
    sources = sorted(path.stem for path in build.SHIMS_DIR.glob("*.c"))
    headers = sorted(path.stem for path in build.SHIMS_DIR.glob("*.h"))
    assert sorted(SHIMS) == sources == headers
    for name in SHIMS:
        text = (build.SHIMS_DIR / f"{name}.c").read_text()
        first = re.search(r'^#include "([^"]+)"', text, re.MULTILINE)
        assert first and first.group(1) == f"{name}.h", f"{name}.c includes its header first"
        guard = f"PYSPDK_SHIMS_{name.upper()}_H"
        header = (build.SHIMS_DIR / f"{name}.h").read_text()
        assert f"#ifndef {guard}\n#define {guard}\n" in header, f"{name}.h: include guard"


@pytest.mark.parametrize("name", SHIMS)
def test_each_shim_compiles_alone(cflags: list[str], name: str) -> None:
    _compile(cflags, (build.SHIMS_DIR / f"{name}.c").read_text(), build.SHIMS_DIR)


@pytest.mark.parametrize("name", SHIMS)
def test_each_header_compiles_alone_and_twice(cflags: list[str], name: str) -> None:
    _compile(cflags, f'#include "{name}.h"\n#include "{name}.h"\n', build.SHIMS_DIR)


def test_headers_compile_together_in_any_order(cflags: list[str]) -> None:
    for order in _orders():
        source = "".join(f'#include "{name}.h"\n' for name in order)
        _compile(cflags, source, build.SHIMS_DIR)


def test_no_shim_declares_what_another_defines(cflags: list[str], tmp_path: Path) -> None:
    # gcc's -aux-info lists every function a unit declares (C) or defines
    # (F), with where: a declaration written in a shim's .c of a function
    # another shim defines is a tie the headers should carry.
    declared: dict[str, set[str]] = {}
    defined: dict[str, set[str]] = {}
    entry = re.compile(r"/\* (\S+?):\d+:[NO]([CF]) \*/ (.*?)(\w+) \(")
    for name in SHIMS:
        aux = tmp_path / f"{name}.aux"
        source = build.SHIMS_DIR / f"{name}.c"
        result = subprocess.run(
            ["cc", "-c", "-o", "/dev/null", f"-aux-info={aux}", str(source), *cflags],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        declared[name], defined[name] = set(), set()
        for found in entry.finditer(aux.read_text()):
            where, kind, _, function = found.groups()
            if Path(where).name != source.name:
                continue
            (defined if kind == "F" else declared)[name].add(function)
    assert defined["bdev_io"] and defined["cq"], "the aux-info parse found definitions"
    ties = {
        (name, function, other)
        for name in SHIMS
        for function in declared[name] - defined[name]
        for other in SHIMS
        if other != name and function in defined[other]
    }
    assert not ties, f"(shim, function it declares, shim defining it): {sorted(ties)}"


def test_cffi_reads_the_shim_declarations_in_any_order() -> None:
    areas = [(build.CDEFS_DIR / name).read_text() for name, _ in build.AREAS]
    declarations = dict(build.shim_declarations())
    for order in _orders():
        ffi = cffi.FFI()
        for text in areas[:-1]:
            ffi.cdef(text)
        for name in order:
            ffi.cdef(declarations[f"{name}.h"])
        ffi.cdef(areas[-1])


def test_cdef_part_keeps_the_cffi_branch_and_drops_the_compilers() -> None:
    header = (
        "#ifndef G\n#define G\n#include <x.h>\n"
        f"{build.CFFI_BEGIN}\n#define A 1\nint f(void);\n"
        "#ifdef PYSPDK_CDEF\nstruct s { int a; ...; };\n#else\nstruct s { int a, b; };\n#endif\n"
        "#ifndef PYSPDK_CDEF\nint only_c(void);\n#endif\n"
        f"{build.CFFI_END}\nint internal(void);\n#endif\n"
    )
    cdef = build.shim_cdef("t.h", header)
    assert cdef.split("\n") == ["#define A 1", "int f(void);", "struct s { int a; ...; };", ""]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("int f(void);\n", "no '/* cffi begin */'"),
        ("/* cffi begin */\n#include <x.h>\n/* cffi end */\n", "only #define"),
        ("/* cffi begin */\n#ifdef PYSPDK_CDEF\nint f(void);\n/* cffi end */\n", "without #endif"),
        ("/* cffi begin */\n#if 1\n#endif\n/* cffi end */\n", "only #define"),
    ],
)
def test_cdef_part_refuses_what_it_cannot_read(body: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        build.shim_cdef("t.h", body)
