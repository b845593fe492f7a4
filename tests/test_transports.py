"""vhost-user and NVMe-oF/TCP across processes: integrity, other initiators, faults.

Every SPDK here runs in its own process (transport_roles.py, spdk_tgt,
bdevperf): SPDK starts once per process, and a fault must not take the test
run down. Times are printed (pytest -s shows them) and bounded by asserts.
vhost-user initiators need hugepages: reserved here when running as root,
otherwise the vhost tests skip (fail under PYSPDK_REQUIRE_SPDK=1).
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cores import reactor_mask
from processes import TEST_ARGS, new_process
from timing import time_bound

from conftest import PROJECT_DIR, ensure_hugepages, spdk_tool

ROLE = ["-c", "import transport_roles as r; r.main()"]
INITIATOR_PAGES_MB = 1024
NQN = "nqn.2016-06.io.spdk:pyspdk-test"
# Under 200,000 verified I/Os is not enough (issue 10): 12 rounds over 64 MiB
# of 4 KiB blocks is 196,608 through read_many, plus 8 threads x 500 and the
# futures/asyncio reads.
INTEGRITY = {"size": 64 << 20, "rounds": 12, "thread_ios": 500}


class Role:
    """One transport_roles.py process: lines in on stdin, READY/RESULT lines out."""

    def __init__(self, role: str, args: dict[str, Any]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, *ROLE, role, json.dumps(args)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=PROJECT_DIR / "tests",
            start_new_session=True,
        )
        self.pid = self.proc.pid
        self.lines: list[str] = []

    def expect(self, prefix: str, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.proc.stdout], [], [], max(left, 0))
            if not ready:
                self.kill()
                pytest.fail(f"no {prefix} line in {timeout} s; stderr:\n{self.stderr()}")
            line = self.proc.stdout.readline()
            if not line:
                self.proc.wait(10)
                pytest.fail(
                    f"the {prefix} process ended ({self.proc.returncode}) without a {prefix} "
                    f"line; stderr:\n{self.stderr()}"
                )
            self.lines.append(line)
            if line.startswith(prefix + " "):
                result: dict[str, Any] = json.loads(line[len(prefix) + 1 :])
                return result

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def stderr(self) -> str:
        if self.proc.poll() is None:
            return "(still running)"
        assert self.proc.stderr is not None
        text = self.proc.stderr.read()
        return "\n".join(line for line in text.splitlines() if "VHOST_CONFIG" not in line)[-3000:]

    def finish(self, timeout: float = 60) -> int:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"process {self.pid} did not end within {timeout} s")
        reap(self.pid)
        return code

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.proc.wait(30)
        reap(self.pid)


def reap(pid: int) -> None:
    """What DPDK leaves behind when a process of ours was killed: its hugepage files
    hold their pages until removed."""
    for path in glob.glob(f"/dev/hugepages/spdk_pid{pid}map_*"):
        with contextlib.suppress(OSError):
            os.unlink(path)
    shutil.rmtree(f"/var/run/dpdk/spdk_pid{pid}", ignore_errors=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def vhost_pages(spdk: Any) -> None:
    """Enough free 2 MiB hugepages (and a mount) for one vhost-user initiator."""
    ensure_hugepages(INITIATOR_PAGES_MB)


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="pyspdk-vh-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def expected_verified(size: int, rounds: int, thread_ios: int) -> int:
    """What an integrity role verifies when every I/O succeeds: each block once a
    read_many round, each thread's writes, 64 futures and 64 asyncio reads."""
    return size // 4096 * rounds + 8 * thread_ios + 64 + 64


def _integrity(kind: str, target_args: dict[str, Any]) -> dict[str, Any]:
    init = Role("integrity", {**target_args, "kind": kind, **INTEGRITY})
    started = time.monotonic()
    result = init.expect("RESULT", 400)
    assert init.finish() == 0, init.stderr()
    print(f"\n{kind} integrity: {result} ({time.monotonic() - started:.1f} s)")
    assert result["errors"] == []
    assert result["mismatches"] == 0
    assert result["thread_verified"] == 8 * INTEGRITY["thread_ios"]
    assert result["verified"] == expected_verified(**INTEGRITY) >= 200_000
    return result


# ------------------------------------------------------------ Python target, Python initiator


def test_vhost_python_to_python_integrity(vhost_pages: None, sock_dir: Path) -> None:
    socket_path = str(sock_dir / "deep" / "blk.sock")
    os.mkdir(sock_dir / "deep")
    args = {"kind": "vhost", "socket": socket_path, "size": INTEGRITY["size"]}
    args["target_hugepages"] = False
    target = Role("serve", args)
    try:
        ready = target.expect("READY", 120)
        assert ready["socket"] == socket_path  # a full path, wherever the target's cwd is
        _integrity("vhost", {"socket": socket_path})
    finally:
        assert target.finish() == 0, target.stderr()
    assert not os.path.exists(socket_path)


