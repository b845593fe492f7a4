"""What the smaller public names promise, each checked by what it does."""

from __future__ import annotations

import fcntl
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

from conftest import PROJECT_DIR, run_python


def test_version_is_the_project_version(spdk: Any) -> None:
    declared = re.search(
        r'^version = "([^"]+)"', (PROJECT_DIR / "pyproject.toml").read_text(), re.M
    )
    assert declared is not None
    assert spdk.__version__ == declared.group(1)


def test_every_error_is_an_spdk_error(spdk: Any) -> None:
    from pyspdk_sys import errors

    classes = [getattr(errors, name) for name in errors.__all__]
    assert all(issubclass(cls, errors.SpdkError) for cls in classes)
    assert errors.SpdkError in classes


def test_bdev_info_describes_the_device(runtime: Any) -> None:
    from pyspdk_sys.bdev import BdevInfo, bdev_info, create_malloc, delete_bdev

    create_malloc(runtime, "InfoMalloc", 1 << 20, 4096)
    try:
        info = bdev_info(runtime, "InfoMalloc")
        assert isinstance(info, BdevInfo)
        assert (info.name, info.block_size, info.num_blocks) == ("InfoMalloc", 4096, 256)
        assert info.size == 1 << 20
        assert info.product_name == "Malloc disk"
    finally:
        delete_bdev(runtime, "InfoMalloc")


def test_dma_alignment_bounds(runtime: Any) -> None:
    from pyspdk_sys import ffi
    from pyspdk_sys.dma import MAX_ALIGN, MIN_ALIGN, DmaBuffer

    with DmaBuffer(runtime, 8192, MAX_ALIGN) as buffer:
        assert int(ffi.cast("uintptr_t", buffer.ptr)) % MAX_ALIGN == 0
    with DmaBuffer(runtime, 100) as buffer:
        assert buffer.align == MIN_ALIGN
        assert int(ffi.cast("uintptr_t", buffer.ptr)) % MIN_ALIGN == 0
    with pytest.raises(ValueError, match="align"):
        DmaBuffer(runtime, 4096, MAX_ALIGN * 2)
    with pytest.raises(ValueError, match="power of two"):
        DmaBuffer(runtime, 4096, 3 * MIN_ALIGN)


def test_dma_buffer_in_use_cannot_be_closed(runtime: Any) -> None:
    from pyspdk_sys.dma import DmaBuffer
    from pyspdk_sys.errors import RuntimeStateError

    buffer = DmaBuffer(runtime, 4096)
    pointer = buffer.acquire()
    assert pointer == buffer.ptr
    with pytest.raises(RuntimeStateError, match="in use by 1 I/O"):
        buffer.close()
    buffer.release()
    buffer.close()
    with pytest.raises(RuntimeStateError, match="freed"):
        buffer.acquire()


def test_buffer_pool_reuses_by_size_class_and_frees_once(runtime: Any) -> None:
    from pyspdk_sys.dma import BufferPool, dma_allocated_bytes

    def on_spdk_thread() -> dict[str, Any]:
        pool = BufferPool(4096)
        before = dma_allocated_bytes(runtime)
        first = pool.get(3000)
        pool.put(first, 3000)
        again = pool.get(4096)  # same size class: the same buffer comes back
        other = pool.get(5000)  # the next class: another buffer
        pool.put(again, 4096)
        pool.put(other, 5000)
        grown = dma_allocated_bytes(runtime) - before
        pool.free_all()
        return {
            "reused": again == first,
            "distinct": other != first,
            "grown": grown,
            "after": dma_allocated_bytes(runtime) - before,
        }

    report = runtime.call(on_spdk_thread)
    assert report["reused"] and report["distinct"]
    assert report["grown"] >= 4096 + 8192
    assert report["after"] == 0


