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
segments, which Runtime(hugepages=True) sets. Without them SPDK attaches
anyway and every I/O hangs, so attach() reads the initiator's memory map
first, as virtio-user will, and refuses.

SPDK's virtio-user talks to the socket with blocking recv() calls on SPDK's
app thread: a listener that never answers freezes that thread for good. So
attach() first asks the listener, from the caller's thread and with a
deadline, the questions virtio-user asks first (GET_FEATURES, then
GET_PROTOCOL_FEATURES when offered), checks each reply as virtio-user does,
and disconnects; SPDK's vhost target takes the initiator's connection after
that. A listener can answer that probe and stall later, so SPDK connects
through a relay in this process (_vhost_relay.py) that waits for each
reply with the same deadline, and cuts the connection, which frees SPDK's
thread, when one is missed. Only control messages cross it; keep the
attaching process alive while the controller is attached (without the
relay, the controller's later control requests, such as at detach, fail).

Process exit: a process that served vhost-user (a Runtime target) can crash
as it exits, after SPDK stopped cleanly: DPDK's vhost event thread never
stops, and SPDK's environment destructor (rte_eal_cleanup) unmaps memory that
thread still reads (seen on v26.01 in about half of such exits; spdk_tgt
has the same). Such a program can end with os._exit() once stop() returned.

Every helper takes a Target (Runtime or SpdkProcess) and goes through RPC.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import socket
import stat
import struct
import time
import uuid
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ._checks import (
    SUN_PATH_MAX,
    check_cpu_mask,
    check_int,
    check_name,
    check_power_of_two,
    check_seconds,
    check_socket_path,
    parse_cpu_mask,
)
from ._sockets import receive_exactly
from ._vhost_relay import Relay
from .bdev import _peers
from .bdev.manage import bdev_info
from .errors import DeviceNotFoundError, HugepagesError, RpcError, rpc_meaning
from .process import SpdkProcess
from .runtime import Runtime, State
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
    "probe",
    "remove_scsi_lun",
]

# sun_path holds 108 bytes with its NUL. DPDK truncates a longer path silently,
# so a longer one is refused here.
MAX_SOCKET_PATH = SUN_PATH_MAX
MAX_QUEUES = 256
# queue_size: SPDK's vhost target takes at most 1024 entries a queue
# (SPDK_VHOST_MAX_VQ_SIZE); with more, or with 4 or fewer, bdevperf's I/O over
# a vhost-blk controller hung or failed (v26.01).
MIN_QUEUE_SIZE = 8
MAX_QUEUE_SIZE = 1024
PROBE_SECONDS = 3.0  # attach(): how long the listener has to answer the probe
_DEV_TYPES = ("blk", "scsi")
_ACCEPTING = 0x10000  # /proc/net/unix Flags: a listening socket
_BUSY_SECONDS = 5.0  # delete_controller(): how long a closing session may take to go

# vhost-user, as SPDK's virtio-user speaks it (lib/virtio/virtio_vhost_user.c).
_HEADER = struct.Struct("<III")  # request, flags, size
_U64 = struct.Struct("<Q")
_VERSION = 0x1
_REPLY = 0x4
_GET_FEATURES = 1
_GET_PROTOCOL_FEATURES = 15
_MESSAGES = {_GET_FEATURES: "GET_FEATURES", _GET_PROTOCOL_FEATURES: "GET_PROTOCOL_FEATURES"}
_F_PROTOCOL_FEATURES = 1 << 30  # VHOST_USER_F_PROTOCOL_FEATURES
_PROTOCOL_F_CONFIG = 1 << 9  # VHOST_USER_PROTOCOL_F_CONFIG: the blk initiator reads its config
# Device feature bits 0 to 23 belong to the device type; virtio-scsi defines only 0 to 3.
_NOT_SCSI_FEATURES = ((1 << 24) - 1) & ~0xF
_MAX_REGIONS = 8  # VHOST_USER_MEMORY_MAX_NREGIONS
_HUGEFILE = re.compile(r"map_\s*[-+]?\d")  # virtio-user's sscanf(.., "map_%d")

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
        scratch = f".pyspdk-probe-{uuid.uuid4().hex[:12]}"
        if kind == "blk":
            params = {"ctrlr": scratch, "dev_name": bdev}
            target.rpc("vhost_create_blk_controller", params)
        else:
            target.rpc("vhost_create_scsi_controller", {"ctrlr": scratch})
        try:
            (entry,) = target.rpc("vhost_get_controllers", {"name": scratch})
            found = _dir_of(_from_rpc(entry))
        finally:
            target.rpc("vhost_delete_controller", {"ctrlr": scratch})
    # A target that cannot be weakly referenced learns it again next time.
    with contextlib.suppress(TypeError):
        _socket_dirs[target] = found
    return found


