"""build.sh's interface, without building SPDK."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import PROJECT_DIR, require_tool

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


def test_shellcheck_clean() -> None:
    require_tool("shellcheck")
    result = subprocess.run(["shellcheck", BUILD_SH], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_help_documents_deps_and_wheel() -> None:
    out = build_sh("help").stdout
    for text in (
        "--deps",
        "build.sh deps",
        "build.sh wheel",
        "BUILD_DIR/tools",
        "BUILD_DIR/wheel-tools",
        "manylinux",
        "abi3",
        "SPDK_DIR",
    ):
        assert text in out, text


# ---------------------------------------------------------------- deps

BUILD_TOOLS = "meson\nninja\npyelftools\njinja2\ntabulate\n"


def fake_bin(tmp_path: Path, missing: str) -> tuple[Path, Path]:
    """apt-get and dpkg-query stand-ins: dpkg-query reports `missing` as not installed."""
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    calls = tmp_path / "apt-get.calls"
    (bin_dir / "apt-get").write_text(f'#!/bin/sh\necho "$*" >> {calls}\n')
    (bin_dir / "dpkg-query").write_text(
        "#!/bin/sh\n"
        "for p; do :; done\n"
        f'case " {missing} " in *" $p "*) exit 1 ;; esac\n'
        "printf 'install ok installed'\n"
    )
    for tool in ("apt-get", "dpkg-query"):
        (bin_dir / tool).chmod(0o755)
    return bin_dir, calls


def tools_ready(build_dir: Path) -> None:
    """A tools environment build.sh considers current (its python3 and stamp)."""
    tools = build_dir / "tools"
    (tools / "bin").mkdir(parents=True)
    (tools / "bin" / "python3").symlink_to(sys.executable)
    (tools / "pyspdk-tools").write_text(BUILD_TOOLS)


@pytest.mark.skipif(os.geteuid() != 0, reason="the non-root path goes through sudo")
def test_deps_installs_only_missing_packages(tmp_path: Path) -> None:
    bin_dir, calls = fake_bin(tmp_path, "nasm patchelf")
    tools_ready(tmp_path / "b")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    result = subprocess.run(
        ["bash", BUILD_SH, "deps", "--build-dir", tmp_path / "b"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "installing Debian packages: nasm patchelf" in result.stdout
    assert "==> tools      up to date" in result.stdout
    lines = calls.read_text().splitlines()
    assert lines == ["update", "install -y --no-install-recommends nasm patchelf"]


def test_deps_with_nothing_missing_calls_no_apt(tmp_path: Path) -> None:
    bin_dir, calls = fake_bin(tmp_path, "")
    tools_ready(tmp_path / "b")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    result = subprocess.run(
        ["bash", BUILD_SH, "deps", "--build-dir", tmp_path / "b"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "==> packages   up to date" in result.stdout
    assert not calls.exists()


def test_deps_makes_a_private_tools_environment(tmp_path: Path) -> None:
    # The real thing: a virtual environment with the build's Python tools,
    # from the package index; the Python running this test is left alone.
    bin_dir, _calls = fake_bin(tmp_path, "")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    env.pop("VIRTUAL_ENV", None)
    result = subprocess.run(
        ["bash", BUILD_SH, "deps", "--build-dir", tmp_path / "b"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    tools = tmp_path / "b" / "tools"
    assert (tools / "pyspdk-tools").read_text() == BUILD_TOOLS
    check = subprocess.run(
        [tools / "bin" / "python3", "-c", "import mesonbuild, elftools, jinja2, tabulate"],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stderr
    assert (tools / "bin" / "meson").is_file()
    assert (tools / "bin" / "ninja").is_file()
    # A second run finds it current.
    again = subprocess.run(
        ["bash", BUILD_SH, "deps", "--build-dir", tmp_path / "b"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert "==> tools      up to date" in again.stdout


# ---------------------------------------------------------------- submodule

GIT_ENV = {
    # Local file:// submodules are refused by default since git 2.38.
    "GIT_CONFIG_COUNT": "1",
    "GIT_CONFIG_KEY_0": "protocol.file.allow",
    "GIT_CONFIG_VALUE_0": "always",
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.org",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.org",
}


def git(*args: object, cwd: Path) -> None:
    subprocess.run(
        ["git", *map(str, args)],
        cwd=cwd,
        check=True,
        capture_output=True,
        env={**os.environ, **GIT_ENV},
    )


def repo(path: Path, files: dict[str, str]) -> Path:
    path.mkdir(parents=True)
    git("init", "-q", "-b", "main", cwd=path)
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    git("add", "-A", cwd=path)
    git("commit", "-q", "-m", "init", cwd=path)
    return path


def project_with_submodule(tmp_path: Path) -> Path:
    """A clone of a project whose spdk/ submodule (a fake SPDK tree) is not fetched."""
    dpdk = repo(tmp_path / "src" / "dpdk", {"meson.build": "# dpdk\n"})
    isal = repo(tmp_path / "src" / "isa-l", {"Makefile.am": "# isa-l\n"})
    isalc = repo(tmp_path / "src" / "isa-l-crypto", {"Makefile.am": "# isa-l-crypto\n"})
    spdk = repo(
        tmp_path / "src" / "spdk",
        {
            "VERSION": "26.01.0\n",
            "include/spdk/version.h.in": "/* generated */\n",
            # Fails on purpose: the test is about what happens before configure.
            "configure": "#!/bin/sh\necho fake configure >&2\nexit 1\n",
        },
    )
    (spdk / "configure").chmod(0o755)
    git("add", "configure", cwd=spdk)
    for sub in (dpdk, isal, isalc):
        git("submodule", "add", "-q", sub.as_uri(), sub.name, cwd=spdk)
    git("commit", "-q", "-m", "submodules", cwd=spdk)
    origin = repo(tmp_path / "src" / "project", {"build.sh": BUILD_SH.read_text()})
    git("submodule", "add", "-q", spdk.as_uri(), "spdk", cwd=origin)
    git("commit", "-q", "-m", "spdk", cwd=origin)
    clone = tmp_path / "clone"
    git("clone", "-q", origin.as_uri(), clone, cwd=tmp_path)
    return clone


def test_missing_submodule_is_fetched(tmp_path: Path) -> None:
    clone = project_with_submodule(tmp_path)
    assert not (clone / "spdk" / "VERSION").exists()
    result = subprocess.run(
        ["bash", clone / "build.sh", "--build-dir", tmp_path / "b", "--no-install"],
        capture_output=True,
        text=True,
        env={**os.environ, **GIT_ENV},
        timeout=120,
    )
    assert "==> submodule  ok" in result.stdout, result.stdout + result.stderr
    for name in ("VERSION", "dpdk/meson.build", "isa-l/Makefile.am", "isa-l-crypto/Makefile.am"):
        assert (clone / "spdk" / name).is_file(), name
    # It went on to the build: missing prerequisites (3) or the fake configure (1).
    assert result.returncode in (1, 3)
    assert "no SPDK source tree" not in result.stderr


def test_unreachable_submodule_says_to_use_spdk_dir(tmp_path: Path) -> None:
    clone = project_with_submodule(tmp_path)
    git(
        "config", "-f", ".gitmodules", "submodule.spdk.url", (tmp_path / "gone").as_uri(), cwd=clone
    )
    result = subprocess.run(
        ["bash", clone / "build.sh", "--build-dir", tmp_path / "b"],
        capture_output=True,
        text=True,
        env={**os.environ, **GIT_ENV},
        timeout=120,
    )
    assert result.returncode == 3
    assert "==> submodule  FAILED" in result.stdout
    assert "could not fetch the spdk/ submodule" in result.stderr
    assert "SPDK_DIR=/path/to/that/tree ./build.sh --deps" in result.stderr


# ---------------------------------------------------------------- wheel


def test_wheel_usage_errors(tmp_path: Path) -> None:
    assert build_sh("wheel", "--frobnicate").returncode == 2
    result = build_sh("wheel", "--prefix", tmp_path / "nothing")
    assert result.returncode == 3
    assert "no fat library under" in result.stderr
