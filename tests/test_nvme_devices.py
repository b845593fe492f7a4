"""NVMe controllers and their drivers (pyspdk_sys.nvme), on a made-up sysfs and procfs.

The tree copies the kernel's layout as the guest shows it (tests/test_nvme_guest.py
runs the same functions on the real one): devices under /sys/devices with
/sys/bus/pci/devices and /sys/block as symlinks, a multipath head disk under
the NVM subsystem with its hidden path disk below the controller, drivers
under /sys/bus/pci/drivers. A thread plays the kernel's part in a bind: it
answers a drivers_probe write by linking the device to its driver_override.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

try:
    from pyspdk_sys import nvme
    from pyspdk_sys.errors import DeviceBusyError, DeviceNotFoundError
except ImportError:  # not built: every test skips (or fails) through the spdk fixture
    pass

A, B, NIC = "0000:00:10.0", "0000:00:11.0", "0000:00:03.0"
NQN_B = "nqn.2019-08.org.qemu:subsys1"


class Tree:
    """A sysfs and a procfs under one directory."""

    def __init__(self, root: Path) -> None:
        self.sys = root / "sys"
        self.proc = root / "proc"
        for d in ("bus/pci/devices", "bus/pci/drivers", "block", "devices/pci0000:00"):
            (self.sys / d).mkdir(parents=True)
        (self.sys / "bus/pci/drivers_probe").write_text("")
        (self.proc / "self").mkdir(parents=True)
        (self.proc / "self/mountinfo").write_text(
            "22 1 0:21 / /proc rw - proc proc rw\n25 1 8:1 / / rw - ext4 /dev/sda1 rw\n"
        )
        (self.proc / "swaps").write_text("Filename\tType\tSize\tUsed\tPriority\n")
        for driver in ("nvme", "uio_pci_generic"):
            self.driver(driver)

    def driver(self, name: str) -> Path:
        where = self.sys / "bus/pci/drivers" / name
        where.mkdir(exist_ok=True)
        for f in ("bind", "unbind", "new_id"):
            (where / f).write_text("")
        return where

    def device(self, address: str, cls: int = 0x010802, driver: str | None = "nvme") -> Path:
        real = self.sys / "devices/pci0000:00" / address
        real.mkdir()
        for name, value in (("vendor", "0x1b36"), ("device", "0x0010"), ("numa_node", "-1")):
            (real / name).write_text(value + "\n")
        (real / "class").write_text(f"{cls:#08x}\n")
        (real / "driver_override").write_text("(null)\n")
        (self.sys / "bus/pci/devices" / address).symlink_to(
            f"../../../devices/pci0000:00/{address}"
        )
        if driver is not None:
            self.link_driver(address, driver)
        return real

    def link_driver(self, address: str, driver: str | None) -> None:
        link = self.sys / "devices/pci0000:00" / address / "driver"
        if link.is_symlink():
            link.unlink()
        if driver is not None:
            link.symlink_to(f"../../../bus/pci/drivers/{driver}")

    def disk(self, below: Path, name: str, number: str, hidden: bool = False) -> Path:
        below.mkdir(parents=True, exist_ok=True)
        disk = below / name
        disk.mkdir()
        (disk / "holders").mkdir()
        (disk / "hidden").write_text("1\n" if hidden else "0\n")
        if number:
            (disk / "dev").write_text(number + "\n")
        target = os.path.relpath(disk, self.sys / "block")
        (self.sys / "block" / name).symlink_to(target)
        return disk

    def partition(self, disk: Path, name: str, number: str) -> Path:
        part = disk / name
        part.mkdir()
        (part / "partition").write_text("1\n")
        (part / "dev").write_text(number + "\n")
        (part / "holders").mkdir()
        return part

    def process(self, pid: int, comm: str, *paths: str) -> None:
        fd = self.proc / str(pid) / "fd"
        fd.mkdir(parents=True)
        (self.proc / str(pid) / "comm").write_text(comm + "\n")
        for number, path in enumerate(paths, 3):
            (fd / str(number)).symlink_to(path)


@pytest.fixture
def tree(spdk: Any, tmp_path: Path) -> Tree:
    """A: a controller alone (nvme0n1 with a partition), B: in an NVM subsystem (two
    namespaces: head disks nvme1n1, nvme1n2 and hidden paths), and a network card."""
    t = Tree(tmp_path)
    a = t.device(A)
    ctrl_a = a / "nvme/nvme0"
    ctrl_a.mkdir(parents=True)
    (ctrl_a / "subsysnqn").write_text("nqn.2019-08.org.qemu:pyspdk0001\n")
    disk = t.disk(ctrl_a, "nvme0n1", "259:0")
    t.partition(disk, "nvme0n1p1", "259:1")
    b = t.device(B)
    ctrl_b = b / "nvme/nvme1"
    ctrl_b.mkdir(parents=True)
    (ctrl_b / "subsysnqn").write_text(NQN_B + "\n")
    subsys = t.sys / "devices/virtual/nvme-subsystem/nvme-subsys1"
    subsys.mkdir(parents=True)
    (subsys / "subsysnqn").write_text(NQN_B + "\n")
    for n in (1, 2):
        t.disk(ctrl_b, f"nvme1c1n{n}", "", hidden=True)
        head = t.disk(subsys, f"nvme1n{n}", f"259:{10 + n}")
        (head / "device").symlink_to("..")
    t.device(NIC, cls=0x020000, driver=None)
    return t


@pytest.fixture
def kernel(tree: Tree) -> Iterator[list[str]]:
    """The kernel's part in a bind: unbind drops the link, a probe links the device to
    its driver_override. Yields the log of what it did."""
    done = threading.Event()
    log: list[str] = []

    def run() -> None:
        probe = tree.sys / "bus/pci/drivers_probe"
        while not done.wait(0.01):
            for driver in (tree.sys / "bus/pci/drivers").iterdir():
                unbind = driver / "unbind"
                address = unbind.read_text().strip()
                if address:
                    unbind.write_text("")
                    tree.link_driver(address, None)
                    log.append(f"unbind {address} from {driver.name}")
            address = probe.read_text().strip()
            if address:
                probe.write_text("")
                if (tree.sys / "bus/pci/devices" / address / "driver").is_symlink():
                    continue  # bound already: a probe does nothing
                wanted = (tree.sys / "bus/pci/devices" / address / "driver_override").read_text()
                wanted = wanted.strip()
                if (tree.sys / "bus/pci/drivers" / wanted).is_dir():
                    tree.link_driver(address, wanted)
                    log.append(f"probe {address} -> {wanted}")

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield log
    done.set()
    thread.join(5)


def test_list_devices_finds_the_nvme_controllers_with_their_disks(tree: Tree) -> None:
    found = nvme.list_devices(sysfs=tree.sys)
    assert [d.address for d in found] == [A, B]  # not the network card
    a, b = found
    assert isinstance(a, nvme.PciDevice)
    assert (a.vendor, a.device, a.class_code, a.ids) == (0x1B36, 0x0010, 0x010802, "1b36:0010")
    assert (a.driver, a.numa_node, a.iommu_group) == ("nvme", -1, None)
    assert a.block_devices == ("nvme0n1",)
    assert b.block_devices == ("nvme1n1", "nvme1n2")  # the heads, not the hidden paths
    assert nvme.pci_device(NIC, sysfs=tree.sys).driver is None
    with pytest.raises(DeviceNotFoundError, match=r"0000:00:1f\.0"):
        nvme.pci_device("00:1f.0", sysfs=tree.sys)


def test_in_use_names_mounts_swap_holders_and_processes(tree: Tree) -> None:
    assert nvme.in_use(A, sysfs=tree.sys, proc=tree.proc) == []
    mountinfo = tree.proc / "self/mountinfo"
    mountinfo.write_text(
        mountinfo.read_text() + "40 25 259:1 / /mnt/my\\040data rw - ext4 /dev/nvme0n1p1 rw\n"
    )
    (tree.proc / "swaps").write_text(
        "Filename\tType\tSize\tUsed\tPriority\n/dev/nvme1n2  partition 1024 0 -2\n"
    )
    (tree.sys / "block/nvme0n1/holders/dm-0").mkdir()
    assert nvme.in_use(A, sysfs=tree.sys, proc=tree.proc) == [
        "nvme0n1p1 is mounted on /mnt/my data",
        "nvme0n1 is held by dm-0",
    ]
    assert nvme.in_use(B, sysfs=tree.sys, proc=tree.proc) == ["nvme1n2 is swap (/dev/nvme1n2)"]
    # SPDK (any process) holding the controller through uio:
    tree.link_driver(A, "uio_pci_generic")
    (tree.sys / "devices/pci0000:00" / A / "uio/uio0").mkdir(parents=True)
    tree.process(4242, "reactor_0", "/dev/null", "/dev/uio0")
    tree.process(4243, "bash", "/dev/uio1")
    assert "process 4242 (reactor_0) has /dev/uio0 open" in nvme.in_use(
        A, sysfs=tree.sys, proc=tree.proc
    )
    assert not any("4243" in use for use in nvme.in_use(A, sysfs=tree.sys, proc=tree.proc))


def test_bind_refuses_a_controller_in_use_and_touches_nothing(tree: Tree) -> None:
    mountinfo = tree.proc / "self/mountinfo"
    mountinfo.write_text(mountinfo.read_text() + "40 25 259:0 / /data rw - xfs /dev/nvme0n1 rw\n")
    with pytest.raises(DeviceBusyError) as caught:
        nvme.bind(A, "uio_pci_generic", sysfs=tree.sys, proc=tree.proc)
    assert caught.value.errno == errno.EBUSY
    assert caught.value.users == ("nvme0n1 is mounted on /data",)
    assert A in str(caught.value) and "nvme driver" in str(caught.value)
    assert (tree.sys / "bus/pci/drivers/nvme/unbind").read_text() == ""
    assert (tree.sys / "bus/pci/devices" / A / "driver_override").read_text() == "(null)\n"
    assert nvme.pci_device(A, sysfs=tree.sys).driver == "nvme"


def test_bind_and_unbind_move_the_controller(tree: Tree, kernel: list[str]) -> None:
    moved = nvme.bind(A, "uio_pci_generic", sysfs=tree.sys, proc=tree.proc)
    assert moved.driver == "uio_pci_generic"
    assert kernel == [f"unbind {A} from nvme", f"probe {A} -> uio_pci_generic"]
    override = tree.sys / "bus/pci/devices" / A / "driver_override"
    assert override.read_text() == "\n"  # cleared again: a later probe is the kernel's choice
    # Binding to the driver it has already does nothing.
    assert nvme.bind(A, "uio_pci_generic", sysfs=tree.sys, proc=tree.proc) == moved
    assert len(kernel) == 2
    back = nvme.unbind(A, sysfs=tree.sys, proc=tree.proc)
    assert back.driver == nvme.KERNEL_DRIVER == "nvme"
    assert kernel[2:] == [f"unbind {A} from uio_pci_generic", f"probe {A} -> nvme"]


def test_unbind_refuses_a_controller_a_process_holds(tree: Tree, kernel: list[str]) -> None:
    nvme.bind(A, sysfs=tree.sys, proc=tree.proc)
    (tree.sys / "devices/pci0000:00" / A / "uio/uio0").mkdir(parents=True)
    tree.process(77, "python3", "/dev/uio0")
    with pytest.raises(DeviceBusyError, match=r"process 77 \(python3\) has /dev/uio0 open"):
        nvme.unbind(A, sysfs=tree.sys, proc=tree.proc)
    assert nvme.pci_device(A, sysfs=tree.sys).driver == "uio_pci_generic"


def test_a_bind_the_kernel_does_not_make_fails_and_gives_the_device_back(tree: Tree) -> None:
    # No kernel thread: the unbind is simulated by hand, the probe never happens.
    tree.link_driver(A, None)
    (tree.sys / "bus/pci/devices" / A / "driver").symlink_to("../../../bus/pci/drivers/nvme")
    with pytest.raises(OSError) as caught:
        nvme.bind(A, "uio_pci_generic", timeout=0.3, sysfs=tree.sys, proc=tree.proc)
    assert caught.value.errno == errno.EIO
    assert f"{A} did not bind to uio_pci_generic within 0.3 s" in str(caught.value)
    assert (tree.sys / "bus/pci/drivers/nvme/unbind").read_text() == A
    assert (tree.sys / "bus/pci/drivers_probe").read_text() == A
    assert (tree.sys / "bus/pci/devices" / A / "driver_override").read_text() == "\n"


def test_bind_refusals_name_what_is_wrong(tree: Tree) -> None:
    with pytest.raises(ValueError, match="not an NVMe controller"):
        nvme.bind(NIC, sysfs=tree.sys, proc=tree.proc)
    with pytest.raises(DeviceNotFoundError, match=r"no PCI device at 0000:00:1f\.0"):
        nvme.bind("0000:00:1f.0", sysfs=tree.sys, proc=tree.proc)
    with pytest.raises(ValueError, match="PCI address"):
        nvme.bind("../../etc", sysfs=tree.sys, proc=tree.proc)
    assert nvme.USERSPACE_DRIVERS == ("uio_pci_generic", "vfio-pci")
    with pytest.raises(ValueError, match="unbind"):
        nvme.bind(A, "nvme", sysfs=tree.sys, proc=tree.proc)
    with pytest.raises(ValueError, match="timeout"):
        nvme.bind(A, timeout=0, sysfs=tree.sys, proc=tree.proc)
    with pytest.raises(OSError, match="no IOMMU group") as caught:
        nvme.bind(A, "vfio-pci", sysfs=tree.sys, proc=tree.proc)
    assert caught.value.errno == errno.ENODEV
    # With an IOMMU group but no vfio-pci driver loaded (and no modprobe on a fake tree):
    groups = tree.sys / "kernel/iommu_groups/7"
    groups.mkdir(parents=True)
    (tree.sys / "bus/pci/devices" / A / "iommu_group").symlink_to(groups)
    assert nvme.pci_device(A, sysfs=tree.sys).iommu_group == 7
    with pytest.raises(FileNotFoundError, match="vfio-pci driver is not loaded"):
        nvme.bind(A, "vfio-pci", sysfs=tree.sys, proc=tree.proc)
    assert nvme.pci_device(A, sysfs=tree.sys).driver == "nvme"


def test_binding_needs_root(tree: Tree) -> None:
    """A process that dropped root gets PermissionError (and the device stays)."""
    code = (
        "import os, sys\n"
        "from pyspdk_sys import nvme\n"
        "os.setgid(65534); os.setuid(65534)\n"
        "for call in (lambda: nvme.bind(sys.argv[1], sysfs=sys.argv[2], proc=sys.argv[3]),\n"
        "             lambda: nvme.unbind(sys.argv[1], sysfs=sys.argv[2], proc=sys.argv[3])):\n"
        "    try:\n"
        "        call()\n"
        "    except PermissionError as exc:\n"
        "        print('PermissionError:', exc)\n"
    )
    if os.geteuid() != 0:
        pytest.skip("needs root to drop it")  # CI runs as root
    done = subprocess.run(
        [sys.executable, "-c", code, A, str(tree.sys), str(tree.proc)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 2 and all("needs root" in line and A in line for line in lines), lines
    assert nvme.pci_device(A, sysfs=tree.sys).driver == "nvme"


def test_cli_lists_the_devices(tree: Tree) -> None:
    mountinfo = tree.proc / "self/mountinfo"
    mountinfo.write_text(mountinfo.read_text() + "40 25 259:1 / /srv rw - ext4 /dev/x rw\n")
    base = [sys.executable, "-m", "pyspdk_sys", "devices", "--sysfs", str(tree.sys)]
    base += ["--proc", str(tree.proc)]
    text = subprocess.run(base, capture_output=True, text=True, timeout=60, check=True).stdout
    lines = text.splitlines()
    assert lines[0].split()[:5] == ["address", "ids", "numa", "driver", "disks"]
    assert lines[1].split()[:5] == [A, "1b36:0010", "-1", "nvme", "nvme0n1"]
    assert "nvme0n1p1 is mounted on /srv" in lines[1]
    assert lines[2].split()[:5] == [B, "1b36:0010", "-1", "nvme", "nvme1n1,nvme1n2"]
    assert len(lines) == 3
    report = json.loads(
        subprocess.run(
            [*base, "--json"], capture_output=True, text=True, timeout=60, check=True
        ).stdout
    )
    assert [(d["address"], d["vendor"], d["device"], d["driver"]) for d in report] == [
        (A, "0x1b36", "0x0010", "nvme"),
        (B, "0x1b36", "0x0010", "nvme"),
    ]
    assert report[0]["in_use"] == ["nvme0n1p1 is mounted on /srv"]