def _check_path_free(socket_path: str) -> None:
    """FileExistsError unless a controller may put its socket at `socket_path`."""
    if os.path.lexists(socket_path):
        if not stat.S_ISSOCK(os.lstat(socket_path).st_mode):
            raise FileExistsError(f"{socket_path!r} exists and is not a socket")
        if _listening(socket_path):
            raise FileExistsError(f"a program is listening on {socket_path!r}")
        # A socket left by a process that died: SPDK replaces it.


def _name_for(target: Target, socket_path: str, kind: str, bdev: str | None) -> str:
    _check_path_free(socket_path)
    socket_dir = _socket_dir(target, kind, bdev)
    name = os.path.relpath(socket_path, socket_dir)
    if len((socket_dir + name).encode()) > MAX_SOCKET_PATH:
        raise ValueError(
            f"the target's vhost socket dir is {socket_dir!r}, so {socket_path!r} becomes "
            f"{socket_dir + name!r}, longer than a Unix socket path may be "
            f"({MAX_SOCKET_PATH} bytes): choose a path nearer that dir"
        )
    return name


def _reactor_cores(target: Target) -> set[int] | None:
    """The cores the target runs reactors on (None if it does not say)."""
    try:
        reactors = target.rpc("framework_get_reactors").get("reactors", [])
        return {int(r["lcore"]) for r in reactors}
    except (RpcError, AttributeError, KeyError, TypeError, ValueError):
        return None


def _controller_refused(
    target: Target, exc: RpcError, path: str, bdev: str | None, cpumask: str | None
) -> Exception:
    """Why SPDK refused to create a controller, as precisely as can be found out."""
    meaning = rpc_meaning(exc)
    if meaning == "no_device" and bdev is not None:
        return DeviceNotFoundError(f"no block device named {bdev!r}")
    if meaning == "not_permitted" and bdev is not None:
        return OSError(
            errno.EBUSY,
            f"bdev {bdev!r} is claimed by another module (an NVMe-oF namespace, a logical "
            f"volume store, ...): vhost cannot open it for writing",
        )
    if cpumask is not None:
        cores = _reactor_cores(target)
        wanted = set(parse_cpu_mask("cpumask", cpumask))
        if cores is not None and not wanted <= cores:
            missing = ", ".join(str(c) for c in sorted(wanted - cores))
            have = ", ".join(str(c) for c in sorted(cores))
            return ValueError(
                f"cpumask {cpumask!r} names core {missing}, where the target runs no reactor "
                f"(its reactors: {have})"
            )
    return RpcError(exc.method, exc.code, f"{exc.message} (controller at {path})")


def _require_bdev(target: Target, bdev: str) -> None:
    """DeviceNotFoundError naming `bdev` when the target has no such block device."""
    bdev_info(target, bdev)


def create_blk_controller(
    target: Target,
    socket_path: str | os.PathLike[str],
    bdev: str,
    *,
    cpumask: str | None = None,
) -> Controller:
    """Serve `bdev` as a vhost-blk controller at `socket_path` (a new Unix socket).

    DeviceNotFoundError when there is no such bdev; OSError (EBUSY) when
    another module claimed it; ValueError when `cpumask` names a core the
    target runs no reactor on; FileExistsError when something else is at the path.
    """
    check_target(target)
    path = _check_socket_path(socket_path)
    check_name(bdev, "bdev")
    mask = _check_cpumask(cpumask)
    _check_path_free(path)
    _require_bdev(target, bdev)
    try:
        name = _name_for(target, path, "blk", bdev)
        params: dict[str, Any] = {"ctrlr": name, "dev_name": bdev}
        if mask is not None:
            params["cpumask"] = mask
        target.rpc("vhost_create_blk_controller", params)
    except RpcError as exc:
        raise _controller_refused(target, exc, path, bdev, mask) from exc
    return _find(target, path)


