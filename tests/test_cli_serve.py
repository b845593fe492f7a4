"""`python -m pyspdk_sys serve`: SPDK hosted by Python, managed by SPDK's own tools.

Each test runs serve in a subprocess (SPDK starts once per process) on core 1
and ends it; the official client, spdk-rpc and SpdkProcess.attach manage it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cores import reactor_mask
from processes import (
    assert_same_release,
    no_core_dumps,  # noqa: F401 (an autouse fixture: no core files)
    official_client,
    spdk_rpc,
)

from conftest import PROJECT_DIR

CONFIG = {
    "subsystems": [
        {
            "subsystem": "bdev",
            "config": [
                {
                    "method": "bdev_malloc_create",
                    "params": {"name": "CfgMalloc", "num_blocks": 2048, "block_size": 512},
                }
            ],
        }
    ]
}


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pyspdk_sys", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=PROJECT_DIR / "tests",
    )


class Served:
    """A running `serve` subprocess, its socket and its output file."""

    def __init__(self, directory: Path, *extra: str) -> None:
        self.socket = str(directory / "serve.sock")
        self.output = directory / "serve.out"
        config = directory / "config.json"
        config.write_text(json.dumps(CONFIG))
        with open(self.output, "w") as out:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "pyspdk_sys", "serve", "--rpc-socket", self.socket,
                 "--config", str(config), "--cpu-mask", reactor_mask(), *extra],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=PROJECT_DIR / "tests",
            )  # fmt: skip

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 120
        while "running in pid" not in self.text():
            assert self.popen.poll() is None, f"serve ended early:\n{self.text()}"
            assert time.monotonic() < deadline, f"serve did not start:\n{self.text()}"
            time.sleep(0.05)

    def text(self) -> str:
        return self.output.read_text()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            raise


@pytest.fixture
def served(spdk: Any) -> Iterator[Served]:
    """serve with CONFIG on a socket in a fresh short directory; killed if a test leaves it."""
    directory = Path(tempfile.mkdtemp(prefix="pyspdk-serve-"))
    server = Served(directory)
    try:
        server.wait_ready()
        yield server
    finally:
        if server.popen.poll() is None:
            server.popen.kill()
            server.popen.wait()
        shutil.rmtree(directory, ignore_errors=True)
        forget_dpdk_runtime_dir(server.popen.pid)


def forget_dpdk_runtime_dir(pid: int) -> None:
    """An in-process Runtime leaves DPDK's runtime directory behind (see the report)."""
    shutil.rmtree(f"/var/run/dpdk/spdk_pid{pid}", ignore_errors=True)


def test_managed_by_official_client_spdk_rpc_and_attach(served: Served) -> None:
    from pyspdk_sys.process import SpdkProcess

    with official_client()(served.socket) as client:
        names = [b["name"] for b in client.call("bdev_get_bdevs")]
        assert names == ["CfgMalloc"]  # the config was loaded
        client.call("bdev_null_create", {"name": "ClientNull", "num_blocks": 64, "block_size": 512})
    result = spdk_rpc(served.socket, "bdev_malloc_create", "-b", "CliMalloc", "1", "512")
    assert result.returncode == 0, result.stderr
    result = spdk_rpc(served.socket, "bdev_get_bdevs")
    all_names = {b["name"] for b in json.loads(result.stdout)}
    assert all_names == {"CfgMalloc", "ClientNull", "CliMalloc"}
    assert spdk_rpc(served.socket, "bdev_malloc_delete", "CliMalloc").returncode == 0

    attached = SpdkProcess.attach(served.socket)
    try:
        assert attached.pid == served.popen.pid
        assert_same_release(attached.rpc("spdk_get_version")["version"])
        assert "ClientNull" in [b["name"] for b in attached.rpc("bdev_get_bdevs")]
    finally:
        attached.stop()  # detaches only
    assert served.popen.poll() is None

    assert served.stop(signal.SIGTERM) == 0
    assert "SPDK stopped on SIGTERM" in served.text()
    assert not os.path.exists(served.socket)
    assert not os.path.exists(served.socket + ".lock")


