"""NVMe-oF over TCP: serve bdevs as NVMe namespaces, and attach remote ones as bdevs.

Target side, in the order SPDK needs it: the TCP transport, a subsystem (an
NQN with a serial number and the hosts it admits), its namespaces (bdevs),
its listeners (address and port), and optionally a discovery listener.
`serve()` does all of that in one call.

Initiator side: `attach()` connects an NVMe controller to a subsystem and
returns the bdev names of its namespaces. SPDK's reconnect options decide
what an outage looks like to I/O: while the controller is lost, I/O waits
(queued) until `fast_io_fail_timeout_sec`, then fails; after
`ctrlr_loss_timeout_sec` SPDK gives up and deletes the controller and its
bdevs. With the defaults here I/O fails within a few seconds of an outage and
the controller keeps trying to reconnect for a minute.

Why the checks around each RPC: SPDK answers most refusals here with
"Invalid parameters", "Internal error" or "Input/output error", whatever the
cause (a host added twice, a port another program holds, nothing listening,
a namespace already held). Each helper checks what it can before the call,
and after a refusal finds out why (the target's own lists, a bind or an
NVMe/TCP handshake from Python, bounded by a deadline) and raises an error
that says so, the RpcError kept as its __cause__.

Every helper takes a Target (Runtime or SpdkProcess) and goes through RPC.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import ipaddress
import re
import socket
import struct
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ._checks import (
    DISCOVERY_NQN,
    NQN_MAX,
    check_bool,
    check_int,
    check_ip_address,
    check_name,
    check_nqn,
    check_port,
    check_reconnect,
)
from ._sockets import receive_exactly
from .bdev.manage import bdev_info
from .errors import DeviceNotFoundError, RpcError, rpc_meaning
from .log import captured
from .target import Target, check_target

__all__ = [
    "DISCOVERY_NQN",
    "Subsystem",
    "add_discovery_listener",
    "add_listener",
    "add_namespace",
    "allow_host",
    "attach",
    "create_subsystem",
    "create_transport",
    "default_serial",
    "delete_subsystem",
    "detach",
    "list_subsystems",
    "serve",
]

MAX_NQN = NQN_MAX
MAX_SERIAL = 20
MAX_MODEL = 40
PROBE_SECONDS = 3.0  # attach(): how long a peer has to answer the NVMe/TCP handshake
_PRINTABLE = re.compile(r"[\x20-\x7e]+")
# nvmf_create_transport's options for TCP (SPDK v26.01, and v26.05's two iobuf ones).
# SPDK ignores a name it does not know, so a misspelt option would be lost silently.
TCP_OPTIONS = frozenset(
    {
        "max_queue_depth",
        "max_io_qpairs_per_ctrlr",
        "in_capsule_data_size",
        "max_io_size",
        "io_unit_size",
        "max_aq_depth",
        "num_shared_buffers",
        "buf_cache_size",
        "iobuf_small_cache_size",
        "iobuf_large_cache_size",
        "dif_insert_or_strip",
        "abort_timeout_sec",
        "zcopy",
        "acceptor_poll_rate",
        "ack_timeout",
        "data_wr_pool_size",
        "disable_command_passthru",
        "kas",
        "min_kato",
        "masked_oncs",
        "masked_fuses",
        "c2h_success",
        "control_msg_num",
        "sock_priority",
    }
)
# NVMe/TCP PDUs (NVMe/TCP transport specification): an ICReq and the ICResp it gets.
_PDU_HEADER = struct.Struct("<BBBBI")  # type, flags, hlen, pdo, plen
_IC_LENGTH = 128
_ICREQ, _ICRESP = 0x00, 0x01
# Identify (admin opcode 06h): the active namespace IDs (CNS 02h), a namespace's IDs (CNS 03h).
_IDENTIFY = 0x06
_CNS_ACTIVE_NSIDS = 0x02
_CNS_NS_IDS = 0x03
_NIDT_UUID = 0x03


@dataclass(frozen=True)
class Subsystem:
    """An NVMe-oF subsystem as the target reports it."""

    nqn: str
    serial: str
    allow_any_host: bool
    hosts: tuple[str, ...]
    namespaces: dict[int, str]  # nsid -> bdev name
    listeners: tuple[tuple[str, str, int], ...]  # (trtype, address, port)
    model: str = ""
    max_namespaces: int = 0  # 0 for the discovery subsystem


def _check_nqn(nqn: Any, what: str = "nqn") -> str:
    return check_nqn(what, nqn)


def _check_address(address: Any) -> tuple[str, str]:
    """(address, adrfam) for an IPv4 or IPv6 literal."""
    return check_ip_address("address", address)


def _check_port(port: Any) -> int:
    return check_port("port", port)


def _where(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def default_serial(nqn: str) -> str:
    """The serial number a subsystem gets when none is given: 20 characters derived
    from its NQN, so that subsystems of one target (and of one NQN everywhere) get
    distinct ones."""
    _check_nqn(nqn)
    return "PY" + hashlib.sha256(nqn.encode()).hexdigest()[:18].upper()


def _check_printable(name: str, value: Any, limit: int) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__} ({value!r})")
    if not _PRINTABLE.fullmatch(value) or len(value) > limit:
        raise ValueError(f"{name} must be 1 to {limit} printable ASCII chars, not {value!r}")
    return value


def _check_hosts(hosts: Any) -> list[str] | None:
    """None, or the host NQNs as a list: each valid, none twice."""
    if hosts is None:
        return None
    if isinstance(hosts, (str, bytes)) or not isinstance(hosts, Iterable):
        raise TypeError(
            f"hosts must be an iterable of host NQNs (or None for any host), not "
            f"{type(hosts).__name__} ({hosts!r:.80})"
        )
    checked: list[str] = []
    for host in hosts:
        _check_nqn(host, "a host NQN in hosts")
        if host in checked:
            raise ValueError(
                f"hosts names {host!r} twice (SPDK answers that with 'Internal error')"
            )
        checked.append(host)
    return checked


def _find(target: Target, nqn: str) -> Subsystem | None:
    for subsystem in list_subsystems(target):
        if subsystem.nqn == nqn:
            return subsystem
    return None


def _subsystem(target: Target, nqn: str) -> Subsystem:
    found = _find(target, nqn)
    if found is None:
        raise LookupError(f"the target has no NVMe-oF subsystem {nqn!r}")
    return found


def _transport_options(target: Target) -> dict[str, Any] | None:
    for transport in target.rpc("nvmf_get_transports"):
        if str(transport.get("trtype", "")).upper() == "TCP":
            return dict(transport)
    return None


def create_transport(target: Target, *, exist_ok: bool = True, **options: Any) -> bool:
    """Create the TCP transport (once per target); False if it already existed.

    `options` are nvmf_create_transport's (io_unit_size, max_queue_depth, ...;
    see TCP_OPTIONS). A name SPDK does not know is refused (ValueError), as is
    a value SPDK refuses. When the transport exists: FileExistsError if not
    `exist_ok`, and ValueError when it has other values for the options given
    (options apply only when the transport is created).
    """
    check_target(target)
    check_bool("exist_ok", exist_ok)
    unknown = sorted(set(options) - TCP_OPTIONS)
    if unknown:
        raise ValueError(
            f"unknown TCP transport option {', '.join(unknown)} (SPDK would ignore it); "
            f"known: {', '.join(sorted(TCP_OPTIONS))}"
        )
    existing = _transport_options(target)
    if existing is not None:
        if not exist_ok:
            raise FileExistsError("the target already has a TCP transport")
        differ = {
            key: existing[key]
            for key, value in options.items()
            if key in existing and existing[key] != value
        }
        if differ:
            raise ValueError(
                f"the target's TCP transport already exists with "
                f"{', '.join(f'{k}={v!r}' for k, v in differ.items())}: options apply only "
                "when it is created"
            )
        return False
    try:
        target.rpc("nvmf_create_transport", {"trtype": "TCP", **options})
    except RpcError as exc:
        if options and exc.code == -32602:  # Invalid parameters: a value it cannot decode
            raise ValueError(
                f"SPDK refused the TCP transport options {options!r}: {exc.message}"
            ) from exc
        raise
    return True


def create_subsystem(
    target: Target,
    nqn: str,
    *,
    serial: str | None = None,
    model: str | None = None,
    hosts: Iterable[str] | None = None,
    max_namespaces: int | None = None,
) -> None:
    """A subsystem `nqn`; `hosts` lists the host NQNs it admits (None: any host).

    `serial` defaults to default_serial(nqn). FileExistsError when the
    subsystem exists; nothing is left behind when a host cannot be added.
    """
    check_target(target)
    _check_nqn(nqn)
    if nqn == DISCOVERY_NQN:
        raise ValueError("the discovery NQN is the target's own: choose another nqn")
    serial = default_serial(nqn) if serial is None else _check_printable("serial", serial, 20)
    host_list = _check_hosts(hosts)
    params: dict[str, Any] = {
        "nqn": nqn,
        "serial_number": serial,
        "allow_any_host": host_list is None,
    }
    if model is not None:
        params["model_number"] = _check_printable("model", model, MAX_MODEL)
    if max_namespaces is not None:
        params["max_namespaces"] = check_int("max_namespaces", max_namespaces, 1, 1 << 16)
    if _find(target, nqn) is not None:
        raise FileExistsError(f"the target already has a subsystem {nqn!r}")
    try:
        target.rpc("nvmf_create_subsystem", params)
    except RpcError as exc:
        if _find(target, nqn) is not None:
            raise FileExistsError(f"the target already has a subsystem {nqn!r}") from exc
        raise
    try:
        for host in host_list or []:
            allow_host(target, nqn, host)
    except BaseException:
        target.rpc("nvmf_delete_subsystem", {"nqn": nqn})
        raise


def allow_host(target: Target, nqn: str, host: str) -> None:
    """Admit the host NQN `host` to subsystem `nqn`.

    LookupError when there is no such subsystem, FileExistsError when the host
    is already admitted (SPDK answers both with an unexplained error).
    A subsystem created with hosts=None admits any host whatever this adds.
    """
    check_target(target)
    _check_nqn(nqn)
    _check_nqn(host, "host")
    if host in _subsystem(target, nqn).hosts:
        raise FileExistsError(f"subsystem {nqn!r} already admits host {host!r}")
    try:
        target.rpc("nvmf_subsystem_add_host", {"nqn": nqn, "host": host})
    except RpcError as exc:
        if host in _subsystem(target, nqn).hosts:
            raise FileExistsError(f"subsystem {nqn!r} already admits host {host!r}") from exc
        if exc.message == "Internal error":
            # spdk_nvmf_subsystem_add_host_ext: -EINVAL for a host already there
            # (ruled out above) or an NQN that nvmf_nqn_is_valid() refuses.
            raise ValueError(f"SPDK refuses host {host!r} as an invalid NQN") from exc
        raise


def _bdev_claim(target: Target, bdev: str) -> str | None:
    """The claim type of a bdev that is claimed (e.g. "exclusive_write"), else None."""
    try:
        (entry,) = target.rpc("bdev_get_bdevs", {"name": bdev})
    except (RpcError, ValueError):
        return None
    if not entry.get("claimed"):
        return None
    return str(entry.get("claim_type", "claimed"))


def add_namespace(target: Target, nqn: str, bdev: str, *, nsid: int | None = None) -> int:
    """Serve `bdev` as a namespace of `nqn`; returns its namespace ID.

    LookupError when there is no such subsystem; DeviceNotFoundError when
    there is no such bdev; FileExistsError when `nsid` is taken or the bdev
    is already a namespace; ValueError when the subsystem is full or `nsid`
    is past its max_namespaces; OSError (EBUSY) when another module claimed
    the bdev.
    """
    check_target(target)
    _check_nqn(nqn)
    check_name(bdev, "bdev")
    namespace: dict[str, Any] = {"bdev_name": bdev}
    if nsid is not None:
        namespace["nsid"] = check_int("nsid", nsid, 1, 0xFFFFFFFE)
    subsystem = _subsystem(target, nqn)
    bdev_info(target, bdev)
    if nsid is not None and subsystem.max_namespaces and nsid > subsystem.max_namespaces:
        raise ValueError(
            f"nsid {nsid} is past the {subsystem.max_namespaces} namespaces {nqn!r} may have"
        )
    if nsid is not None and nsid in subsystem.namespaces:
        raise FileExistsError(
            f"namespace {nsid} of {nqn!r} is taken (by bdev {subsystem.namespaces[nsid]!r})"
        )
    try:
        result: int = target.rpc("nvmf_subsystem_add_ns", {"nqn": nqn, "namespace": namespace})
    except RpcError as exc:
        raise _namespace_refused(target, exc, nqn, bdev) from exc
    return result


def _namespace_refused(target: Target, exc: RpcError, nqn: str, bdev: str) -> Exception:
    for subsystem in list_subsystems(target):
        for number, served in subsystem.namespaces.items():
            if served == bdev:
                return FileExistsError(
                    f"bdev {bdev!r} is already namespace {number} of {subsystem.nqn!r}"
                )
    found = _find(target, nqn)
    if found is None:
        return LookupError(f"the target has no NVMe-oF subsystem {nqn!r}")
    if found.max_namespaces and len(found.namespaces) >= found.max_namespaces:
        return ValueError(f"subsystem {nqn!r} has its maximum of {found.max_namespaces} namespaces")
    claim = _bdev_claim(target, bdev)
    if claim is not None:
        return OSError(
            errno.EBUSY,
            f"bdev {bdev!r} is claimed by another module ({claim}): it cannot be a namespace",
        )
    return exc


def _bind_problem(address: str, port: int) -> OSError | None:
    """Whether this machine would let a program listen on `address`:`port`, tried as
    SPDK's sockets bind (SO_REUSEADDR; IPv6 only for IPv6): the OSError if not."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            sock.bind((address, port))
        except OSError as exc:
            return exc
    return None


