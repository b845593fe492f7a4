"""NVMe SSDs over PCIe: SPDK's userspace NVMe driver from Python, and the drivers around it.

On a target (a Runtime or an SpdkProcess, through RPC):

- `attach_pcie()` attaches the controller at a PCI address and returns its
  namespaces' bdev names; `detach()`, `list_controllers()`, `reset_controller()`;
- SPDK's NVMe error injection: `inject_error()`, `clear_injected_errors()`.

On this machine, through sysfs, as SPDK's scripts/setup.sh does for NVMe:

- `list_devices()` lists the NVMe controllers with their ids and driver;
- `bind()` hands one to a userspace driver (uio_pci_generic, or vfio-pci
  where there is an IOMMU) so that SPDK can attach it; `unbind()` gives it
  back to the kernel's nvme driver.

Why a controller must be bound first: SPDK drives the controller's registers
and queues from userspace, which needs a driver that hands them over; while
the kernel's nvme driver has it, SPDK does not see it at all.

Why bind() and unbind() refuse a controller in use (`in_use()`): moving it
pulls the disk from under its user, be that a mounted file system, swap, a
block device stacked on it, or a process (SPDK) that has it open through its
userspace driver.

Every sysfs and procfs path is read under the `sysfs` and `proc` arguments
(default /sys and /proc), so that the same logic runs on a made-up tree.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._checks import (
    INT64_MAX,
    check_bool,
    check_int,
    check_name,
    check_pci_address,
    check_reconnect,
    check_seconds,
)
from .errors import DeviceBusyError, DeviceNotFoundError, RpcError, rpc_meaning
from .target import Target, check_target

__all__ = [
    "ATTACH_OPTIONS",
    "GLOBAL_OPTIONS",
    "KERNEL_DRIVER",
    "USERSPACE_DRIVERS",
    "Controller",
    "PciDevice",
    "attach_pcie",
    "bind",
    "clear_injected_errors",
    "detach",
    "in_use",
    "inject_error",
    "list_controllers",
    "list_devices",
    "pci_device",
    "reset_controller",
    "unbind",
]

NVME_CLASS = 0x010802  # mass storage, non-volatile memory, NVM Express
USERSPACE_DRIVERS = ("uio_pci_generic", "vfio-pci")
KERNEL_DRIVER = "nvme"
_U32 = (1 << 32) - 1
TIMEOUT_ACTIONS = ("none", "abort", "reset")


def _one_of(choices: tuple[str, ...]) -> Callable[[str, Any], str]:
    def check(name: str, value: Any) -> str:
        if value not in choices:
            raise ValueError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
        return str(value)

    return check


def _ranged(low: int, high: int) -> Callable[[str, Any], int]:
    return lambda name, value: check_int(name, value, low, high)


# bdev_nvme_attach_controller's options that mean something for a PCIe controller.
ATTACH_OPTIONS: dict[str, Callable[[str, Any], Any]] = {
    "num_io_queues": _ranged(1, 65536),
    "prchk_reftag": check_bool,
    "prchk_guard": check_bool,
    "ctrlr_loss_timeout_sec": _ranged(-1, (1 << 31) - 1),
    "reconnect_delay_sec": _ranged(0, _U32),
    "fast_io_fail_timeout_sec": _ranged(0, _U32),
    "allow_unrecognized_csi": check_bool,
}
# bdev_nvme_set_options's: SPDK-wide, and changed only while no NVMe controller
# is attached (SPDK answers "not permitted" otherwise).
GLOBAL_OPTIONS: dict[str, Callable[[str, Any], Any]] = {
    "timeout_us": _ranged(0, INT64_MAX),
    "timeout_admin_us": _ranged(0, INT64_MAX),
    "action_on_timeout": _one_of(TIMEOUT_ACTIONS),
    "keep_alive_timeout_ms": _ranged(0, _U32),
    "bdev_retry_count": _ranged(-1, (1 << 31) - 1),
    "io_queue_requests": _ranged(0, _U32),
}
_RECONNECT = ("ctrlr_loss_timeout_sec", "reconnect_delay_sec", "fast_io_fail_timeout_sec")


# ------------------------------------------------------------------ on a target


@dataclass(frozen=True)
class Controller:
    """One path of an NVMe controller attached to a target (PCIe has one path)."""

    name: str
    trtype: str  # "PCIe", "TCP", ...
    address: str  # traddr: the PCI address for PCIe
    state: str  # "enabled", "resetting", "failed", ...
    cntlid: int
    bdevs: tuple[str, ...]  # its namespaces' bdevs, by namespace ID


def _path_key(trid: dict[str, Any]) -> tuple[str, str, str]:
    return (
        str(trid.get("trtype", "")).lower(),
        str(trid.get("traddr", "")),
        str(trid.get("subnqn", "")),
    )


def list_controllers(target: Target) -> list[Controller]:
    """Every NVMe controller path of the target (PCIe and fabrics alike)."""
    check_target(target)
    namespaces: dict[tuple[str, str, str], list[tuple[int, str]]] = {}
    for bdev in target.rpc("bdev_get_bdevs"):
        for entry in (bdev.get("driver_specific") or {}).get("nvme") or []:
            nsid = int((entry.get("ns_data") or {}).get("id", 0))
            key = _path_key(entry.get("trid") or {})
            namespaces.setdefault(key, []).append((nsid, str(bdev["name"])))
    found = []
    for controller in target.rpc("bdev_nvme_get_controllers"):
        for path in controller.get("ctrlrs", []):
            trid = path.get("trid") or {}
            bdevs = sorted(namespaces.get(_path_key(trid), []))
            found.append(
                Controller(
                    name=str(controller["name"]),
                    trtype=str(trid.get("trtype", "")),
                    address=str(trid.get("traddr", "")),
                    state=str(path.get("state", "")),
                    cntlid=int(path.get("cntlid", 0) or 0),
                    bdevs=tuple(name for _, name in bdevs),
                )
            )
    return found


def _check_options(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(attach options, SPDK-wide options), each checked; ValueError names an unknown one."""
    unknown = sorted(set(options) - set(ATTACH_OPTIONS) - set(GLOBAL_OPTIONS))
    if unknown:
        raise ValueError(
            f"unknown option {', '.join(unknown)} for a PCIe controller; known: "
            f"{', '.join(sorted({*ATTACH_OPTIONS, *GLOBAL_OPTIONS}))}"
        )
    local = {k: ATTACH_OPTIONS[k](k, v) for k, v in options.items() if k in ATTACH_OPTIONS}
    wide = {k: GLOBAL_OPTIONS[k](k, v) for k, v in options.items() if k in GLOBAL_OPTIONS}
    if any(k in local for k in _RECONNECT):
        check_reconnect(*(local.get(k, 0) for k in _RECONNECT))
    if wide.get("timeout_admin_us") and not wide.get("timeout_us"):
        raise ValueError("timeout_admin_us needs timeout_us too (SPDK refuses one without it)")
    return local, wide