def test_hugepage_pools_are_described(spdk: Any) -> None:
    from pyspdk_sys.hugepages import DEFAULT_MOUNT_POINT, PageSize, page_size, status

    assert DEFAULT_MOUNT_POINT == "/dev/hugepages"
    pools = status()
    assert pools and all(isinstance(pool, PageSize) for pool in pools)
    pool = page_size(2048)
    counted = int(Path("/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages").read_text())
    assert pool.total == counted
    assert pool.size_label == "2M"


def test_log_levels_are_what_runtimes_and_processes_take(spdk: Any) -> None:
    from pyspdk_sys.options import LOG_LEVELS, AppOptions

    assert LOG_LEVELS == ("ERROR", "WARNING", "NOTICE", "INFO", "DEBUG")
    for level in LOG_LEVELS:
        assert AppOptions.check(log_level=level).log_level == level
    with pytest.raises(ValueError, match="log_level must be one of ERROR, WARNING"):
        AppOptions.check(log_level="warning")


def test_warn_if_held_names_the_holder(spdk: Any) -> None:
    """A core whose SPDK lock another process holds: CoreSharingWarning naming it."""
    from pyspdk_sys.placement import LOCK_PATH, CoreSharingWarning, warn_if_held

    core = 1
    holder = subprocess.Popen(
        [sys.executable, "-c", (
            "import fcntl, os, sys\n"
            f"fd = os.open({LOCK_PATH.format(core)!r}, os.O_RDWR | os.O_CREAT, 0o600)\n"
            "fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
            "print('held', flush=True)\n"
            "sys.stdin.read()\n"
        )],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None
        line = holder.stdout.readline()
        if line != "held\n":
            holder.kill()
            _, errors = holder.communicate(timeout=10)
            pytest.fail(f"the helper could not take core {core}'s lock: {errors}")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            held = warn_if_held("0x3", "this test")
        assert held == {core: holder.pid}
        (warning,) = caught
        assert issubclass(warning.category, CoreSharingWarning)
        assert f"core {core} by pid {holder.pid}" in str(warning.message)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert warn_if_held("0x1", "this test") == {}
    finally:
        holder.kill()
        holder.wait(10)
    fd = os.open(LOCK_PATH.format(core), os.O_RDWR)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free again once the holder died
    finally:
        os.close(fd)


def test_tool_candidates_look_beside_the_library_first(spdk: Any) -> None:
    from pyspdk_sys import LIBRARY_PATH
    from pyspdk_sys.process import find_tool, tool_candidates

    candidates = tool_candidates("spdk_tgt")
    beside = Path(LIBRARY_PATH).resolve().parent.parent / "libexec" / "spdk_fat" / "spdk_tgt"
    assert candidates[0] == beside
    assert find_tool("spdk_tgt") == beside
    assert find_tool("no_such_spdk_tool") is None


def test_registry_kinds_list_what_registered(spdk: Any) -> None:
    from pyspdk_sys.registry import KIND_KEYS, KINDS, Kind, candidate_names, kind

    assert all(isinstance(k, Kind) for k in KINDS)
    assert tuple(k.key for k in KINDS) == tuple(KIND_KEYS)
    names = candidate_names()
    # Every bdev module that registered has its name among the library's literals.
    modules = kind("bdev_modules").list_names()
    assert {"malloc", "null", "delay", "error"} <= set(modules)
    assert set(modules) <= names
    with pytest.raises(ValueError, match="unknown registration kind 'nope'"):
        kind("nope")


def test_request_limits_are_the_servers(runtime: Any) -> None:
    from pyspdk_sys._binding import JSONRPC_REQUEST_MAX_BYTES, JSONRPC_REQUEST_MAX_VALUES
    from pyspdk_sys.rpc import REQUEST_MAX_BYTES, REQUEST_MAX_VALUES, encode_request

    assert (REQUEST_MAX_BYTES, REQUEST_MAX_VALUES) == (
        JSONRPC_REQUEST_MAX_BYTES,
        JSONRPC_REQUEST_MAX_VALUES,
    )
    just_fits = {"x": "y" * (REQUEST_MAX_BYTES - 200)}
    assert len(encode_request("rpc_get_methods", just_fits, 1)) <= REQUEST_MAX_BYTES
    with pytest.raises(ValueError, match=f"at most {REQUEST_MAX_BYTES} bytes"):
        encode_request("rpc_get_methods", {"x": "y" * REQUEST_MAX_BYTES}, 1)
    with pytest.raises(ValueError, match="JSON values"):
        encode_request("rpc_get_methods", {"x": list(range(REQUEST_MAX_VALUES))}, 1)


def test_runtime_states_and_the_refused_restart(spdk: Any) -> None:
    result = run_python(
        """
import json
from pyspdk_sys.runtime import RESTART_REFUSED, Runtime, State, current
from cores import reactor_mask
from pyspdk_sys.errors import RuntimeStateError
seen = []
rt = Runtime(cpu_mask=reactor_mask(), mem_size_mb=256)
seen.append(rt.state is State.NEW and current() is None)
rt.start()
seen.append(rt.state is State.RUNNING and current() is rt)
seen.append(rt.call(rt.on_spdk_thread) and not rt.on_spdk_thread())
rt.stop()
seen.append(rt.state is State.STOPPED and current() is None)
try:
    Runtime(mem_size_mb=256).start()
    seen.append(False)
except RuntimeStateError as exc:
    seen.append(str(exc) == RESTART_REFUSED)
print(json.dumps(seen))
""",
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "[true, true, true, true, true]"


def test_hooks_run_in_their_order_and_discarded_ones_do_not(spdk: Any) -> None:
    """Stop hooks run on the SPDK thread as stop begins, newest first; teardown hooks after
    the reactors stop; a discarded hook never runs."""
    result = run_python(
        """
import json, threading
from pyspdk_sys.runtime import Runtime
from cores import reactor_mask
order = []
rt = Runtime(cpu_mask=reactor_mask(), mem_size_mb=256).start()
spdk_thread = rt.call(threading.get_ident)
rt.add_stop_hook(lambda: order.append(("stop1", threading.get_ident() == spdk_thread)))
rt.add_stop_hook(lambda: order.append(("stop2", threading.get_ident() == spdk_thread)))
dropped = lambda: order.append(("dropped", True))
rt.add_stop_hook(dropped)
rt.add_teardown_hook(lambda: order.append(("teardown", rt.state.value)))
rt.discard_hooks(dropped)
rt.stop()
print(json.dumps(order))
""",
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    order = [tuple(x) for x in __import__("json").loads(result.stdout.strip().splitlines()[-1])]
    assert order == [("stop2", True), ("stop1", True), ("teardown", "stopping")]


def test_ublk_says_why_it_cannot_work_on_this_host(spdk: Any) -> None:
    """The host kernel has no ublk (the guest tests cover the rest)."""
    from pyspdk_sys import ublk
    from pyspdk_sys.errors import UblkUnavailableError

    if Path("/dev/ublk-control").exists():
        pytest.fail("this host has ublk: this test is written for one without it")
    assert ublk.unavailable_reasons() == ("no_driver",)
    with pytest.raises(UblkUnavailableError, match="/dev/ublk-control is missing") as caught:
        ublk.check_available()
    assert caught.value.reasons == ("no_driver",)
    with pytest.raises(ValueError, match="ublk_id must be from 0 to"):
        ublk.start_disk(_Refuse(), "B", ublk.MAX_ID + 1)
    with pytest.raises(ValueError, match="queue_depth must be from 1 to"):
        ublk.start_disk(_Refuse(), "B", 1, queue_depth=ublk.MAX_QUEUE_DEPTH + 1)


class _Refuse:
    def rpc(self, method: str, params: Any = None, timeout: float = 60.0) -> Any:
        raise AssertionError(f"{method} reached the target")


def test_ublk_disk_and_destroy_target_from_spdk_listings(runtime: Any) -> None:
    """destroy_target without a target: the error says to create one first; UblkDisk is what
    get_disks reads (no disk on this host: none listed)."""
    from pyspdk_sys import ublk
    from pyspdk_sys.errors import RuntimeStateError

    assert ublk.get_disks(runtime) == []
    with pytest.raises(RuntimeStateError, match="SPDK has no ublk target"):
        ublk.destroy_target(runtime)
    disk = ublk.UblkDisk(id=3, bdev_name="B", num_queues=1, queue_depth=128, device="/dev/ublkb3")
    assert disk.device.endswith(str(disk.id))


def test_a_module_without_all_is_not_public_by_accident(spdk: Any) -> None:
    """Each public module declares its API (pybdev aside, whose names are few)."""
    import importlib

    for name in ("runtime", "dma", "rpc", "process", "ublk", "hugepages", "errors", "registry"):
        module = importlib.import_module(f"pyspdk_sys.{name}")
        assert module.__all__, name
        assert all(hasattr(module, item) for item in module.__all__), name
    assert os.path.isdir(PROJECT_DIR / "src" / "pyspdk_sys")


def test_backend_ops_are_read_from_the_backends_methods(spdk: Any) -> None:
    from pyspdk_sys.pybdev import OPS, backend_ops

    class ReadOnly:
        def readinto(self, offset: int, buffer: Any) -> None: ...

    class Everything:
        def read(self, offset: int, length: int) -> bytes:
            return bytes(length)

        write = flush = unmap = write_zeroes = reset = read

    assert backend_ops(ReadOnly()) == {"read"}
    assert backend_ops(Everything()) == set(OPS)
    with pytest.raises(TypeError, match="neither readinto"):
        backend_ops(object())
    with pytest.raises(TypeError, match="not None"):
        backend_ops(None)


def test_resources_stop_and_tear_down_in_their_stages_order(spdk: Any) -> None:
    """Not in the order they were made: devices close before the engine stops, readers
    deliver before devices free, DMA memory goes last; newest first within a stage;
    a released resource is left alone; plain hooks run before every resource."""
    result = run_python(
        """
import json
from pyspdk_sys._resource import Resource, Stage
from pyspdk_sys.runtime import Runtime
from cores import reactor_mask
seen = []
def kind(name, stop, teardown):
    class Recorder(Resource):
        STOP_STAGE, TEARDOWN_STAGE = stop, teardown
        def __init__(self, runtime, tag):
            self.tag = tag
            self._adopt(runtime)
        def on_stop(self):
            seen.append(("stop", self.tag))
        def on_teardown(self):
            seen.append(("teardown", self.tag))
    Recorder.__name__ = name
    return Recorder
Memory = kind("Memory", Stage.SERVICES, Stage.MEMORY)
Engine = kind("Engine", Stage.ENGINE, Stage.SERVICES)
Device = kind("Device", Stage.DEVICES, Stage.DEVICES)
Reader = kind("Reader", Stage.SERVICES, Stage.READERS)
rt = Runtime(cpu_mask=reactor_mask(), mem_size_mb=256).start()
made = [Memory(rt, "memory"), Engine(rt, "engine"), Device(rt, "device1"),
        Reader(rt, "reader"), Device(rt, "device2"), Device(rt, "released")]
made[-1]._release(rt)
rt.add_stop_hook(lambda: seen.append(("stop", "hook")))
rt.add_teardown_hook(lambda: seen.append(("teardown", "hook")))
rt.stop()
print(json.dumps(seen))
""",
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    seen = [tuple(x) for x in __import__("json").loads(result.stdout.strip().splitlines()[-1])]
    assert seen == [
        ("stop", "hook"),
        ("stop", "device2"),
        ("stop", "device1"),
        ("stop", "reader"),
        ("stop", "memory"),
        ("stop", "engine"),
        ("teardown", "hook"),
        ("teardown", "reader"),
        ("teardown", "device2"),
        ("teardown", "device1"),
        ("teardown", "engine"),
        ("teardown", "memory"),
    ]
