"""Helpers for the tests that run spdk_tgt as a process (test_process*.py, test_cli_serve.py)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

# On a shared machine another program's spdk_tgt may hold SPDK's lock on a
# core; these tests are not about that lock.
NO_LOCKS = ("--disable-cpumask-locks",)


def new_process(spdk_tgt: Path, **options: Any) -> Any:
    from pyspdk_sys.process import SpdkProcess

    options.setdefault("cpu_mask", "0x2")
    options.setdefault("args", NO_LOCKS)
    return SpdkProcess(spdk_tgt, **options)


def official_client() -> Any:
    try:
        from spdk.rpc.client import JSONRPCClient  # type: ignore[import-untyped]
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