def _global_options(target: Target) -> dict[str, Any]:
    for entry in target.rpc("framework_get_config", {"name": "bdev"}):
        if entry.get("method") == "bdev_nvme_set_options":
            return dict(entry.get("params") or {})
    return {}


def _apply_global(target: Target, wide: dict[str, Any]) -> None:
    """Set the SPDK-wide options that differ; ValueError when controllers are attached."""
    current = _global_options(target)
    differ = {k: v for k, v in wide.items() if current.get(k) != v}
    if not differ:
        return
    attached = sorted({c.name for c in list_controllers(target)})
    if attached:
        now = ", ".join(f"{k}={current.get(k)!r}" for k in sorted(differ))
        raise ValueError(
            f"{', '.join(sorted(differ))}: SPDK-wide NVMe options (bdev_nvme_set_options), "
            "which change only while no NVMe controller is attached; attached now: "
            f"{', '.join(attached)} (now {now})"
        )
    try:
        target.rpc("bdev_nvme_set_options", differ)
    except RpcError as exc:
        raise ValueError(f"SPDK refused the NVMe options {differ!r}: {exc.message}") from exc


def attach_pcie(target: Target, name: str, traddr: str, **options: Any) -> list[str]:
    """Attach the NVMe controller at PCI address `traddr` as `name`; its bdev names.

    The bdevs are named `name` + 'n' + namespace ID. `options` are SPDK's:
    ATTACH_OPTIONS for this controller (num_io_queues, prchk_reftag, ...), and
    GLOBAL_OPTIONS (timeout_us, timeout_admin_us, action_on_timeout,
    keep_alive_timeout_ms, bdev_retry_count, ...), which apply to every NVMe
    controller of the target and change only while none is attached.

    The controller must be bound to a userspace driver first (bind()). When
    SPDK refuses, the error names the address and says why: FileExistsError
    (the name is taken, or another controller here has that address),
    DeviceNotFoundError (no PCI device there), ValueError (not an NVMe
    controller), DeviceBusyError (a kernel driver has it).
    """
    check_target(target)
    check_name(name, "name (of the controller)")
    address = check_pci_address("traddr", traddr)
    local, wide = _check_options(options)
    for controller in list_controllers(target):
        if controller.name == name:
            raise FileExistsError(f"an NVMe controller named {name!r} already exists")
        if controller.trtype.lower() == "pcie" and controller.address == address:
            raise FileExistsError(
                f"the NVMe controller at {address} is already attached as {controller.name!r}"
            )
    if wide:
        _apply_global(target, wide)
    params = {"name": name, "trtype": "PCIe", "traddr": address, **local}
    try:
        result: list[str] = target.rpc("bdev_nvme_attach_controller", params)
    except RpcError as exc:
        raise _attach_refused(target, exc, name, address) from exc
    return list(result)


