"""vhost-user: serve block devices to other processes, and consume them as bdevs.

Target side: vhost-blk and vhost-scsi controllers, each a Unix socket at a path
the caller chooses. SPDK names a controller, and puts its socket at
`<socket dir><name>`, where the socket dir is fixed per process (its working
directory, or `-S`). So a full path cannot be passed as the name. Here the
socket dir is first learnt from the target (from a controller it already has,
or from a short-lived probe controller that makes no bdev claim), then the name
becomes the path relative to that dir. SPDK strips that same dir off the socket
path when a client connects, so the relative name finds the controller. The
caller's process never changes directory.

Initiator side: a virtio-user controller attached to a socket becomes one bdev
(blk) or one per LUN (scsi). virtio-user shares the initiator's memory by
passing DPDK's hugepage files: the initiator needs hugepages with single-file
segments, which Runtime(hugepages=True) sets.

Process exit: a process that served vhost-user (a Runtime target) can crash
as it exits, after SPDK stopped cleanly: DPDK's vhost event thread never
stops, and SPDK's environment destructor (rte_eal_cleanup) unmaps memory that
thread still reads (seen on v26.01 in about half of such exits; spdk_tgt
has the same). Such a program can end with os._exit() once stop() returned.

Every helper takes a Target (Runtime or SpdkProcess) and goes through RPC.
"""

from __future__ import annotations

import contextlib
import os
import stat
import uuid
import weakref
from dataclasses import dataclass, field
from typing import Any

from ._checks import SUN_PATH_MAX, check_cpu_mask, check_int, check_name, check_socket_path
from .bdev import _peers
from .errors import RpcError
from .target import Target, check_target

__all__ = [
    "Controller",
    "add_scsi_lun",
    "attach",
    "create_blk_controller",
    "create_scsi_controller",
    "delete_controller",
    "detach",
    "list_controllers",
    "remove_scsi_lun",
]

# sun_path holds 108 bytes with its NUL. DPDK truncates a longer path silently,
# so a longer one is refused here.
MAX_SOCKET_PATH = SUN_PATH_MAX
MAX_QUEUES = 256
_DEV_TYPES = ("blk", "scsi")
_ACCEPTING = 0x10000  # /proc/net/unix Flags: a listening socket

_socket_dirs: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
# Per target: the bdevs each attached controller made, watched for its target going away.
_attached: weakref.WeakKeyDictionary[Any, dict[str, list[str]]] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class Controller:
    """One vhost controller of a target."""

    socket: str  # the full path of its Unix socket
    name: str  # SPDK's name for it (relative to the target's socket dir)
    kind: str  # "blk" or "scsi"
    bdevs: tuple[str, ...]  # the bdev (blk) or every LUN's bdev (scsi)
    cpumask: str
    raw_socket: str = field(default="", repr=False, compare=False)  # as SPDK spells it


def _check_socket_path(socket_path: Any) -> str:
    return check_socket_path("socket_path", socket_path)


def _check_cpumask(cpumask: Any) -> str | None:
    return None if cpumask is None else check_cpu_mask("cpumask", cpumask)


def _from_rpc(entry: dict[str, Any]) -> Controller:
    backend = entry.get("backend_specific", {})
    if "block" in backend:
        kind, bdevs = "blk", (backend["block"].get("bdev"),)
    else:
        kind = "scsi"
        bdevs = tuple(
            lun["bdev_name"] for dev in backend.get("scsi", []) for lun in dev.get("luns", [])
        )
    return Controller(
        socket=os.path.normpath(entry["socket"]),
        name=entry["ctrlr"],
        kind=kind,
        bdevs=tuple(b for b in bdevs if b),
        cpumask=entry.get("cpumask", ""),
        raw_socket=entry["socket"],
    )


def list_controllers(target: Target) -> list[Controller]:
    """Every vhost controller of the target."""
    return [_from_rpc(e) for e in check_target(target).rpc("vhost_get_controllers")]


def _find(target: Target, socket_path: str) -> Controller:
    for controller in list_controllers(target):
        if controller.socket == socket_path:
            return controller
    raise LookupError(f"the target has no vhost controller at {socket_path!r}")


