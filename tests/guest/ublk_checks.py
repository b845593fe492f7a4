"""ublk checks run inside the QEMU guest (see tests/test_ublk_guest.py), one boot for all.

Prints one JSON line per check: {"check", "ok", "seconds", "detail"}. Ends
with os._exit, without stopping SPDK: the guest powers off right after, and a
full teardown would double the time under TCG.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from pyspdk_sys import ublk
from pyspdk_sys.bdev import create_malloc
from pyspdk_sys.errors import UblkIdInUseError
from pyspdk_sys.pybdev import PythonBdev
from pyspdk_sys.runtime import Runtime

MIB = 1 << 20
SIZE = 16 * MIB
FAULT_AT = 4 * MIB  # reads of [FAULT_AT, FAULT_AT + 64 KiB) fail in the backend


class FaultyRam:
    def __init__(self, size: int) -> None:
        self.data = bytearray(size)
        self.reads = 0

    def readinto(self, offset: int, buffer: memoryview) -> None:
        self.reads += 1
        if FAULT_AT <= offset < FAULT_AT + 65536:
            raise OSError(5, "injected fault")
        buffer[:] = self.data[offset : offset + len(buffer)]

    def write(self, offset: int, data: memoryview) -> None:
        self.data[offset : offset + len(data)] = data


def emit(check: str, fn: Callable[[], str]) -> None:
    start = time.monotonic()
    try:
        detail, ok = fn(), True
    except Exception:
        detail, ok = traceback.format_exc(), False
    line = {
        "check": check,
        "ok": ok,
        "seconds": round(time.monotonic() - start, 2),
        "detail": detail,
    }
    print(json.dumps(line), flush=True)


def dd(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["dd", *args], capture_output=True, text=True, timeout=timeout)


def round_trip(device: str, pattern: str, offset_mib: int = 1, mib: int = 2) -> str:
    with open(pattern, "wb") as out:
        out.write(os.urandom(mib * MIB))
    wrote = dd(f"if={pattern}", f"of={device}", "bs=64K", f"seek={offset_mib * 16}", "oflag=direct")
    assert wrote.returncode == 0, wrote.stderr
    back = pattern + ".back"
    read = dd(
        f"if={device}",
        f"of={back}",
        "bs=64K",
        f"skip={offset_mib * 16}",
        f"count={mib * 16}",
        "iflag=direct",
    )
    assert read.returncode == 0, read.stderr
    with open(pattern, "rb") as a, open(back, "rb") as b:
        assert a.read() == b.read(), "data read back differs from data written"
    return f"{mib} MiB written and verified through {device}"


def wait_for(path: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)


# A server that starts /dev/ublkb5 and dies without stopping it (SIGKILL).
CRASHING_SERVER = """
import os, signal, time
from pyspdk_sys import ublk
from pyspdk_sys.bdev import create_malloc
from pyspdk_sys.runtime import Runtime
rt = Runtime(mem_size_mb=256, name="crashing").start()
ublk.create_target(rt)
create_malloc(rt, "Crash5", 16 << 20, 512)
disk = ublk.start_disk(rt, "Crash5", 5, num_queues=1, queue_depth=32)
while not os.path.exists(disk.device):
    time.sleep(0.05)