def test_nvmf_python_to_python_integrity(spdk: Any) -> None:
    port = free_port()
    target = Role("serve", {"kind": "nvmf", "nqn": NQN, "port": port, "size": INTEGRITY["size"]})
    try:
        target.expect("READY", 120)
        _integrity("nvmf", {"nqn": NQN, "port": port})
    finally:
        assert target.finish() == 0, target.stderr()


# ------------------------------------------------------------ spdk_tgt target, Python initiator


@pytest.fixture
def spdk_tgt(spdk: Any) -> Iterator[Any]:
    with new_process(spdk_tool("spdk_tgt")) as proc:
        yield proc


def test_spdk_tgt_serves_both_transports_to_python(
    spdk_tgt: Any, vhost_pages: None, sock_dir: Path
) -> None:
    from pyspdk_sys import nvmf, vhost
    from pyspdk_sys.bdev.manage import create_malloc

    create_malloc(spdk_tgt, "Tgt0", 16 << 20, 512)
    create_malloc(spdk_tgt, "Tgt1", 16 << 20, 512)
    socket_path = str(sock_dir / "tgt.sock")
    controller = vhost.create_blk_controller(spdk_tgt, socket_path, "Tgt0")
    assert controller.socket == socket_path and controller.bdevs == ("Tgt0",)
    assert vhost.list_controllers(spdk_tgt) == [controller]
    port = free_port()
    subsystem = nvmf.serve(spdk_tgt, NQN, ["Tgt1"], port=port, discovery=True)
    assert subsystem.namespaces == {1: "Tgt1"}
    assert ("TCP", "127.0.0.1", port) in subsystem.listeners
    small = {"size": 16 << 20, "rounds": 1, "thread_ios": 200}
    for kind, extra in (("vhost", {"socket": socket_path}), ("nvmf", {"nqn": NQN, "port": port})):
        init = Role("integrity", {"kind": kind, **extra, **small})
        result = init.expect("RESULT", 300)
        assert init.finish() == 0, init.stderr()
        print(f"\nspdk_tgt -> Python {kind}: {result}")
        assert result["errors"] == [] and result["mismatches"] == 0
        assert result["verified"] == expected_verified(**small)
    nvmf.delete_subsystem(spdk_tgt, NQN)
    vhost.delete_controller(spdk_tgt, socket_path)
    assert vhost.list_controllers(spdk_tgt) == []
    assert not os.path.exists(socket_path)


# ------------------------------------------------------------ Python target, bdevperf initiator


def _bdevperf(kind: str, attach: dict[str, Any], workdir: Path, seconds: int = 3) -> float:
    """bdevperf's verify workload over `attach`; returns its IOPS once its output shows
    that it ran: no failed or timed-out I/O, no miscompare, and at least 1,000
    I/Os verified (the floor says it moved data, not how fast: the machine is shared)."""
    config = {
        "subsystems": [
            {
                "subsystem": "bdev",
                "config": [{"method": attach["method"], "params": attach["params"]}],
            }
        ]
    }
    path = workdir / f"bdevperf-{kind}.json"
    path.write_text(json.dumps(config))
    command = [str(spdk_tool("bdevperf")), "-m", reactor_mask(1), *TEST_ARGS[:1]]
    command += ["--json", str(path)]
    command += ["-q", "32", "-o", "4096", "-w", "verify", "-t", str(seconds)]
    command += ["-s", "1024", "-g"] if kind == "vhost" else ["--no-huge", "-s", "1024"]
    run = subprocess.run(command, capture_output=True, text=True, timeout=120)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-3000:]
    match = re.search(r"Total\s*:\s*([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)", out)
    assert match, out[-3000:]
    iops, _, failed, timed_out = (float(group) for group in match.groups())
    assert (failed, timed_out) == (0, 0), out[-3000:]
    assert "Buffer mismatch" not in out, out[-3000:]
    assert iops * seconds >= 1000, out[-3000:]
    return iops


