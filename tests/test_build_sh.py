"""build.sh's interface, without building SPDK."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import PROJECT_DIR

BUILD_SH = PROJECT_DIR / "build.sh"


def build_sh(*args: object, cwd: Path = PROJECT_DIR) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", BUILD_SH, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=60
    )


def test_help_documents_every_option() -> None:
    result = build_sh("help")
    assert result.returncode == 0
    for option in (
        "--spdk-dir",
        "--prefix",
        "--build-dir",
        "--cpu",
        "--native",
        "--jobs",
        "--no-tools",
        "--no-install",
        "SPDK_DIR",
        "PREFIX",
        "DESTDIR",
        "fuse",
    ):
        assert option in result.stdout, option


def test_unknown_option_is_a_usage_error(tmp_path: Path) -> None:
    result = build_sh("--frobnicate", "--build-dir", tmp_path)
    assert result.returncode == 2
    assert "unknown option: --frobnicate" in result.stderr


def test_empty_tree_says_how_to_fetch_it(tmp_path: Path) -> None:
    empty = tmp_path / "spdk"
    empty.mkdir()
    result = build_sh("--spdk-dir", empty, "--build-dir", tmp_path / "b")
    assert result.returncode == 3
    assert f"no SPDK source tree at {empty}" in result.stderr
    assert "submodule update --init" in result.stderr


def test_tree_without_its_submodules_is_refused(tmp_path: Path) -> None:
    tree = tmp_path / "spdk"
    (tree / "include" / "spdk").mkdir(parents=True)
    (tree / "include" / "spdk" / "version.h.in").write_text("/* generated at build */\n")
    (tree / "VERSION").write_text("26.01.0\n")
    (tree / "configure").write_text("#!/bin/sh\nexit 1\n")
    (tree / "configure").chmod(0o755)
    result = build_sh("--spdk-dir", tree, "--build-dir", tmp_path / "b")
    assert result.returncode == 3
    assert "dpdk/ sources: SPDK's own submodules are missing" in result.stderr
    assert f"git -C '{tree}' submodule update --init dpdk isa-l isa-l-crypto" in result.stderr


def test_bad_jobs_and_relative_prefix(tmp_path: Path) -> None:
    assert build_sh("--jobs", "many", "--build-dir", tmp_path).returncode == 2
    result = build_sh("--prefix", "relative/dir", "--build-dir", tmp_path)
    assert result.returncode == 2
    assert "absolute path" in result.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_shellcheck_clean() -> None:
    result = subprocess.run(["shellcheck", BUILD_SH], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