def _check_luns(luns: Any) -> dict[int, str]:
    if luns is None:
        return {}
    if not isinstance(luns, Mapping):
        raise TypeError(
            f"luns must map SCSI target numbers (0 to 7) to bdev names, not "
            f"{type(luns).__name__} ({luns!r:.80})"
        )
    checked = {}
    for number, bdev in luns.items():
        check_int("scsi target number", number, 0, 7)
        check_name(bdev, f"luns[{number}] (a bdev name)")
        checked[number] = bdev
    return checked


def create_scsi_controller(
    target: Target,
    socket_path: str | os.PathLike[str],
    luns: Mapping[int, str] | None = None,
    *,
    cpumask: str | None = None,
) -> Controller:
    """A vhost-scsi controller at `socket_path`; `luns` maps SCSI target numbers to bdevs.

    Each SCSI target gets one LUN (LUN 0): the bdev. Nothing is left behind
    when a LUN cannot be added.
    """
    check_target(target)
    path = _check_socket_path(socket_path)
    mask = _check_cpumask(cpumask)
    checked = _check_luns(luns)
    _check_path_free(path)
    for bdev in checked.values():
        _require_bdev(target, bdev)
    try:
        name = _name_for(target, path, "scsi", None)
        params: dict[str, Any] = {"ctrlr": name}
        if mask is not None:
            params["cpumask"] = mask
        target.rpc("vhost_create_scsi_controller", params)
    except RpcError as exc:
        raise _controller_refused(target, exc, path, None, mask) from exc
    try:
        for number, bdev in sorted(checked.items()):
            add_scsi_lun(target, path, bdev, target_num=number)
    except BaseException:
        target.rpc("vhost_delete_controller", {"ctrlr": name})
        raise
    return _find(target, path)


def _scsi_controller(target: Target, path: str) -> Controller:
    controller = _find(target, path)
    if controller.kind != "scsi":
        raise ValueError(f"the controller at {path!r} is vhost-{controller.kind}, not vhost-scsi")
    return controller


def _scsi_targets(target: Target, controller: Controller) -> set[int]:
    """The SCSI target numbers of a vhost-scsi controller that hold a LUN."""
    (entry,) = target.rpc("vhost_get_controllers", {"name": controller.name})
    scsi = entry.get("backend_specific", {}).get("scsi", [])
    return {int(dev["scsi_dev_num"]) for dev in scsi}


def add_scsi_lun(
    target: Target, socket_path: str | os.PathLike[str], bdev: str, *, target_num: int = 0
) -> None:
    """Add `bdev` as SCSI target `target_num` (0 to 7) of a vhost-scsi controller.

    DeviceNotFoundError when there is no such bdev, FileExistsError when that
    SCSI target already has a LUN, LookupError when no controller is at the path.
    """
    check_target(target)
    path = _check_socket_path(socket_path)
    check_name(bdev, "bdev")
    check_int("target_num", target_num, 0, 7)
    controller = _scsi_controller(target, path)
    _require_bdev(target, bdev)
    if target_num in _scsi_targets(target, controller):
        raise FileExistsError(f"SCSI target {target_num} of the controller at {path} has a LUN")
    params = {"ctrlr": controller.name, "scsi_target_num": target_num, "bdev_name": bdev}
    try:
        target.rpc("vhost_scsi_controller_add_target", params)
    except RpcError as exc:
        if rpc_meaning(exc) == "exists":
            raise FileExistsError(
                f"SCSI target {target_num} of the controller at {path} has a LUN"
            ) from exc
        raise _controller_refused(target, exc, path, bdev, None) from exc


