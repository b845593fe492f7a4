"""End to end: SPDK started in-process, managed with the official SPDK client.

The application runs in a child interpreter because it stops SPDK, and SPDK
starts once per process. spdk_tgt from the same tree is the reference for
the RPC methods that must be there.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from cores import reactor_mask

from conftest import run_python, skip_or_fail, spdk_tool


@pytest.fixture(scope="module")
def spdk_client() -> Any:
    try:
        from spdk.rpc.client import JSONRPCClient
    except ImportError:
        skip_or_fail("the official SPDK client is not installed (pip install 'spdk==26.1.*')")
    return JSONRPCClient


def wait_for_socket(path: Path, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            pytest.fail(f"spdk_tgt exited with {process.returncode} before listening")
        if time.monotonic() > deadline:
            pytest.fail(f"spdk_tgt did not create {path} within {timeout} s")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def spdk_tgt_methods(spdk: Any, spdk_client: Any, short_tmp: Path) -> set[str]:
    """Every RPC method spdk_tgt registers (--wait-for-rpc: before any init)."""
    socket = short_tmp / "tgt.sock"
    tgt = subprocess.Popen(
        [
            str(spdk_tool("spdk_tgt")),
            "--no-huge",
            "-s",
            "1024",
            "-r",
            str(socket),
            "--wait-for-rpc",
            "-m",
            reactor_mask(),
            "--disable-cpumask-locks",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_socket(socket, tgt)
        client = spdk_client(str(socket))
        methods = set(client.call("rpc_get_methods", {"include_aliases": True}))
        client.close()
    finally:
        tgt.send_signal(signal.SIGTERM)
        tgt.wait(timeout=30)
    return methods


APP = """
import json, os
from pyspdk_sys.runtime import Runtime
from cores import reactor_mask
from spdk.rpc.client import JSONRPCClient

socket = {socket!r}
with Runtime(cpu_mask=reactor_mask(), rpc_socket=socket, mem_size_mb=1024) as rt:
    client = JSONRPCClient(socket)
    methods = client.call("rpc_get_methods", {{"include_aliases": True}})
    name = client.call(
        "bdev_malloc_create", {{"name": "Malloc0", "num_blocks": 2048, "block_size": 512}}
    )
    bdevs = client.call("bdev_get_bdevs")
    subsystems = [s["subsystem"] for s in client.call("framework_get_subsystems")]
    client.close()
print(json.dumps({{
    "methods": methods, "name": name, "bdevs": bdevs, "subsystems": subsystems,
    "state": rt.state.value, "socket_left": os.path.exists(socket),
}}))
"""


@pytest.fixture(scope="module")
def app_result(spdk: Any, spdk_client: Any, short_tmp: Path) -> dict[str, Any]:
    result = run_python(APP.format(socket=str(short_tmp / "app.sock")))
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_malloc_bdev_created_and_listed(app_result: dict[str, Any]) -> None:
    assert app_result["name"] == "Malloc0"
    (bdev,) = [b for b in app_result["bdevs"] if b["name"] == "Malloc0"]
    assert bdev["block_size"] == 512
    assert bdev["num_blocks"] == 2048
    assert bdev["product_name"] == "Malloc disk"


def test_every_subsystem_initialised(app_result: dict[str, Any]) -> None:
    assert {"bdev", "accel", "iobuf", "sock", "nvmf", "vhost_blk", "ublk", "iscsi"} <= set(
        app_result["subsystems"]
    )


def test_shut_down_cleanly(app_result: dict[str, Any]) -> None:
    assert app_result["state"] == "stopped"
    assert not app_result["socket_left"]


def test_every_spdk_tgt_method_is_there(
    app_result: dict[str, Any], spdk_tgt_methods: set[str]
) -> None:
    ours = set(app_result["methods"])
    assert spdk_tgt_methods - ours == set()
    assert len(spdk_tgt_methods) > 200


def test_static_registry_matches_the_running_app(app_result: dict[str, Any], spdk: Any) -> None:
    from pyspdk_sys import registry

    assert set(registry.registered("rpc_methods")) == set(app_result["methods"])


def test_rpc_socket_parent_must_exist(spdk: Any, tmp_path: Path) -> None:
    from pyspdk_sys.runtime import Runtime

    missing = tmp_path / "missing"
    with pytest.raises(ValueError, match=re.escape(f"rpc_socket's directory '{missing}' does not")):
        Runtime(rpc_socket=missing / "spdk.sock")
    too_long = "/tmp/" + "x" * 120
    with pytest.raises(ValueError, match=r"rpc_socket '/tmp/x+' is 125 bytes; .* at most 107"):
        Runtime(rpc_socket=too_long)
    # Refused before anything was made: no directory, socket or lock file.
    assert list(tmp_path.iterdir()) == []
    assert not os.path.lexists(too_long) and not os.path.lexists(too_long + ".lock")
