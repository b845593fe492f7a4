"""SpdkProcess faults and bad input, each test with spdk_tgt processes of its own.

Apart from test_process.py so that no shared process busy-polls a core while
these run: two reactors on one core crawl.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from cores import reactor_cores, reactor_mask
from processes import (
    TEST_ARGS,
    new_process,
    no_core_dumps,  # noqa: F401 (an autouse fixture: no core files)
)
from timing import time_bound, worst_time

from conftest import run_python, spdk_tool, wait_until


@pytest.fixture(scope="module")
def spdk_tgt(spdk: Any) -> Path:
    return spdk_tool("spdk_tgt")


# ------------------------------------------------------------------ lifecycle and faults


def test_context_manager_cleans_everything(spdk_tgt: Path) -> None:
    with new_process(spdk_tgt, config={"subsystems": []}) as process:
        pid, socket_path = process.pid, process.rpc_socket
        directory = Path(socket_path).parent
        assert (directory / "config.json").exists()
        assert f"--json {directory / 'config.json'}" in " ".join(process.command())
    assert not process.is_alive()
    assert process.returncode == 0  # SIGTERM: SPDK shut down cleanly
    assert not directory.exists()
    assert not os.path.exists(socket_path + ".lock")
    assert not Path(f"/var/run/dpdk/spdk_pid{pid}").exists()
    assert not list(Path("/dev/shm").glob(f"*_trace.pid{pid}"))
    process.stop()  # again: nothing to do


def test_crash_fails_pending_and_new_calls(spdk_tgt: Path) -> None:
    from pyspdk_sys.errors import ProcessExitedError

    process = new_process(spdk_tgt).start()
    try:
        socket_path = process.rpc_socket
        answered = worst_time(lambda: process.rpc("spdk_get_version"))  # the baseline
        # A correctness bound: the crash ends the call, it does not wait its 30 s. (Not
        # derived from a baseline: the kernel's teardown of a process with 1 GiB mapped
        # takes its own time.)
        detect = 5.0
        os.kill(process.pid, signal.SIGSTOP)  # so the next call stays pending
        outcome: list[BaseException | None] = []
        caller = threading.Thread(
            target=lambda: outcome.append(_raises(process.rpc, "spdk_get_version", timeout=30))
        )
        caller.start()
        # White-box: the call is pending once the monitor watches it.
        wait_until(lambda: process._monitor._calls, "the call pending", timeout=10)
        killed = time.monotonic()
        os.kill(process.pid, signal.SIGKILL)
        wait_until(lambda: not process.is_alive(), "is_alive() false after the crash", detect)
        caller.join(detect)
        assert not caller.is_alive()
        assert time.monotonic() - killed < detect
        assert len(outcome) == 1 and isinstance(outcome[0], ProcessExitedError), outcome
        assert "killed by SIGKILL" in str(outcome[0])
        started = time.monotonic()
        with pytest.raises(ProcessExitedError, match="killed by SIGKILL"):
            process.rpc("spdk_get_version", timeout=30)
        assert time.monotonic() - started < time_bound(0, answered)  # at once, not in 30 s
        assert os.path.exists(socket_path)  # what a crash leaves
    finally:
        if process.is_alive():
            os.kill(process.pid, signal.SIGCONT)
        process.stop()
    assert process.returncode == -signal.SIGKILL
    assert not os.path.exists(socket_path)
    assert not os.path.exists(socket_path + ".lock")


def _raises(fn: Any, *args: Any, **kwargs: Any) -> BaseException | None:
    try:
        fn(*args, **kwargs)
    except BaseException as exc:
        return exc
    return None


def test_stop_escalates_to_sigkill(spdk_tgt: Path) -> None:
    process = new_process(spdk_tgt).start()
    try:
        os.kill(process.pid, signal.SIGSTOP)  # a hung process ignores SIGTERM
        started = time.monotonic()
        process.stop(timeout=0.5)
        # A correctness bound: without the SIGKILL, stop() never returns. 5 s for the
        # kernel to tear down a process with 1 GiB mapped, as above.
        assert time.monotonic() - started < 0.5 + 5
    finally:
        if process.is_alive():
            os.kill(process.pid, signal.SIGKILL)
            process.stop()
    assert process.returncode == -signal.SIGKILL
    assert not process.is_alive()


def test_stale_socket_of_a_killed_process_is_cleaned(spdk_tgt: Path, short_tmp: Path) -> None:
    """A crash leaves socket and lock; the next start removes them, a live holder keeps them."""
    from pyspdk_sys.errors import ProcessExitedError
    from pyspdk_sys.process import SpdkProcess

    path = str(short_tmp / "stale.sock")
    crashed = subprocess.Popen(
        [
            str(spdk_tgt),
            "-m",
            reactor_mask(),
            "-s",
            "1024",
            "--no-huge",
            "--no-pci",
            "-r",
            path,
            "--num-trace-entries",
            "0",
            *TEST_ARGS,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        attached = SpdkProcess.attach(path, timeout=30) if _wait_for(path) else None
        assert attached is not None
        # A live process holds the lock: nobody may take its socket.
        with pytest.raises(ValueError, match="in use"):
            SpdkProcess(spdk_tgt, rpc_socket=path)
        crashed.kill()
        crashed.wait(10)
        # The attached object sees the end through SPDK's lock, within a second.
        deadline = time.monotonic() + 1.0
        while attached.is_alive():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        with pytest.raises(ProcessExitedError):
            attached.rpc("spdk_get_version")
        attached.stop()
    finally:
        if crashed.poll() is None:
            crashed.kill()
            crashed.wait(10)
        shutil.rmtree(f"/var/run/dpdk/spdk_pid{crashed.pid}", ignore_errors=True)
    assert os.path.exists(path) and os.path.exists(path + ".lock")
    with new_process(spdk_tgt, rpc_socket=path) as process:
        assert process.rpc_socket == path
        assert process.rpc("spdk_get_version")
    assert not os.path.exists(path)
    assert not os.path.exists(path + ".lock")


def _wait_for(path: str, limit: float = 30.0) -> bool:
    deadline = time.monotonic() + limit
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_two_processes_at_once(spdk_tgt: Path) -> None:
    with (
        new_process(spdk_tgt, cpu_mask=reactor_mask(0), name="first") as first,
        new_process(spdk_tgt, cpu_mask=reactor_mask(1), name="second", log_level="ERROR") as second,
    ):
        (core1,), (core2,) = reactor_cores(0), reactor_cores(1)
        assert second.pid != first.pid
        assert second.rpc_socket != first.rpc_socket
        assert f"Reactor started on core {core1}" in Path(first.log_path).read_text()
        assert f"Reactor started on core {core2}" not in Path(second.log_path).read_text()  # quiet
        assert second.rpc("log_get_print_level") == "ERROR"
        second.rpc("bdev_null_create", {"name": "Only2", "num_blocks": 64, "block_size": 512})
        assert [b["name"] for b in second.rpc("bdev_get_bdevs")] == ["Only2"]
        assert first.rpc("bdev_get_bdevs") == []
        # One serves a disk over NVMe/TCP, the other attaches it (construct_nvme_bdev).
        nqn = "nqn.2016-06.io.spdk:two"
        first.rpc("bdev_malloc_create", {"name": "Exported", "num_blocks": 4096, "block_size": 512})
        first.rpc("nvmf_create_transport", {"trtype": "TCP"})
        first.rpc("nvmf_create_subsystem", {"nqn": nqn, "allow_any_host": True})
        first.rpc("nvmf_subsystem_add_ns", {"nqn": nqn, "namespace": {"bdev_name": "Exported"}})
        address = {"trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1", "trsvcid": free_port()}
        first.rpc("nvmf_subsystem_add_listener", {"nqn": nqn, "listen_address": address})
        controller = {"name": "Remote", "subnqn": nqn, **address}
        assert second.rpc("bdev_nvme_attach_controller", controller) == ["Remoten1"]
        (remote,) = second.rpc("bdev_get_bdevs", {"name": "Remoten1"})
        assert (remote["num_blocks"], remote["block_size"]) == (4096, 512)
        assert second.rpc("bdev_nvme_detach_controller", {"name": "Remote"})
        # The earlier client's kill_instance: the process ends, the call succeeds.
        assert second.rpc("spdk_kill_instance", {"sig_name": "SIGTERM"}) is True
        deadline = time.monotonic() + 30
        while second.is_alive():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert first.is_alive()
    assert second.returncode == 0


# ------------------------------------------------------------------ bad input


def free_port() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return str(probe.getsockname()[1])


def _bad_start(spdk_tgt: Path, start_timeout: float = 30, **options: Any) -> Any:
    from pyspdk_sys.errors import ProcessStartError, StartError

    process = new_process(spdk_tgt, **options)
    with pytest.raises(ProcessStartError) as info:
        process.start(timeout=start_timeout)
    assert isinstance(info.value, StartError)
    assert not process.is_alive()
    assert process.log_path is None  # the private directory went with it
    return info.value


def test_without_the_official_client(spdk: Any) -> None:
    """No spdk package: start() says so at once, before anything runs."""
    code = (
        "import sys; sys.modules['spdk'] = None\n"
        "from pyspdk_sys.process import SpdkProcess\n"
        "try:\n    SpdkProcess().start()\n"
        "except Exception as exc:\n    print(type(exc).__name__, exc)\n"
    )
    result = run_python(code, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ProcessError SPDK's official client is not installed")


def test_missing_binary(spdk: Any) -> None:
    from pyspdk_sys.errors import ProcessStartError
    from pyspdk_sys.process import SpdkProcess

    with pytest.raises(ProcessStartError, match="does not exist") as info:
        SpdkProcess("/nonexistent/spdk_tgt").start()
    assert info.value.reason == "binary"


def test_not_an_spdk_application(spdk: Any, tmp_path: Path) -> None:
    fake = tmp_path / "fake_tgt"
    fake.write_text("#!/bin/sh\necho 'usage: fake_tgt FILE' >&2\nexit 3\n")
    fake.chmod(0o755)
    error = _bad_start(fake)
    assert error.reason == "not_spdk"
    assert "exited with status 3" in str(error)
    assert "usage: fake_tgt FILE" in error.log_tail


def test_wrapper_that_never_answers(spdk: Any, tmp_path: Path) -> None:
    """Not SPDK and still running at the timeout: stopped with its children (its group)."""
    child_pid = tmp_path / "child.pid"
    fake = tmp_path / "hang_tgt"
    fake.write_text(f"#!/bin/sh\nsleep 60 &\necho $! > {child_pid}\nwait\n")
    fake.chmod(0o755)
    started = time.monotonic()
    error = _bad_start(fake, start_timeout=1)
    assert time.monotonic() - started < 5
    assert error.reason == "not_spdk"
    assert "did not answer" in str(error)
    child = int(child_pid.read_text())
    deadline = time.monotonic() + 5
    while _running(child):
        assert time.monotonic() < deadline, "the wrapper's child outlived stop()"
        time.sleep(0.05)


def _running(pid: int) -> bool:
    """Whether pid is a live process (a zombie waiting for its parent is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def test_config_spdk_rejects(spdk_tgt: Path) -> None:
    config = {"subsystems": [{"subsystem": "bdev", "config": [{"method": "no_such_method"}]}]}
    error = _bad_start(spdk_tgt, config=config)
    assert error.reason == "config"
    assert "JSON config" in str(error)
    assert "Method 'no_such_method' was not found" in error.log_tail


def test_core_that_does_not_exist_is_refused_at_construction(spdk_tgt: Path) -> None:
    """Before anything starts, naming the parameter, the value and the core: SPDK would
    find it only inside DPDK's start, with a log line the caller never sees."""
    from pyspdk_sys._checks import online_cpus
    from pyspdk_sys.process import SpdkProcess
    from pyspdk_sys.runtime import Runtime

    missing_core = max(online_cpus()) + 1
    mask = hex(1 << missing_core)
    for make in (lambda: SpdkProcess(spdk_tgt, cpu_mask=mask), lambda: Runtime(cpu_mask=mask)):
        with pytest.raises(ValueError, match=rf"cpu_mask '{mask}' names core {missing_core},"):
            make()


def test_too_little_memory(spdk_tgt: Path) -> None:
    error = _bad_start(spdk_tgt, mem_size_mb=64)
    assert error.reason == "memory"
    assert "mem_size_mb" in str(error)
    assert "Unable to allocate" in error.log_tail