def remove_scsi_lun(
    target: Target, socket_path: str | os.PathLike[str], *, target_num: int = 0
) -> None:
    """Remove SCSI target `target_num` from a vhost-scsi controller.

    LookupError when that SCSI target has no LUN (SPDK itself answers "Device
    or resource busy"). An initiator connected to the controller sees the LUN
    go (hot-remove).
    """
    check_target(target)
    path = _check_socket_path(socket_path)
    check_int("target_num", target_num, 0, 7)
    controller = _scsi_controller(target, path)
    if target_num not in _scsi_targets(target, controller):
        raise LookupError(f"SCSI target {target_num} of the controller at {path} has no LUN")
    params = {"ctrlr": controller.name, "scsi_target_num": target_num}
    target.rpc("vhost_scsi_controller_remove_target", params)


def _sessions(target: Target, controller: Controller) -> int:
    entries = target.rpc("vhost_get_controllers", {"name": controller.name})
    return sum(len(entry.get("sessions", [])) for entry in entries)


def delete_controller(target: Target, socket_path: str | os.PathLike[str]) -> None:
    """Delete the controller at `socket_path` (its socket goes too).

    OSError (EBUSY) when an initiator stays connected for 5 s: SPDK's own RPC
    would not answer until the initiator disconnects, and would then delete
    it. (A connection that just ended takes a moment to go: the wait is for that.)
    """
    check_target(target)
    path = _check_socket_path(socket_path)
    controller = _find(target, path)
    deadline = time.monotonic() + _BUSY_SECONDS
    while _sessions(target, controller):
        if time.monotonic() >= deadline:
            raise OSError(
                errno.EBUSY,
                f"an initiator is connected to the vhost controller at {path}: detach it first",
            )
        time.sleep(0.05)
    target.rpc("vhost_delete_controller", {"ctrlr": controller.name})


# ------------------------------------------------------------------ initiator


def _pid_of(target: Target) -> int | None:
    """The process an initiator's SPDK runs in, when it can be told (and is running)."""
    if isinstance(target, Runtime):
        return os.getpid() if target.state is State.RUNNING else None
    if isinstance(target, SpdkProcess):
        return target.pid
    return None


def _hugepage_regions(maps: str) -> list[tuple[str, int, int]]:
    """The memory regions SPDK's virtio-user would share, read from a /proc/<pid>/maps text.

    As get_hugepage_file_info() reads them (lib/virtio/virtio_vhost_user.c):
    every mapping of a file named like DPDK's hugepage files ("...map_<n>"),
    adjacent mappings of one file merged. (path, start, end) each.
    """
    regions: list[tuple[str, int, int]] = []
    for line in maps.splitlines():
        fields = line.split(None, 5)
        if len(fields) < 6:
            continue
        path = fields[5]
        underscore = path.rfind("_")
        if underscore < 3 or not _HUGEFILE.match(path, underscore - 3):
            continue
        first, _, last = fields[0].partition("-")
        start, end = int(first, 16), int(last, 16)
        if regions and regions[-1][0] == path and regions[-1][2] == start:
            regions[-1] = (path, regions[-1][1], end)
        else:
            regions.append((path, start, end))
    return regions


def _check_initiator_memory(target: Target) -> None:
    """HugepagesError unless virtio-user can share this initiator's memory.

    SPDK attaches without complaint when there is nothing to share (no
    hugepages): every I/O then waits for ever, and so does stopping SPDK.
    """
    pid = _pid_of(target)
    if pid is None:
        return
    try:
        with open(f"/proc/{pid}/maps") as maps:
            regions = _hugepage_regions(maps.read())
    except OSError:
        return
    if not regions:
        raise HugepagesError(
            "a vhost-user initiator needs hugepages: virtio-user shares the initiator's "
            "memory through DPDK's hugepage files, and this SPDK has none (without them "
            "the attach seems to work and every I/O hangs). Start the initiator with "
            "Runtime(hugepages=True) (spdk_tgt: without --no-huge, with -g)"
        )
    removed = sum(path.endswith(" (deleted)") for path, _, _ in regions)
    if len(regions) > _MAX_REGIONS or removed:
        raise HugepagesError(
            f"a vhost-user initiator needs DPDK's single-file segments: this SPDK maps its "
            f"hugepages as {len(regions)} regions ({removed} of files DPDK removed), and "
            f"virtio-user shares at most {_MAX_REGIONS} files that exist. Start it with "
            "Runtime(hugepages=True) (spdk_tgt: -g / --single-file-segments)"
        )