def _overlaps(a: str, b: str) -> bool:
    """Whether listening on `a` and on `b` (same port) would collide."""
    try:
        first, second = ipaddress.ip_address(a), ipaddress.ip_address(b)
    except ValueError:
        return False
    if first.version != second.version:
        return False
    return first == second or first.is_unspecified or second.is_unspecified


def _listener_refused(
    target: Target, exc: RpcError, nqn: str, address: str, port: int
) -> Exception:
    """Why SPDK refused a listener ("Invalid parameters" whatever the cause)."""
    where = _where(address, port)
    subsystem = _find(target, nqn)
    if subsystem is None:
        return LookupError(f"the target has no NVMe-oF subsystem {nqn!r}")
    if any(
        trtype.upper() == "TCP" and addr == address and p == port
        for trtype, addr, p in subsystem.listeners
    ):
        return FileExistsError(f"subsystem {nqn!r} already listens on {where}")
    if _transport_options(target) is None:
        return LookupError("the target has no TCP transport: call create_transport() first")
    for other in list_subsystems(target):
        for trtype, addr, p in other.listeners:
            if trtype.upper() == "TCP" and p == port and _overlaps(addr, address):
                return OSError(
                    errno.EADDRINUSE,
                    f"{where} collides with the target's own listener on "
                    f"{_where(addr, p)} (subsystem {other.nqn!r})",
                )
    problem = _bind_problem(address, port)
    if problem is not None and problem.errno == errno.EADDRINUSE:
        return OSError(
            errno.EADDRINUSE,
            f"address {address} port {port} is in use by another program: the target "
            f"cannot listen on {where}",
        )
    if problem is not None and problem.errno == errno.EADDRNOTAVAIL:
        return OSError(
            errno.EADDRNOTAVAIL,
            f"{address} is not an address of this machine: the target cannot listen on {where}",
        )
    return exc


