"""What users install: the sdist, the wheel, the self-contained wheel, and rebuilds.

Each test builds in a copy of the project and installs into a fresh virtual
environment, as a user would. The sdist's contents need no SPDK; building the
extension needs the fat library (pkg-config name spdk_fat).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tomllib
from wheel_build import clean_env, project_copy, run, wheel_names

from conftest import PROJECT_DIR

# Files an sdist must carry for `pip install` of it to build the extension.
BUILD_INPUTS = (
    "setup.py",
    "pyproject.toml",
    "MANIFEST.in",
    "build.sh",
    "README.md",
    "src/pyspdk_sys/_cffi_build.py",
    "src/pyspdk_sys/_conditional.py",
    "src/pyspdk_sys/py.typed",
)
# Files only the build reads: never in a wheel.
BUILD_ONLY = ("pyspdk_sys/_cffi_build.py", "pyspdk_sys/_shims/")


def requires_python_floor() -> tuple[int, int]:
    """The oldest CPython pyproject.toml's requires-python admits (">=3.X")."""
    with open(PROJECT_DIR / "pyproject.toml", "rb") as f:
        spec = tomllib.load(f)["project"]["requires-python"]
    found = re.fullmatch(r">=\s*(\d+)\.(\d+)", spec)
    assert found, f"requires-python {spec!r} is not of the form >=X.Y"
    return int(found[1]), int(found[2])


# The tag of every wheel: abi3 from the oldest CPython the package supports.
ABI3_TAG = "cp{}{}".format(*requires_python_floor())


def test_wheel_floor_is_requires_python() -> None:
    """setup.py tags wheels with ABI3_FLOOR: it must be requires-python's floor, or
    pip would install the wheel where the package refuses to run (or the reverse)."""
    text = (PROJECT_DIR / "setup.py").read_text()
    found = re.search(r"^ABI3_FLOOR = \((\d+), (\d+)\)$", text, re.MULTILINE)
    assert found, "setup.py defines no ABI3_FLOOR"
    assert (int(found[1]), int(found[2])) == requires_python_floor()


@pytest.fixture
def venv(tmp_path: Path) -> Callable[[str], Path]:
    """Make a fresh virtual environment; returns its python."""

    def make(name: str) -> Path:
        path = tmp_path / name
        run(sys.executable, "-m", "venv", path)
        return path / "bin" / "python"

    return make


@pytest.fixture(scope="module")
def sdist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("sdist")
    copy = project_copy(tmp)
    run(sys.executable, "-m", "build", "--sdist", "--outdir", tmp / "dist", copy, env=clean_env())
    (archive,) = (tmp / "dist").glob("pyspdk_sys-*.tar.gz")
    return archive


def test_sdist_carries_every_build_input(sdist: Path) -> None:
    with tarfile.open(sdist) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    for name in BUILD_INPUTS:
        assert name in names, name
    cdefs = {p.name for p in (PROJECT_DIR / "cdefs").glob("*.h")}
    assert cdefs and {f"cdefs/{c}" for c in cdefs} <= names
    shims = {p.name for p in (PROJECT_DIR / "src/pyspdk_sys/_shims").glob("*.c")}
    assert shims and {f"src/pyspdk_sys/_shims/{s}" for s in shims} <= names
    assert not any(name.endswith(".so") for name in names)


def import_report(python: Path, env: dict[str, str]) -> dict[str, str]:
    """Import pyspdk_sys in `python` (outside the source tree); what loaded, from where."""
    code = (
        "import json, pyspdk_sys\n"
        "maps = [l.split()[-1] for l in open('/proc/self/maps') if 'libspdk_fat' in l]\n"
        "print(json.dumps({'version': pyspdk_sys.SPDK_VERSION, 'file': pyspdk_sys.__file__,\n"
        "  'library': pyspdk_sys.LIBRARY_PATH, 'built_against': pyspdk_sys.BUILT_AGAINST,\n"
        "  'maps': sorted(set(maps))}))\n"
    )
    result = run(python, "-c", code, env=env, cwd=python.parent)
    report: dict[str, Any] = json.loads(result.stdout.splitlines()[-1])
    return report


