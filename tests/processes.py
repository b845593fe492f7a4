"""Helpers for the tests that run spdk_tgt as a process (test_process*.py, test_cli_serve.py)."""

from __future__ import annotations

import re
import resource
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cores import reactor_mask

# On a shared machine another program's spdk_tgt may hold SPDK's lock on a
# core; these tests are not about that lock. And no core files: spdk_tgt
# raises its core size limit unless told not to, and dumps into its working
# directory (v26.01's vhost can crash at exit: see test_vhost_scsi_operations).
TEST_ARGS = ("--disable-cpumask-locks", "--limit-coredump")


@pytest.fixture(scope="module", autouse=True)
def no_core_dumps() -> Iterator[None]:
    """Processes started in the module inherit a core size limit of 0."""
    soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (0, hard))
    yield
    resource.setrlimit(resource.RLIMIT_CORE, (soft, hard))


# How an SPDK build names itself: "SPDK v26.01" from an exported tree, "SPDK
# v26.01 git sha1 2ef883ef96" from a git checkout (the spdk/ submodule is one).
_BANNER = re.compile(r"SPDK v(\d+\.\d+(?:\.\d+)?)(?:-pre)?(?: git sha1 [0-9a-f]+)?")


def release_of(banner: str) -> str:
    """The release number in an SPDK version banner ("26.01"); AssertionError if it is none."""
    match = _BANNER.fullmatch(banner)
    assert match, f"not an SPDK version banner: {banner!r}"
    return match.group(1)


def assert_same_release(banner: str) -> None:
    """The banner names the release the module was built against: the tools build.sh
    installed beside that library come from the same tree. Releases are compared, not
    banners, so a git-built SPDK passes as an exported tree does."""
    from pyspdk_sys import SPDK_VERSION

    assert release_of(banner) == SPDK_VERSION, (banner, SPDK_VERSION)


def started_banner(log: str) -> str:
    """The banner of SPDK's "Starting SPDK v..." log line."""
    match = re.search(r"Starting (SPDK v\S+(?: git sha1 [0-9a-f]+)?)", log)
    assert match, "no 'Starting SPDK v...' line in the log"
    return match.group(1)


def new_process(spdk_tgt: Path, **options: Any) -> Any:
    """An SpdkProcess for spdk_tgt on the subprocess reactor core (cores.py) unless told."""
    from pyspdk_sys.process import SpdkProcess

    options.setdefault("cpu_mask", reactor_mask())
    options.setdefault("args", TEST_ARGS)
    return SpdkProcess(spdk_tgt, **options)


def official_client() -> Any:
    try:
        from spdk.rpc.client import JSONRPCClient
    except ImportError:
        pytest.fail("the official SPDK client is not installed (pip install 'spdk==26.1.*')")
    return JSONRPCClient


def spdk_rpc(socket_path: str, *args: str) -> subprocess.CompletedProcess[str]:
    """SPDK's own command-line client, the spdk package's spdk-rpc, in a subprocess."""
    script = shutil.which("spdk-rpc", path=str(Path(sys.executable).parent)) or shutil.which(
        "spdk-rpc"
    )
    if script is None:
        pytest.fail("spdk-rpc is not installed (pip install 'spdk==26.1.*')")
    return subprocess.run(
        [script, "-s", socket_path, *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