def add_listener(target: Target, nqn: str, address: str, port: int) -> None:
    """Listen for `nqn` on TCP `address`:`port` (the transport must exist).

    Errors that say why SPDK refused: LookupError (no such subsystem, or no
    TCP transport), FileExistsError (the subsystem listens there already),
    OSError EADDRINUSE (another program, or another listener of the target,
    holds the address and port), OSError EADDRNOTAVAIL (not this machine's
    address).
    """
    check_target(target)
    _check_nqn(nqn)
    traddr, adrfam = _check_address(address)
    port = _check_port(port)
    params = {
        "nqn": nqn,
        "listen_address": {
            "trtype": "TCP",
            "adrfam": adrfam,
            "traddr": traddr,
            "trsvcid": str(port),
        },
    }
    try:
        target.rpc("nvmf_subsystem_add_listener", params)
    except RpcError as exc:
        raise _listener_refused(target, exc, nqn, traddr, port) from exc


def add_discovery_listener(target: Target, address: str, port: int) -> None:
    """Answer discovery (nvme discover) on TCP `address`:`port`."""
    add_listener(target, DISCOVERY_NQN, address, port)


def _from_rpc(entry: dict[str, Any]) -> Subsystem:
    listeners = tuple(
        (a.get("trtype", ""), a.get("traddr", ""), int(a.get("trsvcid", 0) or 0))
        for a in entry.get("listen_addresses", [])
    )
    return Subsystem(
        nqn=entry["nqn"],
        serial=entry.get("serial_number", ""),
        allow_any_host=bool(entry.get("allow_any_host")),
        hosts=tuple(h["nqn"] for h in entry.get("hosts", [])),
        namespaces={ns["nsid"]: ns["bdev_name"] for ns in entry.get("namespaces", [])},
        listeners=listeners,
        model=entry.get("model_number", ""),
        max_namespaces=int(entry.get("max_namespaces", 0) or 0),
    )


