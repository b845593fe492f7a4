"""The manylinux wheel on machines that never built SPDK.

In a clean Debian root (python3 and pip only: no compiler, no -dev package, no
fat library; tests/root/prepare.sh) the wheel installs without the network,
`python -m pyspdk_sys` runs, and a Runtime does I/O on a malloc bdev; every
shared object in that process is the wheel's, cffi's, the interpreter's own or
one of the manylinux set. A newer CPython, and the oldest that requires-python
admits, install the same abi3 wheel and pass the same checks. Skips say how to
prepare what is missing; PYSPDK_REQUIRE_ROOTFS=1 turns them into failures (see
tests/clean_root.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import clean_root
import pytest
from wheel_build import clean_env, run, wheel_names

from conftest import require_tool

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def root_run(manylinux_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> clean_root.RootRun:
    reason = clean_root.missing()
    if reason is not None:
        clean_root.skip_or_fail(reason)
    done = clean_root.run_in_root(manylinux_wheel, tmp_path_factory.mktemp("root"))
    print(f"clean root: install, info and checks in {done.seconds:.1f} s")
    return done


def step(done: clean_root.RootRun, name: str) -> str:
    assert name in done.steps, f"step {name} did not run; steps: {done.steps}"
    rc, output = done.steps[name]
    assert rc == 0, f"step {name} exited {rc}:\n{output[-4000:]}"
    return output


def wheel_site(report: dict[str, Any]) -> str:
    return os.path.dirname(report["package"])


def test_the_root_is_a_clean_machine() -> None:
    reason = clean_root.missing()
    if reason is not None:
        clean_root.skip_or_fail(reason)
    root = clean_root.ROOTFS_DIR / "rootfs"
    for tool in ("cc", "gcc", "c++", "ld", "pkg-config"):
        assert not (root / "usr" / "bin" / tool).exists(), tool
    assert not list((root / "usr" / "include").glob("python3*")), "python3-dev is installed"
    assert not list((root / "usr").rglob("libspdk*")), "an SPDK library is in the root"
    assert (root / "usr" / "bin" / "python3").exists()


def test_wheel_installs_without_network_in_the_clean_root(
    root_run: clean_root.RootRun, manylinux_wheel: Path
) -> None:
    output = step(root_run, "install")
    assert "Successfully installed" in output
    assert "pyspdk_sys-" in output and "cffi-" in output


def test_cli_runs_on_the_wheels_library(spdk: Any, root_run: clean_root.RootRun) -> None:
    output = step(root_run, "info")
    library = Path(os.path.realpath(spdk.LIBRARY_PATH)).name
    assert f"/dist-packages/pyspdk_sys/_lib/{library}" in output, output
    assert "RPC methods" in output


def test_runtime_does_io_in_the_clean_root(spdk: Any, root_run: clean_root.RootRun) -> None:
    report = clean_root.last_json(step(root_run, "checks"))
    assert report["same"], "the data read back is not the data written"
    assert report["zeros"]
    assert report["spdk_version"] == spdk.SPDK_VERSION
    assert report["library"].startswith(report["package"] + "/_lib/")


def check_mapped_libraries(report: dict[str, Any], wheel: Path) -> None:
    site = wheel_site(report)
    foreign = clean_root.foreign_libraries(report, site)
    assert not foreign, f"shared objects from outside the wheel and the manylinux set: {foreign}"
    # Every library the wheel carries is the one loaded: none came from the system.
    carried = {n.split("/", 1)[1] for n in wheel_names(wheel) if n.startswith("pyspdk_sys.libs/")}
    carried.discard("")
    libs = os.path.join(site, "pyspdk_sys.libs") + os.sep
    loaded = {os.path.basename(p) for p in report["mapped"] if p.startswith(libs)}
    assert carried and loaded == carried, (sorted(carried), sorted(loaded))
    assert report["library"] in report["mapped"]


def test_only_wheel_and_manylinux_libraries_are_mapped(
    root_run: clean_root.RootRun, manylinux_wheel: Path
) -> None:
    report = clean_root.last_json(step(root_run, "checks"))
    assert report["python"].startswith("3.11.")  # Debian bookworm's own CPython
    check_mapped_libraries(report, manylinux_wheel)


@pytest.mark.parametrize(
    ("versions", "variable"),
    [
        (clean_root.NEWER_PYTHONS, "PYSPDK_OTHER_PYTHON"),
        (clean_root.OLDEST_PYTHONS, "PYSPDK_OLDEST_PYTHON"),
    ],
    ids=["newer", "oldest"],
)
def test_another_cpython_installs_the_same_wheel(
    spdk: Any, manylinux_wheel: Path, tmp_path: Path, versions: tuple[str, ...], variable: str
) -> None:
    python = clean_root.other_python(versions, variable)
    if python is None:
        clean_root.skip_or_fail(
            f"no CPython {' or '.join(versions)} found (on PATH, through pyenv, or {variable})"
        )
    assert python is not None
    wheels = clean_root.cffi_wheels()
    if not wheels.is_dir():
        clean_root.skip_or_fail(f"no cffi wheels in {wheels}: run {clean_root.PREPARE}")
    venv = tmp_path / "venv"
    run(python, "-m", "venv", venv, env=clean_env())
    venv_python = venv / "bin" / "python"
    version = run(venv_python, "-c", "import sys; print(sys.version_info[:2])").stdout
    assert version.strip() != str(sys.version_info[:2]), "not another CPython"
    if variable not in os.environ:
        assert version.strip() in {str(tuple(map(int, v.split(".")))) for v in versions}
    env = clean_env(PIP_CONFIG_FILE=os.devnull)
    run(venv_python, "-m", "pip", "install", "--no-index", "--find-links", wheels,
        "--disable-pip-version-check", manylinux_wheel, env=env)  # fmt: skip
    checks = run(venv_python, clean_root.CHECKS, env=env, cwd=tmp_path, timeout=180)
    report = clean_root.last_json(checks.stdout)
    print(f"CPython {report['python']}: I/O and mapped libraries checked")
    assert report["same"] and report["zeros"]
    assert report["package"].startswith(str(venv))
    assert report["spdk_version"] == spdk.SPDK_VERSION
    check_mapped_libraries(report, manylinux_wheel)


# ---------------------------------------------------------------- the harness itself


def test_missing_root_names_the_script(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(clean_root, "ROOTFS_DIR", tmp_path)
    reason = clean_root.missing()
    assert reason is not None
    assert "prepare.sh" in reason and str(tmp_path) in reason


def test_mapped_libraries_are_classified() -> None:
    site = "/venv/lib/python3.13/site-packages"
    report = {
        "baseline": ["/usr/bin/python3.13", "/usr/lib/x86_64-linux-gnu/libssl.so.3"],
        "mapped": [
            "/usr/bin/python3.13",
            "/usr/lib/x86_64-linux-gnu/libssl.so.3",  # the interpreter's _ssl
            "/usr/lib/x86_64-linux-gnu/libc.so.6",
            "/usr/lib/x86_64-linux-gnu/libstdc++.so.6.0.30",
            "/usr/lib64/ld-linux-x86-64.so.2",
            f"{site}/_cffi_backend.cpython-313-x86_64-linux-gnu.so",
            f"{site}/pyspdk_sys/_pyspdk_sys.abi3.so",
            f"{site}/pyspdk_sys.libs/libuuid-94176513.so.1.3.0",
            "/usr/lib/x86_64-linux-gnu/libuuid.so.1.3.0",  # not the wheel's copy
            "/usr/local/lib/libspdk_fat.so.26.01.0",  # an installed fat library
            f"{site}/pyspdk_sys_evil/libc.so.6.so",  # a look-alike outside the wheel
        ],
    }
    assert clean_root.foreign_libraries(report, site) == [
        "/usr/lib/x86_64-linux-gnu/libuuid.so.1.3.0",
        "/usr/local/lib/libspdk_fat.so.26.01.0",
        f"{site}/pyspdk_sys_evil/libc.so.6.so",
    ]


def test_prepare_script_is_shellcheck_clean() -> None:
    require_tool("shellcheck")
    result = subprocess.run(
        ["shellcheck", str(clean_root.PREPARE)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout


def test_prepare_script_documents_itself() -> None:
    result = subprocess.run(
        [str(clean_root.PREPARE), "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0
    assert "PYSPDK_ROOTFS_DIR" in result.stdout
    bad = subprocess.run(
        [str(clean_root.PREPARE), "--bogus"], capture_output=True, text=True, check=False
    )
    assert bad.returncode == 2


def test_prepare_script_does_nothing_when_the_root_is_ready() -> None:
    reason = clean_root.missing()
    if reason is not None:
        clean_root.skip_or_fail(reason)
    stamp = (clean_root.ROOTFS_DIR / "stamp").stat().st_mtime_ns
    result = subprocess.run(
        [str(clean_root.PREPARE)], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "clean root ready" in result.stderr
    assert (clean_root.ROOTFS_DIR / "stamp").stat().st_mtime_ns == stamp