def test_bdevperf_verifies_through_python_targets(vhost_pages: None, sock_dir: Path) -> None:
    socket_path = str(sock_dir / "bp.sock")
    port = free_port()
    vhost_target = Role(
        "serve", {"kind": "vhost", "socket": socket_path, "target_hugepages": False}
    )
    nvmf_target = Role("serve", {"kind": "nvmf", "nqn": NQN, "port": port})
    try:
        vhost_target.expect("READY", 120)
        nvmf_target.expect("READY", 120)
        virtio = {
            "method": "bdev_virtio_attach_controller",
            "params": {
                "name": "VirtioUser0",
                "trtype": "user",
                "traddr": socket_path,
                "dev_type": "blk",
                "vq_count": 2,
            },
        }
        nvme = {
            "method": "bdev_nvme_attach_controller",
            "params": {
                "name": "Nvme0",
                "trtype": "tcp",
                "adrfam": "ipv4",
                "traddr": "127.0.0.1",
                "trsvcid": str(port),
                "subnqn": NQN,
            },
        }
        for kind, attach in (("vhost", virtio), ("nvmf", nvme)):
            iops = _bdevperf(kind, attach, sock_dir)
            print(f"\nbdevperf verify over {kind} from a Python target: {iops:.0f} IOPS")
    finally:
        assert vhost_target.finish() == 0, vhost_target.stderr()
        assert nvmf_target.finish() == 0, nvmf_target.stderr()


# ------------------------------------------------------------ faults


def test_nvmf_target_killed_then_back(spdk: Any) -> None:
    """Killed with I/O in flight: every call ends in IoError within the fast-fail
    bound; the target comes back on the same port: I/O resumes."""
    port = free_port()
    args = {"kind": "nvmf", "nqn": NQN, "port": port, "size": 16 << 20}
    target = Role("serve", args)
    target.expect("READY", 120)
    init = Role("fault", {**args, "loss": 30, "fast_fail": 2, "reconnect": 30})
    try:
        init.expect("READY", 120)
        target.kill()
        init.send(str(time.monotonic()))
        first = init.expect("READY", 60)
        assert first == {"phase": "reconnect"}
        target = Role("serve", args)
        target.expect("READY", 120)
        init.send("go")
        result = init.expect("RESULT", 60)
        print(f"\nNVMe/TCP target killed: {result}")
        assert result["hung"] == 0
        assert result["errors"] == ["IoError errno=5"] * 4
        assert result["ok_before"] > 0
        # fast_io_fail_timeout_sec=2, plus detection and one reconnect attempt
        assert result["seconds_to_last_error"] < 2 + 4
        assert result["resumed_after"] is not None and result["resumed_after"] < 10
        assert init.finish() == 0, init.stderr()
    finally:
        init.kill()
        target.finish()


def test_vhost_target_killed_then_reattached(vhost_pages: None, sock_dir: Path) -> None:
    """SPDK's virtio-user initiator does not notice the socket closing: requests in
    flight never complete. The device sees the target's socket stop listening and
    fails every blocking call with IoError (ENOTCONN), with no timeout set; after
    the target is back, a new attach works."""
    socket_path = str(sock_dir / "kill.sock")
    args = {"kind": "vhost", "socket": socket_path, "target_hugepages": False, "size": 16 << 20}
    target = Role("serve", args)
    target.expect("READY", 120)
    init = Role("fault", {**args, "reattach_socket": socket_path})
    try:
        init.expect("READY", 120)
        target.kill()
        init.send(str(time.monotonic()))
        assert init.expect("READY", 60) == {"phase": "reattach"}
        target = Role("serve", args)
        target.expect("READY", 120)
        init.send("go")
        result = init.expect("RESULT", 60)
        print(f"\nvhost-user target killed: {result}")
        assert result["hung"] == 0
        assert result["errors"] == [f"IoError errno={errno.ENOTCONN}"] * 4, result["errors"]
        # The socket is checked every 0.5 s of a wait, after its first 50 ms slice; the
        # margin comes from how late a timed wait ended in that process with I/O running.
        assert result["seconds_to_last_error"] < time_bound(0.5 + 0.05, result["late"]), result
        assert result["reattached_read"] == 4096
    finally:
        init.kill()
        target.finish()


@pytest.mark.parametrize("kind", ["nvmf", "vhost"])
def test_target_bdev_deleted_under_initiator(kind: str, request: Any, sock_dir: Path) -> None:
    """The target deletes the served bdev while 4 threads read: errors, not hangs."""
    if kind == "vhost":
        request.getfixturevalue("vhost_pages")
    else:
        request.getfixturevalue("spdk")
    args: dict[str, Any] = {"kind": kind, "size": 16 << 20, "target_hugepages": False}
    args.update(socket=str(sock_dir / "del.sock"), nqn=NQN, port=free_port())
    target = Role("serve", args)
    target.expect("READY", 120)
    init = Role("fault", {**args, "io_timeout": 10.0, "exit_at_once": True})
    try:
        init.expect("READY", 120)
        target.send("delete")
        deleted_at = time.monotonic()
        target.expect("READY", 30)
        init.send(str(deleted_at))
        result = init.expect("RESULT", 60)
        print(f"\n{kind} bdev deleted on the target: {result}")
        assert result["hung"] == 0
        assert result["errors"] == [f"IoError errno={errno.EIO}"] * 4, result["errors"]
        assert result["seconds_to_last_error"] < 10
    finally:
        init.kill()
        target.finish()