def test_sdist_builds_installs_and_its_wheel_is_lean(
    spdk: Any, sdist: Path, venv: Callable[[str], Path], tmp_path: Path
) -> None:
    python = venv("from-sdist")
    wheels = tmp_path / "wheels"
    # pip install of an sdist goes through a wheel: build it, look at it, install it.
    run(python, "-m", "pip", "wheel", "--no-deps", "-w", wheels, sdist, env=clean_env())
    (wheel,) = wheels.glob("pyspdk_sys-*.whl")
    # abi3 from requires-python's floor, and an honest plain linux tag: the
    # library stays on this machine.
    assert wheel.name.endswith(f"-{ABI3_TAG}-abi3-linux_x86_64.whl"), wheel.name
    names = wheel_names(wheel)
    assert "pyspdk_sys/py.typed" in names
    assert any(n.startswith("pyspdk_sys/_pyspdk_sys") and n.endswith(".so") for n in names)
    for name in names:
        assert not name.startswith(BUILD_ONLY), name
        assert not name.startswith("pyspdk_sys/_lib/"), name  # the library stays outside
    # What `pip install <sdist>` does, without compiling a second time.
    run(python, "-m", "pip", "install", wheel, env=clean_env())
    report = import_report(python, clean_env())
    assert report["version"] == spdk.SPDK_VERSION
    assert report["file"].startswith(str(python.parent.parent))
    assert report["maps"] == [os.path.realpath(spdk.LIBRARY_PATH)]


def test_self_contained_wheel_carries_the_library(spdk: Any, manylinux_wheel: Path) -> None:
    names = wheel_names(manylinux_wheel)
    library = Path(os.path.realpath(spdk.LIBRARY_PATH)).name
    assert f"pyspdk_sys/_lib/{library}" in names
    assert "pyspdk_sys/_lib/manifest.json" in names
    assert not any(name.startswith(BUILD_ONLY) for name in names)
    # One wheel for every CPython requires-python admits (the extension is
    # abi3), for any x86_64 Linux whose glibc is at least the policy auditwheel found.
    assert re.fullmatch(
        rf"pyspdk_sys-[^-]+-{ABI3_TAG}-abi3-manylinux_2_\d+_x86_64\.whl",
        manylinux_wheel.name,
    ), manylinux_wheel.name
    (extension,) = [n for n in names if n.startswith("pyspdk_sys/_pyspdk_sys")]
    assert extension == "pyspdk_sys/_pyspdk_sys.abi3.so"
    # The system libraries the fat library links, moved in by auditwheel
    # (renamed with a hash so that no other copy is ever picked instead).
    libs = [n.split("/", 1)[1] for n in names if n.startswith("pyspdk_sys.libs/")]
    vendored = {name.split("-", 1)[0] for name in libs if name}
    for needed in ("libaio", "liburing", "libnuma", "libssl", "libcrypto", "libuuid", "libfuse3"):
        assert needed in vendored, (needed, sorted(vendored))


def test_self_contained_wheel_loads_its_own_copy(
    spdk: Any, manylinux_wheel: Path, venv: Callable[[str], Path]
) -> None:
    python = venv("from-wheel")
    run(python, "-m", "pip", "install", manylinux_wheel, env=clean_env())
    site = Path(
        run(
            python, "-c", "import sysconfig; print(sysconfig.get_paths()['platlib'])"
        ).stdout.strip()
    )
    (extension,) = (site / "pyspdk_sys").glob("_pyspdk_sys*.so")
    dynamic = run("readelf", "-d", extension).stdout
    (runpath,) = [line for line in dynamic.splitlines() if "(RUNPATH)" in line or "(RPATH)" in line]
    # Only the copy beside the extension (and auditwheel's directory of system
    # libraries): no run path of the build machine.
    assert runpath.split("[", 1)[1].rstrip("]").split(":") == [
        "$ORIGIN/_lib",
        "$ORIGIN/../pyspdk_sys.libs",
    ]
    assert str(Path(os.path.realpath(spdk.LIBRARY_PATH)).parent) not in runpath
    # No pkg-config search path and no loader path: only the run path can find it.
    env = clean_env(PKG_CONFIG_PATH="", PKG_CONFIG_LIBDIR=str(site / "nowhere"))
    report = import_report(python, env)
    own = str(site / "pyspdk_sys" / "_lib" / Path(os.path.realpath(spdk.LIBRARY_PATH)).name)
    assert report["maps"] == [own]
    assert report["library"] == own
    assert report["version"] == spdk.SPDK_VERSION
    assert report["built_against"].endswith(" bundled")


