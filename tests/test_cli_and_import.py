"""`python -m pyspdk_sys`, and the ImportErrors that say what to do."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from conftest import PROJECT_DIR, require_tool


def run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> Any:
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=cwd or PROJECT_DIR / "tests",
    )


def test_counts(spdk: Any) -> None:
    result = run("-m", "pyspdk_sys")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"library       {spdk.LIBRARY_PATH}" in out
    assert f"SPDK          {spdk.SPDK_VERSION}\n" in out
    assert f"DPDK          {spdk.DPDK_VERSION}\n" in out
    assert spdk.SPDK_VERSION in ("26.01", "26.05")
    for title in (
        "log flags",
        "RPC methods",
        "bdev modules",
        "accel modules",
        "sock implementations",
        "NVMe transports",
        "NVMe-oF transports",
        "PCI drivers",
        "fsdev modules",
        "trace groups",
        "subsystems",
    ):
        assert title in out, title
    assert "bdev_malloc_create" not in out  # counts only without --list


def test_list_one_kind(spdk: Any) -> None:
    result = run("-m", "pyspdk_sys", "--list", "--kind", "bdev_modules")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "      malloc" in lines
    assert "      virtio_blk" in lines
    assert not any("RPC methods" in line for line in lines)


def test_json(spdk: Any) -> None:
    result = run("-m", "pyspdk_sys", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["spdk_version"] == spdk.SPDK_VERSION
    assert report["build"]["cpu_baseline"]
    assert "bdev_malloc_create" in report["registered"]["rpc_methods"]
    assert report["registered"]["nvmf_transports"] == ["TCP"]


def test_bad_kind_is_a_usage_error(spdk: Any) -> None:
    result = run("-m", "pyspdk_sys", "--kind", "widgets")
    assert result.returncode == 2
    assert "invalid choice: 'widgets'" in result.stderr


def copy_package(spdk: Any, tmp_path: Path) -> Path:
    target = tmp_path / "pyspdk_sys"
    shutil.copytree(Path(spdk.__file__).parent, target)
    (extension,) = target.glob("_pyspdk_sys*.so")
    return extension


def test_missing_library_message(spdk: Any, tmp_path: Path) -> None:
    require_tool("patchelf")
    extension = copy_package(spdk, tmp_path)
    needed = Path(os.path.realpath(spdk.LIBRARY_PATH)).name
    subprocess.run(
        ["patchelf", "--replace-needed", needed, "libspdk_fat_gone.so.0", extension], check=True
    )
    result = run("-c", "import pyspdk_sys", cwd=tmp_path)
    assert result.returncode == 1
    assert "pyspdk_sys cannot load the SPDK fat library" in result.stderr
    assert "./build.sh" in result.stderr


def test_version_mismatch_message(spdk: Any, tmp_path: Path) -> None:
    # A library that says it is SPDK 25.09, preloaded over the real one.
    source = tmp_path / "old.c"
    source.write_text(
        "int pyspdk_fat_spdk_version_num(void) { return 250900; }\n"
        'const char *pyspdk_fat_spdk_version(void) { return "SPDK v25.09"; }\n'
    )
    old = tmp_path / "libold.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-o", old, source], check=True)
    env = {**os.environ, "LD_PRELOAD": str(old)}
    result = run("-c", "import pyspdk_sys", env=env)
    assert result.returncode == 1
    assert f"compiled against SPDK headers {spdk.SPDK_VERSION}" in result.stderr
    assert "is SPDK 25.09" in result.stderr