def test_sigint_stops_it(served: Served) -> None:
    # Exits by itself (no kill) and cleanly; stop() kills and raises after 60 s. It takes
    # about a second on a quiet machine, and 20 s were seen with a load of 11 on 2 cores.
    assert served.stop(signal.SIGINT, timeout=60) == 0
    assert "SPDK stopped on SIGINT" in served.text()
    assert not os.path.exists(served.socket)


def test_spdk_kill_instance_stops_it(served: Served) -> None:
    result = spdk_rpc(served.socket, "spdk_kill_instance", "SIGTERM")
    assert result.returncode == 0, result.stderr
    assert served.popen.wait(30) == 0
    assert "SPDK stopped on SIGTERM" in served.text()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["serve"], "--rpc-socket"),
        (["serve", "--rpc-socket", "/tmp/x.sock", "--mem-size-mb", "0"], "mem_size_mb"),
        (["serve", "--rpc-socket", "/tmp/x.sock", "--cpu-mask", "all"], "cpu_mask"),
        (["serve", "--rpc-socket", "/nonexistent-dir/x.sock"], "does not exist"),
        (["serve", "--rpc-socket", "/tmp/x.sock", "--config", "/nonexistent.json"], "config"),
    ],
)
def test_bad_arguments_are_usage_errors(spdk: Any, args: list[str], words: str) -> None:
    result = run_cli(*args)
    assert result.returncode == 2, result.stderr
    assert words in result.stderr


def test_start_failure_exits_1(spdk: Any, short_tmp: Path) -> None:
    """A config SPDK itself refuses (a malloc bdev of no size): SPDK's start fails."""
    config = short_tmp / "refused.json"
    config.write_text(json.dumps({"subsystems": [{"subsystem": "bdev", "config": [
        {"method": "bdev_malloc_create", "params": {"name": "M", "num_blocks": 0,
                                                     "block_size": 512}}]}]}))  # fmt: skip
    popen = subprocess.Popen(
        [sys.executable, "-m", "pyspdk_sys", "serve", "--rpc-socket", str(short_tmp / "small.sock"),
         "--cpu-mask", reactor_mask(), "--config", str(config)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=PROJECT_DIR / "tests",
    )  # fmt: skip
    try:
        _, stderr = popen.communicate(timeout=120)
    finally:
        if popen.poll() is None:
            popen.kill()
            popen.wait()
        forget_dpdk_runtime_dir(popen.pid)
    assert popen.returncode == 1, stderr
    assert "SPDK failed to start" in stderr
    assert "Disk num_blocks must be greater than 0" in stderr  # SPDK's own log


def test_too_little_memory_is_a_usage_error(spdk: Any, short_tmp: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pyspdk_sys", "serve", "--rpc-socket", str(short_tmp / "m.sock"),
         "--cpu-mask", reactor_mask(), "--mem-size-mb", "64"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
        cwd=PROJECT_DIR / "tests",
    )  # fmt: skip
    assert done.returncode == 2
    assert "mem_size_mb=64 is too small" in done.stderr


def test_info_is_the_default(spdk: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from pyspdk_sys.__main__ import main

    assert main(["--list", "--kind", "bdev_modules"]) == 0
    default = capsys.readouterr().out
    assert main(["info", "--list", "--kind", "bdev_modules"]) == 0
    assert capsys.readouterr().out == default
    assert "      malloc" in default.splitlines()


def test_hugepages_report(spdk: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from pyspdk_sys import hugepages
    from pyspdk_sys.__main__ import main

    assert main(["hugepages", "--json"]) == 0
    report = {p["size_kb"]: p for p in json.loads(capsys.readouterr().out)}
    assert set(report) == set(hugepages.supported_sizes())
    assert main(["hugepages"]) == 0
    header = capsys.readouterr().out.splitlines()[0].split()
    assert header == ["size", "total", "free", "reserved", "surplus", "mounts"]
    assert main(["hugepages", "--reserve", "-1"]) == 2
    assert "count must be 0 or more" in capsys.readouterr().err