def _attach_refused(target: Target, exc: RpcError, name: str, address: str) -> Exception:
    """Why SPDK did not attach `address` (it says "No such device" for most causes)."""
    if rpc_meaning(exc) == "exists":
        for controller in list_controllers(target):
            if controller.address == address:
                return FileExistsError(
                    f"the NVMe controller at {address} is already attached as {controller.name!r}"
                )
        return FileExistsError(f"an NVMe controller named {name!r} already exists")
    problem = _unusable(address)
    if problem is not None:
        return problem
    return RpcError(exc.method, exc.code, f"{exc.message} (NVMe controller at {address})")


def _unusable(address: str, sysfs: str | os.PathLike[str] = "/sys") -> Exception | None:
    """Why this machine's device at `address` cannot be attached, if sysfs says."""
    try:
        device = pci_device(address, sysfs=sysfs)
    except DeviceNotFoundError as exc:
        return exc
    if device.class_code != NVME_CLASS:
        return ValueError(
            f"{address} is not an NVMe controller (PCI class {device.class_code:#08x}, "
            f"ids {device.ids})"
        )
    if device.driver not in USERSPACE_DRIVERS:
        held = "it has no driver"
        if device.driver:
            held = f"the kernel's {device.driver} driver has it"
        return DeviceBusyError(
            f"SPDK cannot attach the NVMe controller at {address}: {held}. Bind it to a "
            f"userspace driver first: pyspdk_sys.nvme.bind({address!r}, 'uio_pci_generic')",
            users=(f"driver {device.driver}",) if device.driver else (),
        )
    return None


def detach(target: Target, name: str, *, missing_ok: bool = False) -> bool:
    """Detach the NVMe controller `name`; its bdevs go away. True if it was detached now.

    A controller SPDK removed by itself (the device was hot-removed) is gone
    already: DeviceNotFoundError, or False with `missing_ok`.
    """
    check_target(target)
    check_name(name, "name (of the controller)")
    check_bool("missing_ok", missing_ok)
    try:
        target.rpc("bdev_nvme_detach_controller", {"name": name})
    except RpcError as exc:
        if rpc_meaning(exc) == "no_device":
            if missing_ok:
                return False
            raise DeviceNotFoundError(f"no NVMe controller named {name!r}") from None
        raise
    return True


def reset_controller(target: Target, name: str) -> None:
    """Reset the NVMe controller `name` (bdev_nvme_reset_controller); returns when done.

    I/O in flight at the reset fails (SPDK aborts it); I/O after it succeeds.
    """
    check_target(target)
    check_name(name, "name (of the controller)")
    try:
        target.rpc("bdev_nvme_reset_controller", {"name": name})
    except RpcError as exc:
        if rpc_meaning(exc) == "no_device":
            raise DeviceNotFoundError(f"no NVMe controller named {name!r}") from None
        raise


def inject_error(
    target: Target,
    name: str,
    *,
    opc: int,
    sct: int,
    sc: int,
    count: int = 1,
    admin: bool = False,
    hold_us: int = 0,
) -> None:
    """Make the next `count` commands of opcode `opc` on controller `name` complete
    with NVMe status (`sct`, `sc`) (bdev_nvme_add_error_injection).

    The commands still run on the device unless `hold_us` is given: then they
    are not sent, and complete with the status after that many microseconds.
    I/O commands: only the I/O queues that exist now (open the bdev first).
    SPDK retries a failed I/O (bdev_retry_count, 3 by default) unless the
    status has DNR set, and an injected one has not: a read fails once
    `count` exceeds the retries.
    """
    check_target(target)
    check_name(name, "name (of the controller)")
    params: dict[str, Any] = {
        "name": name,
        "cmd_type": "admin" if check_bool("admin", admin) else "io",
        "opc": check_int("opc", opc, 0, 255),
        "sct": check_int("sct", sct, 0, 7),
        "sc": check_int("sc", sc, 0, 255),
        "err_count": check_int("count", count, 1, _U32),
    }
    if check_int("hold_us", hold_us, 0, INT64_MAX):
        params.update(do_not_submit=True, timeout_in_us=hold_us)
    _controller_rpc(target, "bdev_nvme_add_error_injection", params)


