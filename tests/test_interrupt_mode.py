"""Interrupt mode: an idle runtime sleeps, and every I/O path still works.

Each SPDK run is a subprocess with a deadline (SPDK starts once per process).
A process sleeps when its threads are seldom runnable: the sum over its
threads of the time running and the time waiting for a CPU (schedstat), over
a window of wall time. A reactor that polls is runnable all the time however
loaded the machine is, while its CPU time is only the share the scheduler
gives it: a busy reactor got 17-23% of a core here under a load of 11, and
would pass a bound on CPU time on a busier machine. So both are bounded: CPU
time far above a sleeping runtime's (about 0.2% of a core here) and runnable
time far below a polling one's (100%).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap

import pytest

from conftest import PROJECT_DIR, ensure_hugepages, run_python

IDLE_LIMIT_PERCENT = 10.0
RUNNABLE_LIMIT_PERCENT = 25.0

USAGE = textwrap.dedent(
    """
    import glob as _glob, os as _os, time as _time

    def _runnable_ns(pid):
        total = 0
        for path in _glob.glob(f"/proc/{pid}/task/*/schedstat"):
            try:
                with open(path) as f:
                    running, waiting, _ = f.read().split()
            except (OSError, ValueError):
                continue  # a thread that ended meanwhile
            total += int(running) + int(waiting)
        return total

    def _cpu_s(pid):
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _os.sysconf("SC_CLK_TCK")

    def usage(seconds=3.0, pid=None):
        # {"cpu": % of a core used, "runnable": % of the time some thread ran or
        # waited to run} for process pid (this one by default) over seconds.
        pid = _os.getpid() if pid is None else pid
        c0, r0, w0 = _cpu_s(pid), _runnable_ns(pid), _time.monotonic()
        _time.sleep(seconds)
        wall = _time.monotonic() - w0
        return {"cpu": 100 * (_cpu_s(pid) - c0) / wall,
                "runnable": 100 * (_runnable_ns(pid) - r0) / 1e9 / wall}
    """
)


def assert_sleeps(found: dict[str, float]) -> None:
    """usage() of a process whose reactors sleep."""
    assert found["cpu"] < IDLE_LIMIT_PERCENT, found
    assert found["runnable"] < RUNNABLE_LIMIT_PERCENT, found


COMMON = USAGE + textwrap.dedent(
    """
    import asyncio, json, os, sys, tempfile, time
    from pyspdk_sys.runtime import Runtime

    def reactors_in_interrupt(rt):
        return [r["in_interrupt"] for r in rt.rpc("framework_get_reactors")["reactors"]]
    """
)


def _run(body: str, timeout: float = 150) -> dict[str, object]:
    """Run COMMON + body in a subprocess; its last stdout line is a JSON result."""
    result = run_python(COMMON + textwrap.dedent(body), timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def test_options_add_interrupt_mode_to_argv_and_posix_sock_to_config() -> None:
    from pyspdk_sys.options import INTERRUPT_DEFAULTS, AppOptions

    options = AppOptions.check(interrupt_mode=True)
    assert "--interrupt-mode" in options.argv("/tmp/x.sock", None)
    assert "--interrupt-mode" not in AppOptions.check().argv("/tmp/x.sock", None)
    assert AppOptions.check().config is None  # polling: the config is left alone
    (subsystem, method, params), *_ = INTERRUPT_DEFAULTS
    sock = [s for s in options.config["subsystems"] if s["subsystem"] == subsystem]
    assert sock[0]["config"] == [{"method": method, "params": params}]
    # A config that picks its own implementation keeps it.
    own = {
        "subsystems": [
            {
                "subsystem": "sock",
                "config": [{"method": method, "params": {"impl_name": "uring"}}],
            }
        ]
    }
    kept = AppOptions.check(interrupt_mode=True, config=own).config
    assert kept["subsystems"][0]["config"] == own["subsystems"][0]["config"]
    with pytest.raises(TypeError, match="interrupt_mode"):
        AppOptions.check(interrupt_mode="yes")


def test_serve_takes_interrupt_mode() -> None:
    from pyspdk_sys.__main__ import parse_args

    assert parse_args(["serve", "--rpc-socket", "/tmp/s", "--interrupt-mode"]).interrupt_mode
    assert not parse_args(["serve", "--rpc-socket", "/tmp/s"]).interrupt_mode


def test_idle_runtime_sleeps() -> None:
    found = _run(
        """
        with Runtime(interrupt_mode=True) as rt:
            rt.rpc("bdev_get_bdevs")          # the private RPC server too
            time.sleep(0.5)
            print(json.dumps({"modes": reactors_in_interrupt(rt), "idle": usage()}))
        """
    )
    assert found["modes"] == [True]
    assert_sleeps(found["idle"])


AFTER_IDLE_LIMIT_S = 5.0


@pytest.mark.timeout(240)
def test_work_posted_to_a_sleeping_runtime_runs_promptly() -> None:
    """Each way work reaches the SPDK thread wakes a reactor that sleeps.

    Between steps the runtime idles long enough for the reactor to sleep; a
    wakeup that is never written leaves the work queued until the step's
    timeout. Each step is timed and bounded generously: correctness, not speed.
    """
    found = _run(
        """
        from pyspdk_sys.pybdev import PythonBdev

        class Ram:
            def __init__(self, size):
                self.data = bytearray(size)
            def readinto(self, offset, buffer):
                buffer[:] = self.data[offset:offset + len(buffer)]
            def write(self, offset, data):
                self.data[offset:offset + len(data)] = data
            def flush(self):
                pass

        steps = {}

        def after_idle(name, step):
            time.sleep(1.0)  # the reactor sleeps again
            start = time.monotonic()
            ok = step()
            steps[name] = [ok, time.monotonic() - start]

        with tempfile.NamedTemporaryFile(dir="/dev/shm", prefix="pyspdk-intr-") as backing:
            backing.truncate(4 << 20)
            with Runtime(interrupt_mode=True) as rt:
                rt.rpc("bdev_aio_create", {"name": "Aio0", "filename": backing.name,
                                           "block_size": 512})
                ram = Ram(1 << 20)
                ram.data[:4096] = b"\x44" * 4096
                served = PythonBdev(rt, "Py0", ram, num_blocks=(1 << 20) // 512, workers=1,
                                    io_timeout=20.0)
                after_idle("call", lambda: rt.call(lambda: 7, timeout=20) == 7)
                after_idle("submit", lambda: rt.submit(lambda: 8).result(20) == 8)
                after_idle("rpc", lambda: len(rt.rpc("bdev_get_bdevs", {"name": "Aio0"})) == 1)
                with rt.open_bdev("Aio0") as dev:
                    dev.write(0, b"\x55" * 4096)
                    after_idle("read", lambda: dev.read(0, 4096) == b"\x55" * 4096)
                    after_idle("read_async", lambda: dev.read_async(0, 4096).result(20)
                               == b"\x55" * 4096)
                    after_idle("aread", lambda: asyncio.run(
                        asyncio.wait_for(dev.aread(0, 4096), 20)) == b"\x55" * 4096)
                    back = bytearray(8 * 4096)
                    after_idle("read_many", lambda: [dev.read_many([0] * 8, 4096, back)]
                               and back == b"\x55" * 4096 * 8)
                with rt.open_bdev("Py0") as dev:
                    after_idle("python_bdev", lambda: dev.read(0, 4096)
                               == b"\x44" * 4096)
                steps["modes"] = reactors_in_interrupt(rt)
                served.close()
        print(json.dumps(steps))
        """
    )
    assert found.pop("modes") == [True], found
    assert set(found) == {
        "call", "submit", "rpc", "read", "read_async", "aread", "read_many", "python_bdev"
    }, found  # fmt: skip
    for name, (ok, seconds) in found.items():
        assert ok is True, (name, found)
        assert seconds < AFTER_IDLE_LIMIT_S, (name, found)


@pytest.mark.timeout(240)
def test_every_io_form_works_and_the_runtime_sleeps_after() -> None:
    found = _run(
        """
        results = {}
        with tempfile.NamedTemporaryFile(dir="/dev/shm", prefix="pyspdk-intr-") as backing:
            backing.truncate(16 << 20)
            with Runtime(interrupt_mode=True) as rt:
                rt.rpc("bdev_aio_create", {"name": "Aio0", "filename": backing.name,
                                           "block_size": 512})
                rt.rpc("bdev_malloc_create", {"name": "Mal0", "num_blocks": 32768,
                                              "block_size": 512})
                for name in ("Aio0", "Mal0"):
                    with rt.open_bdev(name) as dev:
                        dev.write(0, b"\\x11" * 4096)
                        ok = dev.read(0, 4096) == b"\\x11" * 4096
                        futures = [dev.read_async(i * 4096, 4096) for i in range(32)]
                        ok &= futures[0].result(timeout=30) == b"\\x11" * 4096
                        ok &= all(len(f.result(timeout=30)) == 4096 for f in futures)

                        async def both():
                            await dev.awrite(8192, b"\\x22" * 4096)
                            return await dev.aread(8192, 4096)

                        ok &= asyncio.run(both()) == b"\\x22" * 4096
                        dev.run_batch([("write", i * 4096, bytes([i]) * 4096)
                                       for i in range(64)])
                        got = dev.run_batch([("read", i * 4096, 4096) for i in range(64)])
                        ok &= all(got[i] == bytes([i]) * 4096 for i in range(64))
                        pattern = bytearray(os.urandom(4096 * 128))
                        dev.write_many([i * 4096 for i in range(128)], 4096, pattern)
                        back = bytearray(4096 * 128)
                        dev.read_many([i * 4096 for i in range(128)], 4096, back)
                        ok &= back == pattern
                        results[name] = ok
                time.sleep(0.5)
                results["idle"] = usage()
        print(json.dumps(results))
        """,
        timeout=220,
    )
    assert found["Aio0"] is True and found["Mal0"] is True, found
    assert_sleeps(found["idle"])


def test_python_bdev_and_iscsi_portal_in_interrupt_mode() -> None:
    found = _run(
        """
        from pyspdk_sys import lib
        from pyspdk_sys.pybdev import PythonBdev

        class Ram:
            def __init__(self, size):
                self.data = bytearray(size)
            def readinto(self, offset, buffer):
                buffer[:] = self.data[offset:offset + len(buffer)]
            def write(self, offset, data):
                self.data[offset:offset + len(data)] = data
            def flush(self):
                pass

        out = {}
        with Runtime(interrupt_mode=True) as rt:
            backend = Ram(4 << 20)
            served = PythonBdev(rt, "Py0", backend, num_blocks=(4 << 20) // 512, workers=1,
                                io_timeout=5.0)
            with rt.open_bdev("Py0") as dev:
                dev.write(4096, b"\\x33" * 4096)
                out["pybdev"] = (dev.read(4096, 4096) == b"\\x33" * 4096
                                 and backend.data[4096:8192] == b"\\x33" * 4096)
                time.sleep(0.3)
                out["idle_open"] = usage(2.0)
            # iSCSI: a portal puts the reactors in polling mode, for its
            # poll groups; without one they sleep again.
            out["quieted"] = lib.pyspdk_intr_state(0)
            rt.rpc("iscsi_create_portal_group",
                   {"tag": 1, "portals": [{"host": "127.0.0.1", "port": sys.argv[1]}]})
            time.sleep(1.0)
            out["portal"] = [lib.pyspdk_intr_state(1), reactors_in_interrupt(rt)]
            rt.rpc("iscsi_delete_portal_group", {"tag": 1})
            time.sleep(1.0)
            out["no_portal"] = [lib.pyspdk_intr_state(1), reactors_in_interrupt(rt)]
            out["idle"] = usage(2.0)
            served.close()
        print(json.dumps(out))
        """.replace("sys.argv[1]", repr(str(_free_port())))
    )
    assert found["pybdev"] is True, found
    assert_sleeps(found["idle_open"])
    assert found["quieted"] >= 1, found
    assert found["portal"] == [1, [False]], found
    assert found["no_portal"] == [0, [True]], found
    assert_sleeps(found["idle"])


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


NVMF_TARGET = (
    USAGE
    + """