def list_subsystems(target: Target) -> list[Subsystem]:
    """Every subsystem of the target, the discovery subsystem included."""
    return [_from_rpc(e) for e in check_target(target).rpc("nvmf_get_subsystems")]


def delete_subsystem(target: Target, nqn: str) -> None:
    """Delete subsystem `nqn`: its connections drop, its bdevs stay.

    LookupError when there is no such subsystem.
    """
    check_target(target)
    _check_nqn(nqn)
    if nqn == DISCOVERY_NQN:
        raise ValueError("the discovery subsystem is the target's own: it cannot be deleted")
    try:
        target.rpc("nvmf_delete_subsystem", {"nqn": nqn})
    except RpcError as exc:
        if _find(target, nqn) is None:
            raise LookupError(f"the target has no NVMe-oF subsystem {nqn!r}") from exc
        raise


def serve(
    target: Target,
    nqn: str,
    bdevs: Sequence[str],
    *,
    address: str = "127.0.0.1",
    port: int = 4420,
    hosts: Iterable[str] | None = None,
    serial: str | None = None,
    discovery: bool = False,
) -> Subsystem:
    """Transport, subsystem, one namespace per bdev (nsid 1, 2, ...), a listener.

    Everything is checked before anything is created (the bdevs exist, are
    distinct, the subsystem does not exist yet); when a later step fails, the
    subsystem goes again. `serial` defaults to default_serial(nqn); with
    `discovery`, the target also answers discovery on the address (once per
    address and port).
    """
    check_target(target)
    _check_nqn(nqn)
    if nqn == DISCOVERY_NQN:
        raise ValueError("the discovery NQN is the target's own: choose another nqn")
    if isinstance(bdevs, str) or not isinstance(bdevs, Sequence) or not bdevs:
        raise TypeError(f"bdevs must be a non-empty sequence of bdev names, not {bdevs!r:.80}")
    for bdev in bdevs:
        check_name(bdev, "a bdev name in bdevs")
    if len(set(bdevs)) != len(bdevs):
        raise ValueError(f"bdevs names a bdev twice: {list(bdevs)!r}")
    traddr, _ = _check_address(address)
    port = _check_port(port)
    host_list = _check_hosts(hosts)
    if serial is not None:
        _check_printable("serial", serial, MAX_SERIAL)
    check_bool("discovery", discovery)
    for bdev in bdevs:
        bdev_info(target, bdev)
    if _find(target, nqn) is not None:
        raise FileExistsError(f"the target already has a subsystem {nqn!r}")
    create_transport(target)
    create_subsystem(target, nqn, serial=serial, hosts=host_list)
    try:
        for nsid, bdev in enumerate(bdevs, 1):
            add_namespace(target, nqn, bdev, nsid=nsid)
        add_listener(target, nqn, traddr, port)
        if discovery:
            listeners = _subsystem(target, DISCOVERY_NQN).listeners
            if not any(a == traddr and p == port for _, a, p in listeners):
                add_discovery_listener(target, traddr, port)
    except BaseException:
        target.rpc("nvmf_delete_subsystem", {"nqn": nqn})
        raise
    return _subsystem(target, nqn)