def _ask(sock: socket.socket, request: int, deadline: float, path: str, seconds: float) -> int:
    """Send one vhost-user request that wants a u64 back; the reply, checked as SPDK does."""
    message = _MESSAGES[request]
    try:
        sock.sendall(_HEADER.pack(request, _VERSION, 0))
        header = receive_exactly(sock, _HEADER.size, deadline)
        got, flags, size = _HEADER.unpack(header)
        if got != request or flags != _VERSION | _REPLY or size != _U64.size:
            raise OSError(
                errno.EPROTO,
                f"the program listening on {path} does not speak vhost-user: its answer to "
                f"VHOST_USER_{message} is not a reply to it (request {got}, flags {flags:#x}, "
                f"size {size}; wanted {request}, {_VERSION | _REPLY:#x}, {_U64.size})",
            )
        (value,) = _U64.unpack(receive_exactly(sock, _U64.size, deadline))
    except TimeoutError:
        raise TimeoutError(
            errno.ETIMEDOUT,
            f"the program listening on {path} did not answer VHOST_USER_{message} within "
            f"{seconds:g} s: it does not speak vhost-user, or serves another initiator "
            "(SPDK's initiator would wait for it on SPDK's thread for ever)",
        ) from None
    except (ConnectionResetError, BrokenPipeError):
        raise ConnectionResetError(
            errno.ECONNRESET,
            f"the program listening on {path} closed the connection instead of answering "
            f"VHOST_USER_{message}: it does not speak vhost-user",
        ) from None
    return int(value)


def probe(socket_path: str | os.PathLike[str], timeout: float = PROBE_SECONDS) -> tuple[int, int]:
    """Ask the vhost-user target at `socket_path` what SPDK's initiator asks first.

    Returns (features, protocol features); protocol features are 0 when not
    offered. Raises within `timeout` seconds: ConnectionRefusedError when
    nothing listens, TimeoutError when the listener does not answer,
    ConnectionResetError when it hangs up, OSError (EPROTO) when it answers
    with something that is not a vhost-user reply; each names the path. The
    connection is closed before returning.
    """
    path = _check_socket_path(socket_path)
    seconds = check_seconds("timeout", timeout)
    deadline = time.monotonic() + seconds
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(seconds)
        try:
            sock.connect(path)
        except ConnectionRefusedError:
            raise ConnectionRefusedError(
                errno.ECONNREFUSED,
                f"nothing listens on the vhost socket {path} (connection refused): a socket "
                "file left by a program that ended?",
            ) from None
        except TimeoutError:
            raise TimeoutError(
                errno.ETIMEDOUT,
                f"the program listening on {path} did not take a connection within {seconds:g} s",
            ) from None
        except BlockingIOError:
            raise BlockingIOError(
                errno.EAGAIN,
                f"the program listening on {path} takes no more connections (its queue "
                "of pending connections is full)",
            ) from None
        features = _ask(sock, _GET_FEATURES, deadline, path, seconds)
        protocol = 0
        if features & _F_PROTOCOL_FEATURES:
            protocol = _ask(sock, _GET_PROTOCOL_FEATURES, deadline, path, seconds)
    return features, protocol


def _check_dev_type(path: str, dev_type: str, features: int, protocol: int) -> None:
    """ValueError when the target is plainly not of `dev_type` (SPDK would misbehave)."""
    if dev_type == "scsi" and features & _NOT_SCSI_FEATURES:
        raise ValueError(
            f"the vhost controller at {path} is not virtio-scsi: it offers device features "
            f"{features & _NOT_SCSI_FEATURES:#x}, which virtio-scsi does not define "
            "(a vhost-blk controller? use dev_type='blk')"
        )
    if dev_type == "blk" and not protocol & _PROTOCOL_F_CONFIG:
        raise ValueError(
            f"the vhost controller at {path} does not offer its device config "
            "(VHOST_USER_PROTOCOL_F_CONFIG), which SPDK's virtio-blk initiator reads "
            "(a vhost-scsi controller? use dev_type='scsi')"
        )