import json, sys, tempfile, time
from pyspdk_sys.runtime import Runtime
port, nqn = sys.argv[1], sys.argv[2]
# aio: a malloc namespace's channel keeps the reactor busy in interrupt mode.
backing = tempfile.NamedTemporaryFile(dir="/dev/shm", prefix="pyspdk-intr-")
backing.truncate(8 << 20)
with Runtime(interrupt_mode=True, cpu_mask="0x1", name="intr-target") as rt:
    rt.rpc("bdev_aio_create", {"name": "M0", "filename": backing.name, "block_size": 512})
    rt.rpc("nvmf_create_transport", {"trtype": "TCP"})
    rt.rpc("nvmf_create_subsystem", {"nqn": nqn, "allow_any_host": True,
                                     "serial_number": "PYSPDKINTR1"})
    rt.rpc("nvmf_subsystem_add_ns", {"nqn": nqn, "namespace": {"bdev_name": "M0"}})
    rt.rpc("nvmf_subsystem_add_listener", {"nqn": nqn, "listen_address": {
        "trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1", "trsvcid": port}})
    time.sleep(0.5)
    idle = usage(2.0)
    # SPDK's own initiator refuses TCP in interrupt mode (PCIe only).
    try:
        rt.rpc("bdev_nvme_attach_controller", {"name": "Self", "trtype": "TCP",
               "adrfam": "IPv4", "traddr": "127.0.0.1", "trsvcid": port, "subnqn": nqn})
        refused = False
    except Exception as exc:
        refused = "Operation not supported" in str(exc)
    print(json.dumps({"idle": idle, "initiator_refused": refused}), flush=True)
    sys.stdin.readline()