# ------------------------------------------------------------------ initiator


def _handshake(address: str, port: int, seconds: float) -> None:
    """Connect to `address`:`port` and exchange NVMe/TCP's ICReq/ICResp, within `seconds`.

    Returns when the peer answers as an NVMe/TCP target; otherwise raises an
    OSError naming the address and port: ConnectionRefusedError when nothing
    listens, TimeoutError when the peer does not answer, OSError (EPROTO)
    when it answers with something else or hangs up.
    """
    where = _where(address, port)
    deadline = time.monotonic() + seconds
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(seconds)
        try:
            sock.connect((address, port))
        except ConnectionRefusedError:
            raise ConnectionRefusedError(
                errno.ECONNREFUSED,
                f"nothing listens on {where} (connection refused): no NVMe/TCP target there",
            ) from None
        except TimeoutError:
            raise TimeoutError(
                errno.ETIMEDOUT, f"{where} did not take a TCP connection within {seconds:g} s"
            ) from None
        icreq = _PDU_HEADER.pack(_ICREQ, 0, _IC_LENGTH, 0, _IC_LENGTH).ljust(_IC_LENGTH, b"\0")
        try:
            sock.sendall(icreq)
            header = receive_exactly(sock, _PDU_HEADER.size, deadline)
            kind, _, hlen, _, plen = _PDU_HEADER.unpack(header)
            if (kind, hlen, plen) != (_ICRESP, _IC_LENGTH, _IC_LENGTH):
                raise OSError(
                    errno.EPROTO,
                    f"the program listening on {where} does not speak NVMe/TCP: its answer to "
                    f"an ICReq is not an ICResp (PDU type {kind:#x}, hlen {hlen}, plen {plen})",
                )
            receive_exactly(sock, _IC_LENGTH - _PDU_HEADER.size, deadline)
        except TimeoutError:
            raise TimeoutError(
                errno.ETIMEDOUT,
                f"the program listening on {where} did not answer an NVMe/TCP ICReq within "
                f"{seconds:g} s: it does not speak NVMe/TCP",
            ) from None
        except (ConnectionResetError, BrokenPipeError):
            raise OSError(
                errno.EPROTO,
                f"the program listening on {where} hung up on an NVMe/TCP ICReq: it does not "
                "speak NVMe/TCP",
            ) from None


