"""The curated declarations: complete, in a working order, parseable by cffi.

No SPDK needed: cffi parses declarations without a compiler.
"""

from __future__ import annotations

import importlib.util

import cffi
import pytest

from conftest import PROJECT_DIR

spec = importlib.util.spec_from_file_location(
    "_cffi_build", PROJECT_DIR / "src" / "pyspdk_sys" / "_cffi_build.py"
)
assert spec is not None and spec.loader is not None
build = importlib.util.module_from_spec(spec)
spec.loader.exec_module(build)

AREA_FILES = [name for name, _headers in build.AREAS]


def test_every_cdefs_file_is_listed_once() -> None:
    on_disk = sorted(path.name for path in build.CDEFS_DIR.glob("*.h"))
    assert sorted(AREA_FILES) == on_disk
    assert len(set(AREA_FILES)) == len(AREA_FILES)


def test_types_first_callbacks_last() -> None:
    assert AREA_FILES[0] == "types.h"
    assert AREA_FILES[-1] == "callbacks.h"


@pytest.mark.parametrize("count", range(1, len(AREA_FILES) + 1))
def test_each_prefix_of_the_order_parses(count: int) -> None:
    # A file may only use what the files before it declare.
    ffi = cffi.FFI()
    for name in AREA_FILES[:count]:
        ffi.cdef((build.CDEFS_DIR / name).read_text())


def test_shims_listed_and_their_declarations_parse_in_order() -> None:
    on_disk = sorted(path.stem for path in build.SHIMS_DIR.glob("*.c"))
    assert sorted(build.SHIMS) == on_disk
    ffi = cffi.FFI()
    for name in AREA_FILES[:-1]:
        ffi.cdef((build.CDEFS_DIR / name).read_text())
    for _name, text in build.shim_declarations():
        ffi.cdef(text)
    ffi.cdef((build.CDEFS_DIR / AREA_FILES[-1]).read_text())


def test_each_file_names_the_header_it_mirrors() -> None:
    for name, headers in build.AREAS:
        first_line = (build.CDEFS_DIR / name).read_text().splitlines()[0]
        assert first_line.startswith("/*"), name
        if headers:
            assert any(h in first_line for h in headers), f"{name}: {first_line}"


def test_no_preprocessor_beyond_define() -> None:
    for name in AREA_FILES:
        for line in (build.CDEFS_DIR / name).read_text().splitlines():
            if line.lstrip().startswith("#"):
                assert line.lstrip().startswith("#define"), f"{name}: {line}"


def test_preamble_includes_every_area_and_pins_the_version() -> None:
    preamble = build.preamble()
    for _name, headers in build.AREAS:
        for header in headers:
            assert f'#include "{header}"' in preamble
    assert "#if SPDK_VERSION_MAJOR != 26 || SPDK_VERSION_MINOR != 1" in preamble
    assert "#error" in preamble
