"""The curated declarations: complete, in a working order, parseable by cffi.

No SPDK needed: cffi parses declarations without a compiler.
"""

from __future__ import annotations

import importlib.util
import re

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


def test_preamble_includes_every_area_and_checks_the_version_range() -> None:
    preamble = build.preamble("spdk_fat 26.01.0 /x/libspdk_fat.so.26.01.0 1:2 prefix")
    for _name, headers in build.AREAS:
        for header in headers:
            assert f'#include "{header}"' in preamble
    assert build.SUPPORTED == ((26, 1), (26, 5))
    assert (
        "#if !((SPDK_VERSION_MAJOR == 26 && SPDK_VERSION_MINOR == 1) || "
        "(SPDK_VERSION_MAJOR == 26 && SPDK_VERSION_MINOR == 5))"
    ) in preamble
    assert "#error" in preamble
    assert (
        'PYSPDK_BUILT_AGAINST = "spdk_fat 26.01.0 /x/libspdk_fat.so.26.01.0 1:2 prefix";'
        in preamble
    )


def test_build_key_changes_the_c_source() -> None:
    # setuptools rebuilds when the generated C changes: the key must reach it.
    first = build.preamble("spdk_fat 26.01.0 /usr/local/lib/libspdk_fat.so.26.01.0 1:2 prefix")
    second = build.preamble("spdk_fat 26.05.0 /opt/x/lib/libspdk_fat.so.26.05.0 1:2 prefix")
    assert first != second


CONDITIONAL = build.conditional


def cdefs_text() -> str:
    return build.read_cdefs()


@pytest.mark.parametrize("feature", CONDITIONAL.FEATURES, ids=lambda f: f.flag)
def test_each_flag_and_its_names_are_declared(feature) -> None:
    text = cdefs_text()
    assert feature.flag.startswith("PYSPDK_HAS_")
    assert text.count(f"static const long {feature.flag};") == 1
    for name in feature.names:
        assert re.search(rf"\b{name}\b", text), f"{name} is not declared in cdefs/"
        # The stand-in defines every name, so the module compiles without it.
        assert re.search(rf"\b{name}\b", feature.fallback), name


@pytest.mark.parametrize("feature", CONDITIONAL.FEATURES, ids=lambda f: f.flag)
def test_each_flag_is_set_both_ways(feature) -> None:
    c = CONDITIONAL.preamble()
    block = c[c.index(f"#if {feature.condition}\n") :]
    block = block[: block.index("#endif")]
    assert f"static const long {feature.flag} = 1;" in block
    assert f"static const long {feature.flag} = 0;" in block
    assert block.index("#else") < block.index(feature.fallback)


def test_conditional_names_are_unique() -> None:
    names = [name for f in CONDITIONAL.FEATURES for name in f.names]
    assert len(names) == len(set(names))
    assert set(CONDITIONAL.CONDITIONAL_NAMES) == {f.flag for f in CONDITIONAL.FEATURES}


def test_jsonrpc_limits_follow_the_release() -> None:
    assert "PYSPDK_JSONRPC_RECV_BUF_SIZE = 256 * 1024;" in build.JSONRPC_LIMITS
    assert "PYSPDK_JSONRPC_RECV_BUF_SIZE = 32 * 1024;" in build.JSONRPC_LIMITS
    assert "static const long PYSPDK_JSONRPC_MAX_VALUES;" in cdefs_text()