def _controllers(target: Target) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = target.rpc("bdev_nvme_get_controllers")
    return result


def _holder(target: Target, address: str, port: int, nqn: str) -> str | None:
    """The NVMe controller of `target` already connected to `nqn` at `address`:`port`."""
    for controller in _controllers(target):
        for path in controller.get("ctrlrs", []):
            trid = path.get("trid", {})
            if (
                trid.get("subnqn") == nqn
                and trid.get("traddr") == address
                and str(trid.get("trsvcid")) == str(port)
            ):
                return str(controller.get("name"))
    return None


def _attach_refused(
    target: Target,
    exc: RpcError,
    name: str,
    address: str,
    port: int,
    nqn: str,
    hostnqn: str | None,
    seconds: float,
) -> Exception:
    """Why bdev_nvme_attach_controller failed ("Input/output error" for most causes)."""
    where = _where(address, port)
    if rpc_meaning(exc) == "exists":
        holder = _holder(target, address, port, nqn)
        if holder is not None:
            return FileExistsError(
                f"NVMe controller {holder!r} is already connected to {nqn} at {where}"
            )
        return FileExistsError(f"an NVMe controller named {name!r} already exists")
    if -exc.code == errno.EIO or "input/output" in exc.message.lower():
        try:
            _handshake(address, port, seconds)
        except OSError as problem:
            return problem
        host = f"host {hostnqn!r}" if hostnqn else "this host (SPDK's default host NQN)"
        return ConnectionError(
            f"the NVMe/TCP target at {where} did not let {host} connect to {nqn}: it has no "
            "such subsystem, or does not admit that host"
        )
    return RpcError(exc.method, exc.code, f"{exc.message} ({nqn} at {where})")