def _dir_of(controller: Controller) -> str:
    raw = controller.raw_socket
    if not raw.endswith(controller.name):
        raise RuntimeError(
            f"cannot tell the target's vhost socket dir from {raw!r} "
            f"(controller {controller.name!r})"
        )
    return raw[: len(raw) - len(controller.name)]


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _listeners(path: str) -> set[int] | None:
    """The inodes of the sockets listening at Unix socket `path`; None if /proc cannot tell.

    A target names its socket through its own socket dir, so the path it bound
    may be spelt another way ("/srv/../tmp/a.sock"): an entry of the same base
    name counts when it is the same file.
    """
    try:
        with open("/proc/net/unix") as table:
            lines = table.read().splitlines()[1:]
    except OSError:
        return None
    base = os.path.basename(path)
    found = set()
    for line in lines:
        fields = line.split(None, 7)
        if len(fields) != 8 or not int(fields[3], 16) & _ACCEPTING:
            continue
        bound = fields[7]
        if bound == path or (os.path.basename(bound) == base and _same_file(bound, path)):
            found.add(int(fields[6]))
    return found


def _listening(path: str) -> bool:
    """Whether a process listens on the Unix socket `path` (read from /proc/net/unix)."""
    found = _listeners(path)
    return found is None or bool(found)  # cannot tell: assume it is in use


def _target_gone_probe(path: str) -> _peers.Probe | None:
    """A probe that tells when the socket now listening at `path` stops listening.

    A target that dies (or deletes the controller) closes it; one started
    again at the same path listens on a new socket, which does not revive the
    old connection. None when no single listener is seen (nothing to watch).
    """
    found = _listeners(path)
    if found is None or len(found) != 1:
        return None
    (inode,) = found

    def gone() -> str | None:
        now = _listeners(path)
        if now is None or inode in now:
            return None
        return f"the vhost-user target at {path} is gone (its socket stopped listening)"

    return gone


def _socket_dir(target: Target, kind: str, bdev: str | None) -> str:
    """The directory SPDK puts this target's vhost sockets in (with a trailing '/')."""
    known = _socket_dirs.get(target)
    if known is not None:
        return known
    existing = list_controllers(target)
    if existing:
        found = _dir_of(existing[0])
    else:
        # A controller nobody connects to, named so it collides with nothing.
        probe = f".pyspdk-probe-{uuid.uuid4().hex[:12]}"
        if kind == "blk":
            params = {"ctrlr": probe, "dev_name": bdev}
            target.rpc("vhost_create_blk_controller", params)
        else:
            target.rpc("vhost_create_scsi_controller", {"ctrlr": probe})
        try:
            (entry,) = target.rpc("vhost_get_controllers", {"name": probe})
            found = _dir_of(_from_rpc(entry))
        finally:
            target.rpc("vhost_delete_controller", {"ctrlr": probe})
    # A target that cannot be weakly referenced learns it again next time.
    with contextlib.suppress(TypeError):
        _socket_dirs[target] = found
    return found


def _name_for(target: Target, socket_path: str, kind: str, bdev: str | None) -> str:
    directory = os.path.dirname(socket_path)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"the directory of socket_path {socket_path!r} does not exist")
    if os.path.lexists(socket_path):
        if not stat.S_ISSOCK(os.lstat(socket_path).st_mode):
            raise FileExistsError(f"{socket_path!r} exists and is not a socket")
        if _listening(socket_path):
            raise FileExistsError(f"a program is listening on {socket_path!r}")
        # A socket left by a process that died: SPDK replaces it.
    socket_dir = _socket_dir(target, kind, bdev)
    name = os.path.relpath(socket_path, socket_dir)
    if len((socket_dir + name).encode()) > MAX_SOCKET_PATH:
        raise ValueError(
            f"the target's vhost socket dir is {socket_dir!r}, so {socket_path!r} becomes "
            f"{socket_dir + name!r}, longer than a Unix socket path may be "
            f"({MAX_SOCKET_PATH} bytes): choose a path nearer that dir"
        )
    return name


def create_blk_controller(
    target: Target,
    socket_path: str | os.PathLike[str],
    bdev: str,
    *,
    cpumask: str | None = None,
) -> Controller:
    """Serve `bdev` as a vhost-blk controller at `socket_path` (a new Unix socket)."""
    check_target(target)
    path = _check_socket_path(socket_path)
    check_name(bdev)
    mask = _check_cpumask(cpumask)
    name = _name_for(target, path, "blk", bdev)
    params: dict[str, Any] = {"ctrlr": name, "dev_name": bdev}
    if mask is not None:
        params["cpumask"] = mask
    target.rpc("vhost_create_blk_controller", params)
    return _find(target, path)


