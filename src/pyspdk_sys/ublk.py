"""Kernel block devices (/dev/ublkbN) served by SPDK's ublk target, from any bdev.

    from pyspdk_sys import ublk
    ublk.create_target(target)
    disk = ublk.start_disk(target, "Malloc0", 0, num_queues=1, queue_depth=64)
    ...   # disk.device == "/dev/ublkb0": the kernel reads and writes Malloc0
    ublk.stop_disk(target, 0)
    ublk.destroy_target(target)

`target` is anything with `.rpc()`: a Runtime (SPDK in this process) or an
SpdkProcess. Everything goes through SPDK's ublk RPCs.

Why the checks before each call: ublk needs the kernel's ublk_drv
(/dev/ublk-control) and CAP_SYS_ADMIN, and SPDK's own answer when either is
missing is a bare errno in its log. check_available() says which is missing,
and every call that would touch the kernel runs it first. The checks look at
this host and this process; for an SpdkProcess running as another user the
privilege check is SPDK's own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._checks import check_bool, check_cpu_mask, check_int, check_name
from .errors import (
    DeviceNotFoundError,
    RpcError,
    RuntimeStateError,
    UblkIdInUseError,
    UblkUnavailableError,
    rpc_meaning,
)
from .target import Target, check_target

__all__ = [
    "MAX_ID",
    "MAX_QUEUES",
    "MAX_QUEUE_DEPTH",
    "UblkDisk",
    "check_available",
    "create_target",
    "destroy_target",
    "get_disks",
    "recover_disk",
    "start_disk",
    "stop_disk",
    "unavailable_reasons",
]

CONTROL = Path("/dev/ublk-control")
MAX_ID = (1 << 20) - 1  # the kernel's ublk device ids (UBLK_MAX_UBLKS)
MAX_QUEUES = 32  # SPDK caps num_queues here (lib/ublk/ublk.c)
MAX_QUEUE_DEPTH = 1024  # and queue_depth here
_CAP_SYS_ADMIN = 21


@dataclass(frozen=True)
class UblkDisk:
    """A ublk disk as SPDK lists it."""

    id: int
    bdev_name: str
    num_queues: int
    queue_depth: int
    device: str  # /dev/ublkb<id>


def _privileged() -> bool:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> _CAP_SYS_ADMIN & 1)
    except (OSError, ValueError, IndexError):
        pass
    return os.geteuid() == 0


def _module_present() -> bool:
    """Whether the running kernel has a ublk_drv module file to load."""
    release = os.uname().release
    base = Path("/lib/modules") / release / "kernel" / "drivers" / "block"
    return any(base.glob("ublk_drv.ko*"))


def unavailable_reasons() -> tuple[str, ...]:
    """Why ublk cannot work here (see UblkUnavailableError.reasons); () when it can."""
    reasons = []
    if not CONTROL.exists():
        reasons.append("no_driver")
    if not _privileged():
        reasons.append("not_privileged")
    return tuple(reasons)


def check_available() -> None:
    """Raise UblkUnavailableError naming everything that stops ublk working here."""
    reasons = unavailable_reasons()
    if not reasons:
        return
    parts = []
    if "no_driver" in reasons:
        if _module_present():
            parts.append(f"{CONTROL} is missing: load the driver with `modprobe ublk_drv`")
        else:
            parts.append(
                f"{CONTROL} is missing and kernel {os.uname().release} has no ublk_drv module "
                "(it needs CONFIG_BLK_DEV_UBLK, kernel 6.0 or later)"
            )
    if "not_privileged" in reasons:
        parts.append("serving ublk disks needs CAP_SYS_ADMIN (run as root)")
    raise UblkUnavailableError("ublk is not available: " + "; ".join(parts), reasons=reasons)


def _call(target: Target, method: str, params: dict[str, Any], what: str) -> Any:
    try:
        return target.rpc(method, params)
    except RpcError as exc:
        meaning = rpc_meaning(exc)
        if meaning == "no_device":
            raise RuntimeStateError(
                f"{what}: SPDK has no ublk target (call ublk.create_target first): {exc.message}"
            ) from None
        if meaning == "not_permitted":
            raise UblkUnavailableError(
                f"{what}: SPDK was refused by the kernel: {exc.message}",
                reasons=("not_privileged",),
            ) from None
        raise


def create_target(target: Any, *, cpumask: str | None = None, user_copy: bool = True) -> None:
    """Create SPDK's ublk target. `cpumask`: the cores its queues may run on.

    `user_copy=False` asks SPDK not to use the kernel's user-copy mode.
    RuntimeStateError if the target already exists.
    """
    target = check_target(target)
    params: dict[str, Any] = {}
    if cpumask is not None:
        params["cpumask"] = check_cpu_mask("cpumask", cpumask)
    if not check_bool("user_copy", user_copy):
        params["disable_user_copy"] = True
    check_available()
    try:
        target.rpc("ublk_create_target", params)
    except RpcError as exc:
        if rpc_meaning(exc) in ("busy", "exists"):
            raise RuntimeStateError(
                f"ublk_create_target: a ublk target already exists ({exc.message})"
            ) from None
        raise


def destroy_target(target: Any) -> None:
    """Destroy the ublk target, stopping its disks first."""
    target = check_target(target)
    _call(target, "ublk_destroy_target", {}, "ublk_destroy_target")


def _disk(entry: Any) -> UblkDisk:
    return UblkDisk(
        id=int(entry["id"]),
        bdev_name=str(entry["bdev_name"]),
        num_queues=int(entry["num_queues"]),
        queue_depth=int(entry["queue_depth"]),
        device=str(entry.get("ublk_device", f"/dev/ublkb{entry['id']}")),
    )


def get_disks(target: Any, ublk_id: int | None = None) -> list[UblkDisk]:
    """Every ublk disk SPDK serves ([] without a target), or only the one with ublk_id."""
    target = check_target(target)
    if ublk_id is not None:
        check_int("ublk_id", ublk_id, 0, MAX_ID)
    # All of them, filtered here: asking SPDK for an id it lacks logs an error.
    found = [_disk(entry) for entry in target.rpc("ublk_get_disks", {}) or []]
    return [disk for disk in found if ublk_id is None or disk.id == ublk_id]


def start_disk(
    target: Any, bdev_name: str, ublk_id: int, *, num_queues: int = 1, queue_depth: int = 128
) -> UblkDisk:
    """Serve bdev `bdev_name` as /dev/ublkb<ublk_id>; returns the disk as SPDK lists it."""
    target = check_target(target)
    check_name(bdev_name, "a bdev name")
    check_int("ublk_id", ublk_id, 0, MAX_ID)
    check_int("num_queues", num_queues, 1, MAX_QUEUES)
    check_int("queue_depth", queue_depth, 1, MAX_QUEUE_DEPTH)
    check_available()
    taken = get_disks(target, ublk_id)
    if taken:
        raise UblkIdInUseError(
            f"ublk id {ublk_id} is already in use (by bdev {taken[0].bdev_name!r}); "
            "stop that disk first or pick another id"
        )
    try:
        target.rpc(
            "ublk_start_disk",
            {
                "bdev_name": bdev_name,
                "ublk_id": ublk_id,
                "num_queues": num_queues,
                "queue_depth": queue_depth,
            },
        )
    except RpcError as exc:
        meaning = rpc_meaning(exc)
        if meaning in ("busy", "exists"):
            raise UblkIdInUseError(f"ublk id {ublk_id} is already in use: {exc.message}") from None
        if meaning == "no_device":
            bdevs = [b["name"] for b in target.rpc("bdev_get_bdevs", {})]
            if bdev_name not in bdevs:
                raise DeviceNotFoundError(f"ublk_start_disk: no bdev named {bdev_name!r}") from None
            raise RuntimeStateError(
                f"ublk_start_disk: SPDK has no ublk target (call ublk.create_target "
                f"first): {exc.message}"
            ) from None
        raise
    (disk,) = get_disks(target, ublk_id)
    return disk


def stop_disk(target: Any, ublk_id: int) -> None:
    """Stop serving /dev/ublkb<ublk_id>; DeviceNotFoundError if there is no such disk."""
    target = check_target(target)
    check_int("ublk_id", ublk_id, 0, MAX_ID)
    if not get_disks(target, ublk_id):
        raise DeviceNotFoundError(f"no ublk disk has id {ublk_id}")
    _call(target, "ublk_stop_disk", {"ublk_id": ublk_id}, "ublk_stop_disk")


def recover_disk(target: Any, bdev_name: str, ublk_id: int) -> UblkDisk:
    """Reattach /dev/ublkb<ublk_id>, left by an SPDK that exited, to bdev `bdev_name`.

    Needs a kernel with ublk user recovery (UBLK_F_USER_RECOVERY); SPDK
    answers with an error otherwise.
    """
    target = check_target(target)
    check_name(bdev_name, "a bdev name")
    check_int("ublk_id", ublk_id, 0, MAX_ID)
    check_available()
    _call(
        target,
        "ublk_recover_disk",
        {"bdev_name": bdev_name, "ublk_id": ublk_id},
        "ublk_recover_disk",
    )
    (disk,) = get_disks(target, ublk_id)
    return disk