def clear_injected_errors(target: Target, name: str, *, opc: int, admin: bool = False) -> None:
    """Remove the error injected for opcode `opc` on controller `name`."""
    check_target(target)
    check_name(name, "name (of the controller)")
    params = {
        "name": name,
        "cmd_type": "admin" if check_bool("admin", admin) else "io",
        "opc": check_int("opc", opc, 0, 255),
    }
    _controller_rpc(target, "bdev_nvme_remove_error_injection", params)


def _controller_rpc(target: Target, method: str, params: dict[str, Any]) -> None:
    try:
        target.rpc(method, params)
    except RpcError as exc:
        if rpc_meaning(exc) == "no_device":
            raise DeviceNotFoundError(f"no NVMe controller named {params['name']!r}") from None
        raise


# ------------------------------------------------------------------ on this machine


@dataclass(frozen=True)
class PciDevice:
    """A PCI function as sysfs shows it."""

    address: str
    vendor: int
    device: int
    class_code: int
    driver: str | None  # None: no driver bound
    numa_node: int  # -1: unknown
    iommu_group: int | None
    block_devices: tuple[str, ...]  # the kernel's disks of its namespaces (nvme driver)

    @property
    def ids(self) -> str:
        """vendor:device, as lspci -n prints them."""
        return f"{self.vendor:04x}:{self.device:04x}"


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _number(path: Path, default: int) -> int:
    text = _read(path)
    try:
        return int(text, 0) if text is not None else default
    except ValueError:
        return default


def _link_name(path: Path) -> str | None:
    try:
        return os.path.basename(os.readlink(path))
    except OSError:
        return None


def _device_dir(sysfs: str | os.PathLike[str], address: str) -> Path:
    return Path(sysfs, "bus", "pci", "devices", address)


def pci_device(address: str, *, sysfs: str | os.PathLike[str] = "/sys") -> PciDevice:
    """The PCI function at `address` (any class); DeviceNotFoundError when there is none."""
    address = check_pci_address("address", address)
    where = _device_dir(sysfs, address)
    if not where.is_dir():
        raise DeviceNotFoundError(f"no PCI device at {address} (nothing at {where})")
    group = _link_name(where / "iommu_group")
    return PciDevice(
        address=address,
        vendor=_number(where / "vendor", 0),
        device=_number(where / "device", 0),
        class_code=_number(where / "class", 0),
        driver=_link_name(where / "driver"),
        numa_node=_number(where / "numa_node", -1),
        iommu_group=int(group) if group is not None and group.isdigit() else None,
        block_devices=tuple(_block_devices(Path(sysfs), address)),
    )


def list_devices(*, sysfs: str | os.PathLike[str] = "/sys") -> list[PciDevice]:
    """Every NVMe controller (PCI class 01:08:02) of this machine, by address."""
    devices = Path(sysfs, "bus", "pci", "devices")
    found = []
    for entry in sorted(devices.iterdir()) if devices.is_dir() else []:
        if _number(entry / "class", 0) == NVME_CLASS:
            found.append(pci_device(entry.name, sysfs=sysfs))
    return found


def _block_devices(sysfs: Path, address: str) -> list[str]:
    """The kernel's visible disks of the controller's namespaces: those below the
    device in sysfs, and (native multipath) those of its NVM subsystem."""
    controllers = _device_dir(sysfs, address) / "nvme"
    nqns = set()
    if controllers.is_dir():
        for controller in controllers.iterdir():
            nqn = _read(controller / "subsysnqn")
            if nqn:
                nqns.add(nqn)
    found = []
    block = sysfs / "block"
    for disk in sorted(block.iterdir()) if block.is_dir() else []:
        if _read(disk / "hidden") == "1":
            continue  # a multipath path: its head disk is what is used
        below = f"/{address}/" in os.path.realpath(disk)
        if below or (nqns and _read(disk / "device" / "subsysnqn") in nqns):
            found.append(disk.name)
    return found


