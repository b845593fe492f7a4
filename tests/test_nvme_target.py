"""pyspdk_sys.nvme on a target without PCI devices: the checks, the refusals and the listing.

The PCIe paths themselves (attach, faults) run in the guest
(tests/test_nvme_guest.py); here a Runtime on this host answers what it can:
addresses nothing is at, controllers that do not exist, SPDK-wide options,
and an NVMe/TCP controller (served and attached by the same runtime) in the
listing.
"""

from __future__ import annotations

import socket
import textwrap
import uuid
from typing import Any

import pytest

from conftest import run_python


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_attach_checks_its_arguments_first(runtime: Any) -> None:
    from pyspdk_sys import nvme

    for bad, kind, words in (
        ({"traddr": "0000:00:04"}, ValueError, "traddr must be a PCI address"),
        ({"traddr": 4}, TypeError, "traddr must be a str"),
        # Every option this module knows is one of SPDK's, checked:
        *(({k: "x"}, (TypeError, ValueError), k) for k in nvme.ATTACH_OPTIONS),
        *(({k: None}, (TypeError, ValueError), k) for k in nvme.GLOBAL_OPTIONS),
        ({"bogus": 1}, ValueError, "unknown option bogus for a PCIe controller; known: "),
        ({"num_io_queues": 0}, ValueError, "num_io_queues must be from 1 to 65536"),
        ({"action_on_timeout": "explode"}, ValueError, "none, abort, reset"),
        ({"timeout_admin_us": 5}, ValueError, "timeout_admin_us needs timeout_us"),
        ({"ctrlr_loss_timeout_sec": 5}, ValueError, "reconnect_delay_sec must be at least 1"),
        ({"prchk_guard": 1}, TypeError, "prchk_guard must be a bool"),
    ):
        args = {"traddr": "0000:00:1f.7", **bad}
        with pytest.raises(kind, match=words):
            nvme.attach_pcie(runtime, "Checked", **args)
    assert all(c.name != "Checked" for c in nvme.list_controllers(runtime))


def test_attach_where_no_nvme_controller_is(runtime: Any) -> None:
    from pyspdk_sys import nvme
    from pyspdk_sys.errors import DeviceNotFoundError

    with pytest.raises(DeviceNotFoundError, match=r"no PCI device at 0000:00:1f\.7"):
        nvme.attach_pcie(runtime, "Absent", "00:1f.7")
    bridge = nvme.pci_device("0000:00:00.0")  # every PC has a host bridge there
    assert bridge.class_code != 0x010802
    with pytest.raises(ValueError, match=r"0000:00:00\.0 is not an NVMe controller"):
        nvme.attach_pcie(runtime, "Bridge", "0000:00:00.0")
    assert all(c.name not in ("Absent", "Bridge") for c in nvme.list_controllers(runtime))


def test_controllers_that_do_not_exist(runtime: Any) -> None:
    from pyspdk_sys import nvme
    from pyspdk_sys.errors import DeviceNotFoundError

    for call in (
        lambda: nvme.detach(runtime, "Nowhere"),
        lambda: nvme.reset_controller(runtime, "Nowhere"),
        lambda: nvme.inject_error(runtime, "Nowhere", opc=2, sct=0, sc=4),
        lambda: nvme.clear_injected_errors(runtime, "Nowhere", opc=2),
    ):
        with pytest.raises(DeviceNotFoundError, match="no NVMe controller named 'Nowhere'"):
            call()
    assert nvme.detach(runtime, "Nowhere", missing_ok=True) is False
    with pytest.raises(ValueError, match="sct must be from 0 to 7"):
        nvme.inject_error(runtime, "Nowhere", opc=2, sct=8, sc=0)
    with pytest.raises(ValueError, match="count must be from 1"):
        nvme.inject_error(runtime, "Nowhere", opc=2, sct=0, sc=4, count=0)


def test_global_options_apply_only_while_no_controller_is_attached(spdk: Any) -> None:
    """In a fresh runtime: the options reach SPDK (even when the attach then fails),
    and are refused, naming the controller, once one is attached (NVMe/TCP here)."""
    port = free_port()
    script = textwrap.dedent(
        f"""
        from pyspdk_sys import nvme, nvmf
        from pyspdk_sys.errors import DeviceNotFoundError
        from pyspdk_sys.runtime import Runtime
        rt = Runtime(mem_size_mb=1024).start()
        try:
            nvme.attach_pcie(rt, "P", "0000:00:1f.7", timeout_us=3_000_000,
                             action_on_timeout="reset", bdev_retry_count=0)
        except DeviceNotFoundError as exc:
            print("refused:", exc)
        got = nvme._global_options(rt)
        print("set:", got["timeout_us"], got["action_on_timeout"], got["bdev_retry_count"])
        # A controller to have attached: NVMe/TCP to an empty subsystem of this runtime.
        nqn = "nqn.2016-06.io.spdk:nvme-opts"
        nvmf.create_transport(rt)
        nvmf.create_subsystem(rt, nqn)
        nvmf.add_listener(rt, nqn, "127.0.0.1", {port})
        print("attached:", nvmf.attach(rt, "T", "127.0.0.1", {port}, nqn))
        try:
            nvme.attach_pcie(rt, "P", "0000:00:1f.7", timeout_us=1_000_000)
        except ValueError as exc:
            print("refused:", exc)
        # The same values as now are no change: nothing to refuse.
        try:
            nvme.attach_pcie(rt, "P", "0000:00:1f.7", timeout_us=3_000_000)
        except DeviceNotFoundError:
            print("same values: on to the attach")
        print("still:", nvme._global_options(rt)["timeout_us"])
        rt.stop()
        """
    )
    done = run_python(script, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert (
        lines[0]
        == "refused: no PCI device at 0000:00:1f.7 (nothing at /sys/bus/pci/devices/0000:00:1f.7)"
    )
    assert lines[1] == "set: 3000000 reset 0"
    assert lines[2] == "attached: []"
    assert lines[3].startswith("refused: timeout_us: SPDK-wide NVMe options")
    assert "change only while no NVMe controller is attached; attached now: T" in lines[3]
    assert "(now timeout_us=3000000)" in lines[3]
    assert lines[4:] == ["same values: on to the attach", "still: 3000000"]


def test_list_controllers_names_each_path(runtime: Any) -> None:
    """An NVMe/TCP controller (the PCIe ones, with their bdevs, are listed in the guest).

    Its subsystem has no namespace: served and attached in one process, a
    namespace's bdev would clash with its own UUID.
    """
    from pyspdk_sys import nvme, nvmf

    tag = uuid.uuid4().hex[:8]
    nqn = f"nqn.2016-06.io.spdk:list-{tag}"
    port = free_port()
    nvmf.create_transport(runtime)
    nvmf.create_subsystem(runtime, nqn)
    nvmf.add_listener(runtime, nqn, "127.0.0.1", port)
    try:
        assert nvmf.attach(runtime, f"L{tag}", "127.0.0.1", port, nqn) == []
        try:
            (mine,) = [c for c in nvme.list_controllers(runtime) if c.name == f"L{tag}"]
            assert isinstance(mine, nvme.Controller)
            assert (mine.trtype, mine.address, mine.state, mine.bdevs) == (
                "TCP",
                "127.0.0.1",
                "enabled",
                (),
            )
            assert mine.cntlid >= 1
        finally:
            assert nvme.detach(runtime, f"L{tag}") is True
        assert all(c.name != f"L{tag}" for c in nvme.list_controllers(runtime))
    finally:
        nvmf.delete_subsystem(runtime, nqn)