"""
)

NVMF_INITIATOR = """
import sys
from pyspdk_sys.runtime import Runtime
port, nqn = sys.argv[1], sys.argv[2]
with Runtime(cpu_mask="0x2", name="intr-initiator") as rt:
    names = rt.rpc("bdev_nvme_attach_controller", {"name": "N0", "trtype": "TCP",
                   "adrfam": "IPv4", "traddr": "127.0.0.1", "trsvcid": port, "subnqn": nqn})
    with rt.open_bdev(names[0]) as dev:
        dev.write(1 << 20, bytes(range(256)) * 16)
        print("ok" if dev.read(1 << 20, 4096) == bytes(range(256)) * 16 else "bad", flush=True)
    rt.rpc("bdev_nvme_detach_controller", {"name": "N0"})
"""


@pytest.mark.timeout(240)
def test_nvmf_tcp_target_in_interrupt_mode_serves_and_sleeps() -> None:
    env_path = {"PYTHONPATH": str(PROJECT_DIR / "src")}
    port, nqn = str(_free_port()), "nqn.2026-12.io.pyspdk:intr"
    import os

    env = {**os.environ, **env_path}
    target = subprocess.Popen(
        [sys.executable, "-c", NVMF_TARGET, port, nqn],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert target.stdout is not None and target.stdin is not None
        line = target.stdout.readline()
        assert line, target.stderr.read() if target.stderr else ""
        found = json.loads(line)
        initiator = subprocess.run(
            [sys.executable, "-c", NVMF_INITIATOR, port, nqn],
            capture_output=True,
            text=True,
            env=env,
            timeout=150,
            check=False,
        )
        assert initiator.stdout.strip().splitlines()[-1:] == ["ok"], initiator.stderr[-3000:]
        target.stdin.write("done\n")
        target.stdin.flush()
        assert target.wait(timeout=60) == 0
    finally:
        if target.poll() is None:
            target.kill()
            target.wait()
    assert_sleeps(found["idle"])
    assert found["initiator_refused"] is True, found


VHOST = (
    USAGE
    + """