def _unescape(field: str) -> str:
    """A /proc/*/mountinfo field: spaces and such come as octal escapes."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def _kernel_users(sysfs: Path, proc: Path, disks: list[str]) -> list[str]:
    """Mounts, swap and stacked block devices on `disks` and their partitions."""
    numbers: dict[str, str] = {}  # "major:minor" -> disk or partition name
    holders: list[str] = []
    for disk in disks:
        base = sysfs / "block" / disk
        try:
            parts = [base, *sorted(p for p in base.iterdir() if (p / "partition").exists())]
        except OSError:
            continue  # the disk went away meanwhile
        for part in parts:
            number = _read(part / "dev")
            if number:
                numbers[number] = part.name
            held = part / "holders"
            for holder in sorted(held.iterdir()) if held.is_dir() else []:
                holders.append(f"{part.name} is held by {holder.name}")
    users = []
    mountinfo = _read(proc / "self" / "mountinfo") or ""
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) > 4 and fields[2] in numbers:
            users.append(f"{numbers[fields[2]]} is mounted on {_unescape(fields[4])}")
    names = set(numbers.values())
    swaps = (_read(proc / "swaps") or "").splitlines()[1:]
    for line in swaps:
        if not line.split():
            continue
        swap = _unescape(line.split()[0])
        if os.path.basename(os.path.realpath(swap)) in names or os.path.basename(swap) in names:
            users.append(f"{os.path.basename(swap)} is swap ({swap})")
    return users + holders


def _userspace_users(sysfs: Path, proc: Path, address: str) -> list[str]:
    """Processes holding the controller open through uio or vfio (SPDK, say)."""
    where = _device_dir(sysfs, address)
    nodes = set()
    uio = where / "uio"
    for entry in uio.iterdir() if uio.is_dir() else []:
        nodes.add(f"/dev/{entry.name}")
    group = _link_name(where / "iommu_group")
    if group is not None and _link_name(where / "driver") == "vfio-pci":
        nodes.update({f"/dev/vfio/{group}", f"/dev/vfio/noiommu-{group}"})
    if not nodes:
        return []
    users = []
    for pid in sorted((p for p in proc.iterdir() if p.name.isdigit()), key=lambda p: int(p.name)):
        try:
            fds = list((pid / "fd").iterdir())
        except OSError:
            continue  # gone, or not ours to see
        held = set()
        for fd in fds:
            try:
                held.add(os.readlink(fd))
            except OSError:
                continue  # closed meanwhile
        held &= nodes
        if held:
            comm = _read(pid / "comm") or "?"
            users.append(f"process {pid.name} ({comm}) has {', '.join(sorted(held))} open")
    return users


def in_use(
    address: str,
    *,
    sysfs: str | os.PathLike[str] = "/sys",
    proc: str | os.PathLike[str] = "/proc",
) -> list[str]:
    """What uses the NVMe controller at `address`, one phrase per use (empty: nothing).

    Its namespaces' disks and partitions mounted, used as swap or held by
    another block device (device mapper, md), and processes that have it
    open through uio or vfio.
    """
    device = pci_device(address, sysfs=sysfs)
    disks = list(device.block_devices)
    return _kernel_users(Path(sysfs), Path(proc), disks) + _userspace_users(
        Path(sysfs), Path(proc), device.address
    )


def _write(path: Path, text: str) -> None:
    with open(path, "w") as out:
        out.write(text)


def _load_driver(sysfs: Path, driver: str) -> None:
    """modprobe the driver's module, on the real sysfs and where modprobe exists."""
    modprobe = shutil.which("modprobe")
    if modprobe is None or os.path.realpath(sysfs) != "/sys":
        return
    subprocess.run([modprobe, driver], capture_output=True, timeout=60, check=False)


def _noiommu(sysfs: Path) -> bool:
    return _read(sysfs / "module" / "vfio" / "parameters" / "enable_unsafe_noiommu_mode") in (
        "Y",
        "1",
    )