def create_scsi_controller(
    target: Target,
    socket_path: str | os.PathLike[str],
    luns: dict[int, str] | None = None,
    *,
    cpumask: str | None = None,
) -> Controller:
    """A vhost-scsi controller at `socket_path`; `luns` maps SCSI target numbers to bdevs."""
    check_target(target)
    path = _check_socket_path(socket_path)
    mask = _check_cpumask(cpumask)
    luns = dict(luns or {})
    for number, bdev in luns.items():
        check_int("scsi target number", number, 0, 7)
        check_name(bdev)
    name = _name_for(target, path, "scsi", None)
    params: dict[str, Any] = {"ctrlr": name}
    if mask is not None:
        params["cpumask"] = mask
    target.rpc("vhost_create_scsi_controller", params)
    try:
        for number, bdev in sorted(luns.items()):
            add_scsi_lun(target, path, bdev, target_num=number)
    except BaseException:
        target.rpc("vhost_delete_controller", {"ctrlr": name})
        raise
    return _find(target, path)


def add_scsi_lun(
    target: Target, socket_path: str | os.PathLike[str], bdev: str, *, target_num: int = 0
) -> None:
    """Add `bdev` as SCSI target `target_num` (0 to 7) of a vhost-scsi controller."""
    check_target(target)
    path = _check_socket_path(socket_path)
    check_name(bdev)
    check_int("target_num", target_num, 0, 7)
    controller = _find(target, path)
    if controller.kind != "scsi":
        raise ValueError(f"the controller at {path!r} is vhost-{controller.kind}, not vhost-scsi")
    params = {"ctrlr": controller.name, "scsi_target_num": target_num, "bdev_name": bdev}
    target.rpc("vhost_scsi_controller_add_target", params)


def remove_scsi_lun(
    target: Target, socket_path: str | os.PathLike[str], *, target_num: int = 0
) -> None:
    """Remove SCSI target `target_num` from a vhost-scsi controller."""
    check_target(target)
    path = _check_socket_path(socket_path)
    check_int("target_num", target_num, 0, 7)
    controller = _find(target, path)
    params = {"ctrlr": controller.name, "scsi_target_num": target_num}
    target.rpc("vhost_scsi_controller_remove_target", params)


def delete_controller(target: Target, socket_path: str | os.PathLike[str]) -> None:
    """Delete the controller at `socket_path` (its socket goes too)."""
    check_target(target)
    controller = _find(target, _check_socket_path(socket_path))
    target.rpc("vhost_delete_controller", {"ctrlr": controller.name})


def attach(
    target: Target,
    name: str,
    socket_path: str | os.PathLike[str],
    *,
    dev_type: str = "blk",
    queues: int = 1,
    queue_size: int | None = None,
) -> list[str]:
    """Connect a virtio-user initiator to a vhost socket; returns the bdev names it made.

    Each open I/O channel takes one queue: give one per thread that will do
    I/O at the same time (bdevperf needs 2). The initiator's SPDK needs
    hugepages (Runtime(hugepages=True)). SPDK's initiator never notices the
    target going away: a BlockDevice on these bdevs checks the target's socket
    while a blocking call or read_many/write_many waits, and raises IoError
    (ENOTCONN) within about a second once it stopped listening. Futures and
    awaitables are not watched: give them a timeout.
    """
    check_target(target)
    check_name(name, "a controller name")
    path = _check_socket_path(socket_path)
    if dev_type not in _DEV_TYPES:
        raise ValueError(f"dev_type must be one of {_DEV_TYPES}, not {dev_type!r}")
    check_int("queues", queues, 1, MAX_QUEUES)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no vhost socket at {path!r}")
    params: dict[str, Any] = {
        "name": name,
        "trtype": "user",
        "traddr": path,
        "dev_type": dev_type,
        "vq_count": queues,
    }
    if queue_size is not None:
        check_int("queue_size", queue_size, 1, 32768)
        params["vq_size"] = queue_size
    probe = _target_gone_probe(path)
    try:
        result: list[str] = target.rpc("bdev_virtio_attach_controller", params)
    except RpcError as exc:
        if getattr(target, "hugepages", True) is False:
            raise RpcError(
                exc.method,
                exc.code,
                f"{exc.message} (a virtio-user initiator needs hugepages: "
                "start the initiator with hugepages=True)",
            ) from None
        raise
    if probe is not None:
        _peers.watch(target, result, probe)
        _attached.setdefault(target, {})[name] = list(result)
    return list(result)


def detach(target: Target, name: str) -> None:
    """Disconnect the virtio-user initiator `name`; its bdevs go away."""
    check_target(target)
    check_name(name, "a controller name")
    target.rpc("bdev_virtio_detach_controller", {"name": name})
    _peers.unwatch(target, _attached.get(target, {}).pop(name, []))