def _unshare_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _unshare_works(), reason="needs unshare --mount (root)")
def test_self_contained_wheel_works_where_no_library_is_installed(
    spdk: Any, manylinux_wheel: Path, venv: Callable[[str], Path], tmp_path: Path
) -> None:
    # Hide the installed library's directory in a private mount namespace:
    # the machine then has no fat library but the wheel's.
    python = venv("hidden")
    run(python, "-m", "pip", "install", manylinux_wheel, env=clean_env())
    libdir = Path(os.path.realpath(spdk.LIBRARY_PATH)).parent
    empty = tmp_path / "empty"
    empty.mkdir()
    script = (
        f"mount --bind {empty} {libdir} && "
        f"! ls {libdir}/libspdk_fat* 2>/dev/null && "
        f"{python} -c 'import pyspdk_sys; print(pyspdk_sys.LIBRARY_PATH)'"
    )
    result = run("unshare", "--mount", "sh", "-c", script, env=clean_env(), cwd=tmp_path)
    assert "/pyspdk_sys/_lib/libspdk_fat.so." in result.stdout


def fake_prefix(spdk: Any, tmp_path: Path) -> Path:
    """A second prefix holding a copy of the installed library, headers and .pc."""
    source = subprocess.run(
        ["pkg-config", "--variable=prefix", "spdk_fat"], capture_output=True, text=True, check=True
    ).stdout.strip()
    prefix = tmp_path / "other-prefix"
    library = Path(os.path.realpath(spdk.LIBRARY_PATH))
    (prefix / "lib" / "pkgconfig").mkdir(parents=True)
    shutil.copy2(library, prefix / "lib" / library.name)
    (prefix / "lib" / "libspdk_fat.so").symlink_to(library.name)
    shutil.copytree(Path(source) / "include" / "spdk_fat", prefix / "include" / "spdk_fat")
    pc = (Path(source) / "lib" / "pkgconfig" / "spdk_fat.pc").read_text()
    pc = pc.replace(f"prefix={source}\n", f"prefix={prefix}\n", 1)
    (prefix / "lib" / "pkgconfig" / "spdk_fat.pc").write_text(pc)
    return prefix


def test_switching_library_rebuilds(spdk: Any, venv: Callable[[str], Path], tmp_path: Path) -> None:
    # One source tree, installed twice with different PKG_CONFIG_PATH: the
    # second install must be built against the second library, not reuse build/.
    copy = project_copy(tmp_path)
    other = fake_prefix(spdk, tmp_path)
    python = venv("switch")
    first_pc = subprocess.run(
        ["pkg-config", "--variable=pcfiledir", "spdk_fat"], capture_output=True, text=True
    ).stdout.strip()
    run(python, "-m", "pip", "install", copy, env=clean_env(PKG_CONFIG_PATH=first_pc))
    first = import_report(python, clean_env())
    assert first["maps"] == [os.path.realpath(spdk.LIBRARY_PATH)]
    assert (copy / "build").is_dir()  # the objects a second install could reuse
    run(
        python,
        "-m",
        "pip",
        "install",
        copy,
        env=clean_env(PKG_CONFIG_PATH=f"{other}/lib/pkgconfig"),
    )
    second = import_report(python, clean_env())
    assert second["maps"] == [str(other / "lib" / Path(first["maps"][0]).name)]
    assert str(other) in second["built_against"]
    assert second["built_against"] != first["built_against"]