def _identify(target: Target, controller: str, cns: int, nsid: int = 0) -> bytes:
    """An Identify data structure (4 KiB) read through the controller `controller`."""
    command = bytearray(64)
    command[0] = _IDENTIFY
    struct.pack_into("<I", command, 4, nsid)
    struct.pack_into("<I", command, 40, cns)
    reply = target.rpc(
        "bdev_nvme_send_cmd",
        {
            "name": controller,
            "cmd_type": "admin",
            "data_direction": "c2h",
            "cmdbuf": base64.urlsafe_b64encode(bytes(command)).decode(),
            "data_len": 4096,
            "timeout_ms": 5000,
        },
    )
    return base64.urlsafe_b64decode(reply["data"])


def _namespace_uuid(target: Target, controller: str, nsid: int) -> str | None:
    data = _identify(target, controller, _CNS_NS_IDS, nsid)
    offset = 0
    while offset + 4 <= len(data):
        kind, length = data[offset], data[offset + 1]
        if kind == 0 or length == 0:
            return None
        if kind == _NIDT_UUID and length == 16:
            raw = data[offset + 4 : offset + 20].hex()
            return f"{raw[:8]}-{raw[8:12]}-{raw[12:16]}-{raw[16:20]}-{raw[20:]}"
        offset += 4 + length
    return None


def _unbuilt_namespaces(target: Target, name: str, where: str, nqn: str) -> Exception | None:
    """After an attach that made no bdev: the error to raise, if the controller has
    namespaces (SPDK made no bdev for them), else None (an empty subsystem)."""
    try:
        data = _identify(target, name, _CNS_ACTIVE_NSIDS)
    except (RpcError, KeyError, ValueError, TypeError):
        return None
    nsids = [n for n in struct.unpack("<1024I", data[:4096]) if n]
    if not nsids:
        return None
    for nsid in nsids[:16]:
        try:
            uuid = _namespace_uuid(target, name, nsid)
        except (RpcError, KeyError, ValueError, TypeError):
            uuid = None
        if uuid is None:
            continue
        try:
            holder = bdev_info(target, uuid).name
        except DeviceNotFoundError:
            continue
        return FileExistsError(
            f"namespace {nsid} of {nqn} at {where} is already a bdev here: {holder!r} has "
            f"its UUID {uuid}, so SPDK made no bdev for it. Detach the controller that holds "
            "it (or delete that bdev) first"
        )
    return FileExistsError(
        f"{nqn} at {where} has namespaces {nsids[:16]} but SPDK made no bdev for them (one "
        "with the same UUID exists here already?)"
    )