def _name_taken(target: Target, name: str) -> bool:
    """Whether a virtio-scsi controller or a bdev already has the name `name`."""
    if any(dev.get("name") == name for dev in target.rpc("bdev_virtio_scsi_get_devices")):
        return True
    try:
        bdev_info(target, name)
    except DeviceNotFoundError:
        return False
    return True


def attach(
    target: Target,
    name: str,
    socket_path: str | os.PathLike[str],
    *,
    dev_type: str = "blk",
    queues: int = 1,
    queue_size: int | None = None,
    probe_timeout: float = PROBE_SECONDS,
) -> list[str]:
    """Connect a virtio-user initiator to a vhost socket; returns the bdev names it made.

    Each open I/O channel takes one queue: give one per thread that will do
    I/O at the same time (bdevperf needs 2). `queue_size` (a power of two
    from 8 to 1024) is each queue's number of entries (SPDK's default: 512);
    an I/O in more pieces than queue_size - 2 cannot be carried.

    Refused before SPDK is asked: HugepagesError when the initiator's SPDK has
    no hugepage memory to share (Runtime(hugepages=True) has); an OSError
    naming the path when the listener does not answer vhost-user's first
    questions within `probe_timeout` seconds (see probe()); ValueError when
    the controller is plainly not of `dev_type`; FileExistsError when `name`
    is taken.

    SPDK's initiator never notices the target going away: a BlockDevice on
    these bdevs checks the target's socket while a blocking call or
    read_many/write_many waits, and raises IoError (ENOTCONN) within about a
    second once it stopped listening. Futures and awaitables are not watched:
    give them a timeout.
    """
    check_target(target)
    check_name(name, "name (of the controller)")
    path = _check_socket_path(socket_path)
    if not isinstance(dev_type, str):
        raise TypeError(f"dev_type must be a str, not {type(dev_type).__name__} ({dev_type!r})")
    if dev_type not in _DEV_TYPES:
        raise ValueError(f"dev_type must be one of {_DEV_TYPES}, not {dev_type!r}")
    check_int("queues", queues, 1, MAX_QUEUES)
    if queue_size is not None:
        check_power_of_two("queue_size", queue_size, MIN_QUEUE_SIZE, MAX_QUEUE_SIZE)
    seconds = check_seconds("probe_timeout", probe_timeout)
    if not os.path.lexists(path):
        raise FileNotFoundError(f"no vhost socket at {path!r}")
    if not stat.S_ISSOCK(os.stat(path).st_mode):
        raise ValueError(f"socket_path {path!r} is not a socket")
    if _name_taken(target, name):
        raise FileExistsError(f"the initiator already has a controller or bdev named {name!r}")
    _check_initiator_memory(target)
    features, protocol = probe(path, seconds)
    _check_dev_type(path, dev_type, features, protocol)
    params: dict[str, Any] = {
        "name": name,
        "trtype": "user",
        "traddr": path,
        "dev_type": dev_type,
        "vq_count": queues,
    }
    if queue_size is not None:
        params["vq_size"] = queue_size
    gone = _target_gone_probe(path)
    # SPDK talks to the target through a relay that bounds every wait for a reply.
    relay = Relay(path, seconds)
    params["traddr"] = relay.path
    try:
        result: list[str] = target.rpc("bdev_virtio_attach_controller", params)
    except RpcError as exc:
        relay.abandon()
        if relay.failure is not None:
            raise TimeoutError(errno.ETIMEDOUT, relay.failure) from exc
        raise RpcError(exc.method, exc.code, f"{exc.message} (vhost socket {path})") from exc
    except BaseException:
        relay.abandon()
        raise
    if gone is not None:
        _peers.watch(target, result, gone)
        _attached.setdefault(target, {})[name] = list(result)
    return list(result)


def detach(target: Target, name: str) -> None:
    """Disconnect the virtio-user initiator `name`; its bdevs go away.

    DeviceNotFoundError when there is no such controller.
    """
    check_target(target)
    check_name(name, "name (of the controller)")
    try:
        target.rpc("bdev_virtio_detach_controller", {"name": name})
    except RpcError as exc:
        if rpc_meaning(exc) == "no_device":
            raise DeviceNotFoundError(f"no virtio-user controller named {name!r}") from None
        raise
    _peers.unwatch(target, _attached.get(target, {}).pop(name, []))