print("READY", flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def main() -> None:
    start = time.monotonic()
    rt = Runtime(mem_size_mb=1024).start()
    print(
        json.dumps(
            {
                "check": "spdk_start",
                "ok": True,
                "seconds": round(time.monotonic() - start, 2),
                "detail": "",
            }
        ),
        flush=True,
    )
    backend = FaultyRam(SIZE)
    state: dict[str, Any] = {}

    def target() -> str:
        ublk.create_target(rt)
        create_malloc(rt, "Malloc0", SIZE, 512)
        state["py"] = PythonBdev(rt, "Py1", backend, num_blocks=SIZE // 512, workers=2)
        disk0 = ublk.start_disk(rt, "Malloc0", 0, num_queues=1, queue_depth=64)
        disk1 = ublk.start_disk(rt, "Py1", 1, num_queues=2, queue_depth=32)
        wait_for(disk0.device)
        wait_for(disk1.device)
        disks = ublk.get_disks(rt)
        assert [(d.id, d.bdev_name, d.num_queues, d.queue_depth) for d in disks] == [
            (0, "Malloc0", 1, 64),
            (1, "Py1", 2, 32),
        ], disks
        return repr(disks)

    emit("start_disks", target)
    emit("malloc_round_trip", lambda: round_trip("/dev/ublkb0", "/tmp/p0"))

    def python_disk() -> str:
        reads = backend.reads
        detail = round_trip("/dev/ublkb1", "/tmp/p1", offset_mib=8)
        assert backend.reads > reads, "the Python backend saw no reads"
        with open("/tmp/p1", "rb") as written:
            assert backend.data[8 * MIB : 10 * MIB] == written.read()
        return detail + f"; backend served {backend.reads - reads} reads"

    emit("python_round_trip", python_disk)

    def fault() -> str:
        got = dd(
            "if=/dev/ublkb1",
            "of=/dev/null",
            "bs=4K",
            f"skip={FAULT_AT // 4096}",
            "count=4",
            "iflag=direct",
        )
        assert got.returncode != 0, "dd read a failing range without error"
        assert "Input/output error" in got.stderr, got.stderr
        ok = dd("if=/dev/ublkb1", "of=/dev/null", "bs=4K", "count=4", "iflag=direct")
        assert ok.returncode == 0, "the device did not stay up: " + ok.stderr
        return got.stderr.strip().splitlines()[0]

    emit("backend_exception_is_eio", fault)

    def id_in_use() -> str:
        try:
            ublk.start_disk(rt, "Malloc0", 1)
        except UblkIdInUseError as exc:
            return str(exc)
        raise AssertionError("a second disk with id 1 was started")

    emit("id_in_use", id_in_use)

    def stop_in_flight() -> str:
        # Reads the whole disk over and over (one pass can take under a
        # second here), until a read fails; then prints that dd's error.
        reader = subprocess.Popen(
            [
                "sh",
                "-c",
                "while dd if=/dev/ublkb0 of=/dev/null bs=4K iflag=direct 2>/tmp/dd.err; do :; done;"
                " cat /tmp/dd.err >&2; exit 1",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        writer = threading.Thread(
            target=dd,
            args=("if=/dev/zero", "of=/dev/ublkb0", "bs=4K", "count=100000", "oflag=direct"),
            daemon=True,
        )
        writer.start()
        time.sleep(1.0)
        assert reader.poll() is None, "dd finished before the stop"
        begin = time.monotonic()
        ublk.stop_disk(rt, 0)
        took = time.monotonic() - begin
        _out, err = reader.communicate(timeout=60)
        writer.join(60)
        assert not writer.is_alive()
        deadline = time.monotonic() + 10
        while os.path.exists("/dev/ublkb0") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not os.path.exists("/dev/ublkb0"), "/dev/ublkb0 still exists"
        assert [d.id for d in ublk.get_disks(rt)] == [1]
        return f"stop_disk took {took:.2f} s; dd rc {reader.returncode}: {err.strip()[-120:]}"

    emit("stop_with_io_in_flight", stop_in_flight)

    def recover_after_crash() -> str:
        server = subprocess.run(
            [sys.executable, "-c", CRASHING_SERVER], capture_output=True, text=True, timeout=120
        )
        assert "READY" in server.stdout, server.stdout + server.stderr[-2000:]
        assert server.returncode == -signal.SIGKILL, server.returncode
        assert os.path.exists("/dev/ublkb5"), "the crashed server's disk is gone"
        # A read while no server runs waits (the kernel queues it), not fails.
        waiting = subprocess.Popen(
            ["dd", "if=/dev/ublkb5", "of=/dev/null", "bs=4K", "count=16", "iflag=direct"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(1.0)
        assert waiting.poll() is None, "a read with no server ended: " + waiting.stderr.read()
        create_malloc(rt, "Recovered5", SIZE, 512)
        begin = time.monotonic()
        disk = ublk.recover_disk(rt, "Recovered5", 5)
        took = time.monotonic() - begin
        assert (disk.id, disk.bdev_name) == (5, "Recovered5"), disk
        _out, err = waiting.communicate(timeout=30)
        assert waiting.returncode == 0, "the waiting read failed after recovery: " + err
        detail = round_trip("/dev/ublkb5", "/tmp/p5")
        ublk.stop_disk(rt, 5)
        return (
            f"/dev/ublkb5 recovered by this process in {took:.2f} s; the read that waited "
            f"for it completed; {detail}"
        )

    emit("recover_after_crash", recover_after_crash)
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