def _move(address: str, driver: str, sysfs: Path, proc: Path, timeout: float) -> PciDevice:
    """Hand the controller at `address` to `driver` (driver_override, unbind, probe)."""
    if os.geteuid() != 0:
        raise PermissionError(
            errno.EACCES, f"moving {address} to the {driver} driver needs root (it writes sysfs)"
        )
    here = pci_device(address, sysfs=sysfs)
    if here.class_code != NVME_CLASS:
        raise ValueError(
            f"{address} is not an NVMe controller (PCI class {here.class_code:#08x}, ids "
            f"{here.ids}): only NVMe controllers are moved here"
        )
    if here.driver == driver:
        return here
    users = in_use(address, sysfs=sysfs, proc=proc)
    if users:
        raise DeviceBusyError(
            f"the NVMe controller at {address} is in use: {'; '.join(users)}. It stays with "
            f"{'the ' + here.driver + ' driver' if here.driver else 'no driver'}",
            users=tuple(users),
        )
    if driver == "vfio-pci" and here.iommu_group is None and not _noiommu(sysfs):
        raise OSError(
            errno.ENODEV,
            f"{address} has no IOMMU group (no IOMMU, or it is off) and vfio's unsafe "
            "no-IOMMU mode is off, so vfio-pci cannot take it: use uio_pci_generic",
        )
    drivers = sysfs / "bus" / "pci" / "drivers"
    if not (drivers / driver).is_dir():
        _load_driver(sysfs, driver)
    if not (drivers / driver).is_dir():
        raise FileNotFoundError(
            errno.ENOENT,
            f"the {driver} driver is not loaded (modprobe {driver}); {address} stays with "
            f"{here.driver or 'no driver'}",
        )
    device_dir = _device_dir(sysfs, address)
    deadline = time.monotonic() + timeout
    _write(device_dir / "driver_override", driver)
    try:
        if here.driver is not None:
            _write(drivers / here.driver / "unbind", address)
        while _link_name(device_dir / "driver") != driver and time.monotonic() < deadline:
            # The kernel probes within the write; an error: the driver refused it, or
            # not yet (setup.sh retries too). The link says, once the probe is done.
            with contextlib.suppress(OSError):
                _write(sysfs / "bus" / "pci" / "drivers_probe", address)
            retry = min(deadline, time.monotonic() + 0.5)
            while _link_name(device_dir / "driver") != driver and time.monotonic() < retry:
                time.sleep(0.02)
    finally:
        _write(device_dir / "driver_override", "\n")
    now = _link_name(device_dir / "driver")
    if now != driver:
        if now is None and here.driver is not None:
            with contextlib.suppress(OSError):
                _write(drivers / here.driver / "bind", address)
            now = _link_name(device_dir / "driver")
        raise OSError(
            errno.EIO,
            f"{address} did not bind to {driver} within {timeout:g} s (the kernel's log may "
            f"say why); it is with {now or 'no driver'} now",
        )
    return pci_device(address, sysfs=sysfs)


def bind(
    address: str,
    driver: str = "uio_pci_generic",
    *,
    timeout: float = 10.0,
    sysfs: str | os.PathLike[str] = "/sys",
    proc: str | os.PathLike[str] = "/proc",
) -> PciDevice:
    """Hand the NVMe controller at `address` to a userspace driver, for SPDK.

    `driver` is "uio_pci_generic" (works without an IOMMU; DMA then uses
    physical addresses, so SPDK needs root) or "vfio-pci" (needs an IOMMU
    group, or vfio's unsafe no-IOMMU mode). Returns the device as it is now;
    a controller already with `driver` is left as it is.

    Refuses (DeviceBusyError, naming each use) a controller in use (see
    in_use()); PermissionError without root; ValueError for a device that is
    not an NVMe controller; DeviceNotFoundError when there is no device;
    FileNotFoundError when the driver is not loaded and cannot be.
    """
    address = check_pci_address("address", address)
    if driver not in USERSPACE_DRIVERS:
        raise ValueError(
            f"driver must be one of {', '.join(USERSPACE_DRIVERS)}, not {driver!r} "
            "(unbind() gives a controller back to the kernel's nvme driver)"
        )
    seconds = check_seconds("timeout", timeout)
    return _move(address, driver, Path(sysfs), Path(proc), seconds)


def unbind(
    address: str,
    *,
    timeout: float = 10.0,
    sysfs: str | os.PathLike[str] = "/sys",
    proc: str | os.PathLike[str] = "/proc",
) -> PciDevice:
    """Give the NVMe controller at `address` back to the kernel's nvme driver.

    Refuses, as bind() does, a controller in use: a process (SPDK) that has
    it open through its userspace driver must detach it first.
    """
    address = check_pci_address("address", address)
    seconds = check_seconds("timeout", timeout)
    return _move(address, KERNEL_DRIVER, Path(sysfs), Path(proc), seconds)