@captured
def attach(
    target: Target,
    name: str,
    address: str,
    port: int,
    nqn: str,
    *,
    hostnqn: str | None = None,
    ctrlr_loss_timeout_sec: int = 60,
    reconnect_delay_sec: int = 1,
    fast_io_fail_timeout_sec: int = 2,
) -> list[str]:
    """Connect to subsystem `nqn` at `address`:`port`; returns the bdevs (name + 'n<nsid>').

    ctrlr_loss_timeout_sec: -1 retries for ever, 0 gives up at once. When not
    0, reconnect_delay_sec must be from 1 to it, and fast_io_fail_timeout_sec
    0 (I/O waits until the controller is given up) or from reconnect_delay_sec
    to ctrlr_loss_timeout_sec.

    When SPDK cannot connect, the error says why: ConnectionRefusedError
    (nothing listens at the address and port), TimeoutError or OSError
    (EPROTO) (the peer does not speak NVMe/TCP), ConnectionError (the target
    has no such subsystem or does not admit the host), FileExistsError (the
    name is taken, or a controller here is already connected to that
    subsystem there, or the namespaces are already bdevs here: nothing is left
    attached then). An empty list only for a subsystem without namespaces.
    A peer that does not answer is given up within SPDK's own bound (about 10 s)
    plus a few seconds. The exception's `log` holds what SPDK logged meanwhile
    (for a Runtime).
    """
    check_target(target)
    check_name(name, "name (of the controller)")
    traddr, adrfam = _check_address(address)
    port = _check_port(port)
    _check_nqn(nqn)
    loss, delay, fail = check_reconnect(
        ctrlr_loss_timeout_sec, reconnect_delay_sec, fast_io_fail_timeout_sec
    )
    params: dict[str, Any] = {
        "name": name,
        "trtype": "tcp",
        "adrfam": adrfam,
        "traddr": traddr,
        "trsvcid": str(port),
        "subnqn": nqn,
        "ctrlr_loss_timeout_sec": loss,
        "reconnect_delay_sec": delay,
        "fast_io_fail_timeout_sec": fail,
    }
    if hostnqn is not None:
        params["hostnqn"] = _check_nqn(hostnqn, "hostnqn")
    if any(controller.get("name") == name for controller in _controllers(target)):
        raise FileExistsError(f"an NVMe controller named {name!r} already exists")
    try:
        result: list[str] = target.rpc("bdev_nvme_attach_controller", params)
    except RpcError as exc:
        raise _attach_refused(target, exc, name, traddr, port, nqn, hostnqn, PROBE_SECONDS) from exc
    if not result:
        problem = _unbuilt_namespaces(target, name, _where(traddr, port), nqn)
        if problem is not None:
            target.rpc("bdev_nvme_detach_controller", {"name": name})
            raise problem
    return list(result)


def detach(target: Target, name: str) -> None:
    """Disconnect the NVMe controller `name`; its bdevs go away."""
    check_target(target)
    check_name(name, "name (of the controller)")
    try:
        target.rpc("bdev_nvme_detach_controller", {"name": name})
    except RpcError as exc:
        if rpc_meaning(exc) == "no_device":
            raise DeviceNotFoundError(f"no NVMe controller named {name!r}") from None
        raise
