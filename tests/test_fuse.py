"""build.sh fuse: archives whose objects register from constructors.

No SPDK needed. Each module archive holds one object whose constructor adds
its name to a registry, exactly like SPDK's *_REGISTER macros: nothing
references those objects, so only a whole-archive link keeps them.
"""

from __future__ import annotations

import ctypes
import subprocess
from pathlib import Path

import pytest

from conftest import PROJECT_DIR, require_tool

BUILD_SH = PROJECT_DIR / "build.sh"
MODULES = ("alpha", "beta", "gamma")

REGISTRY_C = r"""
#include <stddef.h>
static const char *names[16];
static int count;
void registry_add(const char *name) { if (count < 16) names[count++] = name; }
int registry_count(void) { return count; }
const char *registry_name(int i) { return i < count ? names[i] : NULL; }
"""

MODULE_C = r"""
void registry_add(const char *name);
__attribute__((constructor)) static void register_%(name)s(void) { registry_add("%(name)s"); }
"""


@pytest.fixture(autouse=True)
def c_compiler() -> None:
    require_tool("cc")


def compile_archive(tmp: Path, name: str, source: str) -> Path:
    src = tmp / f"{name}.c"
    src.write_text(source)
    obj = tmp / f"{name}.o"
    subprocess.run(["cc", "-fPIC", "-c", "-o", obj, src], check=True)
    archive = tmp / f"lib{name}.a"
    subprocess.run(["ar", "rcs", archive, obj], check=True)
    return archive


@pytest.fixture
def archives(tmp_path: Path) -> list[Path]:
    registry = compile_archive(tmp_path, "registry", REGISTRY_C)
    modules = [compile_archive(tmp_path, m, MODULE_C % {"name": m}) for m in MODULES]
    return [registry, *modules]


def fuse(out: Path, *args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", BUILD_SH, "fuse", "-o", out, *map(str, args)], capture_output=True, text=True
    )


def registered(library: Path) -> list[str]:
    lib = ctypes.CDLL(str(library))
    lib.registry_name.restype = ctypes.c_char_p
    return sorted(lib.registry_name(i).decode() for i in range(lib.registry_count()))


def test_fused_library_keeps_every_registration(tmp_path: Path, archives: list[Path]) -> None:
    out = tmp_path / "libfat.so"
    result = fuse(out, *archives)
    assert result.returncode == 0, result.stderr
    assert registered(out) == sorted(MODULES)


def test_ordinary_link_drops_unreferenced_modules(tmp_path: Path, archives: list[Path]) -> None:
    # What a normal link does: archives are searched only for undefined symbols.
    user = tmp_path / "user.c"
    user.write_text("int registry_count(void);\nint user(void) { return registry_count(); }\n")
    out = tmp_path / "libplain.so"
    subprocess.run(
        [
            "cc",
            "-shared",
            "-fPIC",
            "-o",
            out,
            user,
            "-L",
            tmp_path,
            "-lregistry",
            *(f"-l{m}" for m in MODULES),
        ],
        check=True,
    )
    lib = ctypes.CDLL(str(out))
    assert lib.registry_count() == 0


def test_soname_is_set(tmp_path: Path, archives: list[Path]) -> None:
    out = tmp_path / "libfat.so.1.2"
    assert fuse(out, "--soname", "libfat.so.1", *archives).returncode == 0
    dynamic = subprocess.run(["readelf", "-d", out], capture_output=True, text=True).stdout
    assert "Library soname: [libfat.so.1]" in dynamic


def test_missing_system_library_fails_the_link(tmp_path: Path, archives: list[Path]) -> None:
    needs_libm = compile_archive(
        tmp_path,
        "needs_libm",
        "double cos(double);\ndouble use_cos(volatile double x) { return cos(x); }\n",
    )
    out = tmp_path / "libfat.so"
    result = fuse(out, *archives, needs_libm)
    assert result.returncode != 0
    assert "undefined reference to `cos'" in result.stderr
    assert not out.exists()
    # The linker arguments after -- supply it.
    result = fuse(out, *archives, needs_libm, "--", "-lm")
    assert result.returncode == 0, result.stderr
    assert registered(out) == sorted(MODULES)


def test_usage_errors(tmp_path: Path, archives: list[Path]) -> None:
    no_output = subprocess.run(
        ["bash", BUILD_SH, "fuse", *map(str, archives)], capture_output=True, text=True
    )
    assert no_output.returncode == 2
    assert "-o OUT.so is required" in no_output.stderr
    missing = fuse(tmp_path / "x.so", tmp_path / "libnothing.a")
    assert missing.returncode != 0
    assert "archive not found" in missing.stderr