import json, os, sys, tempfile, time
from pyspdk_sys.runtime import Runtime
role, sockdir, backing = sys.argv[1], sys.argv[2], sys.argv[3]
if role == "target":
    with Runtime(interrupt_mode=True, hugepages=True, mem_size_mb=512, cpu_mask="0x1",
                 name="intr-vhost") as rt:
        rt.rpc("bdev_aio_create", {"name": "A0", "filename": backing, "block_size": 512})
        rt.rpc("vhost_create_blk_controller", {"ctrlr": "vb0", "dev_name": "A0"})
        print(json.dumps({"ready": True}), flush=True)
        sys.stdin.readline()
        idle = usage(2.0)
        rt.rpc("vhost_delete_controller", {"ctrlr": "vb0"})
        print(json.dumps({"idle": idle}), flush=True)
else:
    with Runtime(hugepages=True, mem_size_mb=512, cpu_mask="0x2", name="intr-virtio") as rt:
        names = rt.rpc("bdev_virtio_attach_controller", {"name": "V", "trtype": "user",
                       "traddr": os.path.join(sockdir, "vb0"), "dev_type": "blk",
                       "vq_count": 2})
        with rt.open_bdev(names[0]) as dev:
            dev.write(8192, b"\\x5a" * 4096)
            print("ok" if dev.read(8192, 4096) == b"\\x5a" * 4096 else "bad", flush=True)
        rt.rpc("bdev_virtio_detach_controller", {"name": "V"})
"""
)


@pytest.mark.timeout(300)
def test_vhost_blk_target_in_interrupt_mode(tmp_path: object) -> None:
    import os
    from pathlib import Path

    ensure_hugepages(1100)
    workdir = Path(str(tmp_path))
    backing = workdir / "disk"
    with open(backing, "wb") as out:
        out.truncate(8 << 20)
    env = {**os.environ, "PYTHONPATH": str(PROJECT_DIR / "src")}
    target = subprocess.Popen(
        [sys.executable, "-c", VHOST, "target", str(workdir), str(backing)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=workdir,  # the vhost socket directory defaults to the working directory
    )
    try:
        assert target.stdout is not None and target.stdin is not None
        line = target.stdout.readline()
        assert line, target.stderr.read() if target.stderr else ""
        initiator = subprocess.run(
            [sys.executable, "-c", VHOST, "initiator", str(workdir), str(backing)],
            capture_output=True,
            text=True,
            env=env,
            timeout=150,
            check=False,
        )
        assert initiator.stdout.strip().splitlines()[-1:] == ["ok"], initiator.stderr[-3000:]
        target.stdin.write("done\n")
        target.stdin.flush()
        found = json.loads(target.stdout.readline())
        assert target.wait(timeout=60) == 0
    finally:
        if target.poll() is None:
            target.kill()
            target.wait()
    assert_sleeps(found["idle"])
