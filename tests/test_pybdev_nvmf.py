"""A Python-served bdev exported over NVMe/TCP to another process, which verifies its data.

Both ends run in subprocesses, each with its own SPDK on its own core: the
target serves the bdev from a Python backend that starts with known data;
the initiator attaches with bdev_nvme_attach_controller, reads that data,
writes its own, and reads it back; the target then checks its backend saw
those writes.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap

import pytest

from conftest import PROJECT_DIR, run_python

NQN = "nqn.2026-11.io.pyspdk:pybdev"
SIZE = 8 << 20

TARGET = textwrap.dedent(
    """
    import sys
    from pyspdk_sys.runtime import Runtime
    from pyspdk_sys.pybdev import PythonBdev
    from cores import reactor_mask
    from ram_backend import RamWithFlush

    port, nqn, size = sys.argv[1], sys.argv[2], int(sys.argv[3])

    backend = RamWithFlush(size)
    backend.data[:] = bytes((i * 7 + i // 4096) % 256 for i in range(size))
    with Runtime(cpu_mask=reactor_mask(0), name="pybdev-target") as rt:
        dev = PythonBdev(rt, "PyNvmf", backend, num_blocks=size // 512, workers=2)
        rt.rpc("nvmf_create_transport", {"trtype": "TCP"})
        rt.rpc("nvmf_create_subsystem", {"nqn": nqn, "allow_any_host": True,
                                         "serial_number": "PYSPDK0001"})
        rt.rpc("nvmf_subsystem_add_ns", {"nqn": nqn, "namespace": {"bdev_name": "PyNvmf"}})
        rt.rpc("nvmf_subsystem_add_listener", {"nqn": nqn, "listen_address": {
            "trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1", "trsvcid": port}})
        print("ready", flush=True)
        sys.stdin.readline()           # the initiator is done
        expected = bytes(range(256)) * 16
        ok = backend.data[1 << 20:(1 << 20) + 4096] == expected
        print("target-saw-writes", backend.writes > 0 and ok, flush=True)
        rt.rpc("nvmf_delete_subsystem", {"nqn": nqn})
        dev.close()
    """
)

INITIATOR = textwrap.dedent(
    """
    import sys
    from pyspdk_sys.runtime import Runtime
    from cores import reactor_mask

    port, nqn, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with Runtime(cpu_mask=reactor_mask(1), name="pybdev-initiator") as rt:
        names = rt.rpc("bdev_nvme_attach_controller", {
            "name": "Remote", "trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1",
            "trsvcid": port, "subnqn": nqn})
        assert names == ["Remoten1"], names
        with rt.open_bdev("Remoten1") as bd:
            assert bd.size == size, bd.size
            # The target's backend started with a known pattern: read it over TCP.
            got = bd.read(0, 1 << 20)
            want = bytes((i * 7 + i // 4096) % 256 for i in range(1 << 20))
            assert got == want, "data served by the Python backend differs"
            # Write, read back, and many I/Os at depth.
            bd.write(1 << 20, bytes(range(256)) * 16)
            assert bd.read(1 << 20, 4096) == bytes(range(256)) * 16
            offsets = [(2 << 20) + i * 4096 for i in range(256)]
            blob = bytes((i * 13) % 256 for i in range(256 * 4096))
            bd.write_many(offsets, 4096, blob, depth=32)
            assert bytes(bd.read_many(offsets, 4096, depth=32)) == blob
            bd.flush()
        rt.rpc("bdev_nvme_detach_controller", {"name": "Remote"})
        print("initiator-ok", flush=True)
    """
)


def free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


@pytest.mark.usefixtures("spdk")
def test_python_bdev_over_nvme_tcp() -> None:
    port = free_port()
    target = subprocess.Popen(
        [sys.executable, "-c", TARGET, port, NQN, str(SIZE)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=PROJECT_DIR / "tests",
    )
    try:
        assert target.stdout is not None and target.stdin is not None
        line = target.stdout.readline()
        assert line.strip() == "ready", line + (target.stderr.read() if target.stderr else "")
        initiator = run_python(
            f"import sys; sys.argv = ['initiator', {port!r}, {NQN!r}, '{SIZE}']\n" + INITIATOR,
            timeout=180,
        )
        assert initiator.returncode == 0, initiator.stdout + initiator.stderr
        assert "initiator-ok" in initiator.stdout
        out, err = target.communicate("done\n", timeout=120)
        assert target.returncode == 0, out + err
        assert "target-saw-writes True" in out, out + err
    finally:
        if target.poll() is None:
            target.kill()
            target.wait()
