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

Every helper takes a Target (Runtime or SpdkProcess) and goes through RPC.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ._checks import (
    DISCOVERY_NQN,
    NQN_MAX,
    check_int,
    check_ip_address,
    check_name,
    check_nqn,
    check_port,
)
from .errors import DeviceNotFoundError, RpcError, rpc_meaning
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
    "delete_subsystem",
    "detach",
    "list_subsystems",
    "serve",
]

MAX_NQN = NQN_MAX
MAX_SERIAL = 20
_PRINTABLE = re.compile(r"[\x20-\x7e]+")


@dataclass(frozen=True)
class Subsystem:
    """An NVMe-oF subsystem as the target reports it."""

    nqn: str
    serial: str
    allow_any_host: bool
    hosts: tuple[str, ...]
    namespaces: dict[int, str]  # nsid -> bdev name
    listeners: tuple[tuple[str, str, int], ...]  # (trtype, address, port)


def _check_nqn(nqn: Any, what: str = "nqn") -> str:
    return check_nqn(what, nqn)


def _check_address(address: Any) -> tuple[str, str]:
    """(address, adrfam) for an IPv4 or IPv6 literal."""
    return check_ip_address("address", address)


def _check_port(port: Any) -> int:
    return check_port("port", port)


def create_transport(target: Target, *, exist_ok: bool = True, **options: Any) -> bool:
    """Create the TCP transport (once per target); False if it already existed.

    `options` are nvmf_create_transport's (io_unit_size, max_queue_depth, ...).
    """
    check_target(target)
    for key in options:
        check_name(key, "a transport option")
    if any(t.get("trtype", "").upper() == "TCP" for t in target.rpc("nvmf_get_transports")):
        if not exist_ok:
            raise FileExistsError("the target already has a TCP transport")
        return False
    target.rpc("nvmf_create_transport", {"trtype": "TCP", **options})
    return True


def create_subsystem(
    target: Target,
    nqn: str,
    *,
    serial: str = "PYSPDK00000000000001",
    model: str | None = None,
    hosts: Iterable[str] | None = None,
    max_namespaces: int | None = None,
) -> None:
    """A subsystem `nqn`; `hosts` lists the host NQNs it admits (None: any host)."""
    check_target(target)
    _check_nqn(nqn)
    if nqn == DISCOVERY_NQN:
        raise ValueError("the discovery NQN is the target's own: choose another nqn")
    if not isinstance(serial, str) or not _PRINTABLE.fullmatch(serial) or len(serial) > 20:
        raise ValueError(f"serial must be 1 to {MAX_SERIAL} printable ASCII chars, not {serial!r}")
    host_list = None if hosts is None else [_check_nqn(h, "a host NQN") for h in hosts]
    params: dict[str, Any] = {
        "nqn": nqn,
        "serial_number": serial,
        "allow_any_host": host_list is None,
    }
    if model is not None:
        if not isinstance(model, str) or not _PRINTABLE.fullmatch(model) or len(model) > 40:
            raise ValueError(f"model must be 1 to 40 printable ASCII chars, not {model!r}")
        params["model_number"] = model
    if max_namespaces is not None:
        params["max_namespaces"] = check_int("max_namespaces", max_namespaces, 1, 1 << 16)
    target.rpc("nvmf_create_subsystem", params)
    try:
        for host in host_list or []:
            allow_host(target, nqn, host)
    except BaseException:
        target.rpc("nvmf_delete_subsystem", {"nqn": nqn})
        raise


def allow_host(target: Target, nqn: str, host: str) -> None:
    """Admit the host NQN `host` to subsystem `nqn`."""
    check_target(target)
    _check_nqn(nqn)
    _check_nqn(host, "host")
    target.rpc("nvmf_subsystem_add_host", {"nqn": nqn, "host": host})


def add_namespace(target: Target, nqn: str, bdev: str, *, nsid: int | None = None) -> int:
    """Serve `bdev` as a namespace of `nqn`; returns its namespace ID."""
    check_target(target)
    _check_nqn(nqn)
    check_name(bdev)
    namespace: dict[str, Any] = {"bdev_name": bdev}
    if nsid is not None:
        namespace["nsid"] = check_int("nsid", nsid, 1, 0xFFFFFFFE)
    result: int = target.rpc("nvmf_subsystem_add_ns", {"nqn": nqn, "namespace": namespace})
    return result


def add_listener(target: Target, nqn: str, address: str, port: int) -> None:
    """Listen for `nqn` on TCP `address`:`port` (the transport must exist)."""
    check_target(target)
    _check_nqn(nqn)
    traddr, adrfam = _check_address(address)
    params = {
        "nqn": nqn,
        "listen_address": {
            "trtype": "TCP",
            "adrfam": adrfam,
            "traddr": traddr,
            "trsvcid": str(_check_port(port)),
        },
    }
    target.rpc("nvmf_subsystem_add_listener", params)


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
    )


def list_subsystems(target: Target) -> list[Subsystem]:
    """Every subsystem of the target, the discovery subsystem included."""
    return [_from_rpc(e) for e in check_target(target).rpc("nvmf_get_subsystems")]


def delete_subsystem(target: Target, nqn: str) -> None:
    """Delete subsystem `nqn`: its connections drop, its bdevs stay."""
    check_target(target)
    _check_nqn(nqn)
    target.rpc("nvmf_delete_subsystem", {"nqn": nqn})


def serve(
    target: Target,
    nqn: str,
    bdevs: Sequence[str],
    *,
    address: str = "127.0.0.1",
    port: int = 4420,
    hosts: Iterable[str] | None = None,
    serial: str = "PYSPDK00000000000001",
    discovery: bool = False,
) -> Subsystem:
    """Transport, subsystem, one namespace per bdev (nsid 1, 2, ...), a listener."""
    check_target(target)
    _check_nqn(nqn)
    if isinstance(bdevs, str) or not isinstance(bdevs, Sequence) or not bdevs:
        raise TypeError("bdevs must be a non-empty sequence of bdev names")
    for bdev in bdevs:
        check_name(bdev)
    _check_address(address)
    _check_port(port)
    host_list = None if hosts is None else list(hosts)
    create_transport(target)
    create_subsystem(target, nqn, serial=serial, hosts=host_list)
    try:
        for nsid, bdev in enumerate(bdevs, 1):
            add_namespace(target, nqn, bdev, nsid=nsid)
        add_listener(target, nqn, address, port)
        if discovery:
            add_discovery_listener(target, address, port)
    except BaseException:
        target.rpc("nvmf_delete_subsystem", {"nqn": nqn})
        raise
    (entry,) = [s for s in list_subsystems(target) if s.nqn == nqn]
    return entry


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
    """
    check_target(target)
    check_name(name, "a controller name")
    traddr, adrfam = _check_address(address)
    _check_port(port)
    _check_nqn(nqn)
    loss = check_int("ctrlr_loss_timeout_sec", ctrlr_loss_timeout_sec, -1, (1 << 31) - 1)
    delay = check_int("reconnect_delay_sec", reconnect_delay_sec, 0, (1 << 32) - 1)
    fail = check_int("fast_io_fail_timeout_sec", fast_io_fail_timeout_sec, 0, (1 << 32) - 1)
    if loss == 0:
        if delay or fail:
            raise ValueError(
                "reconnect_delay_sec and fast_io_fail_timeout_sec must be 0 when "
                "ctrlr_loss_timeout_sec is 0"
            )
    else:
        if delay == 0:
            raise ValueError(
                "reconnect_delay_sec must be at least 1 when the controller may reconnect"
            )
        if loss > 0 and delay > loss:
            raise ValueError("reconnect_delay_sec must not exceed ctrlr_loss_timeout_sec")
        if fail and fail < delay:
            raise ValueError("fast_io_fail_timeout_sec must not be less than reconnect_delay_sec")
        if fail and loss > 0 and fail > loss:
            raise ValueError("fast_io_fail_timeout_sec must not exceed ctrlr_loss_timeout_sec")
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
    result: list[str] = target.rpc("bdev_nvme_attach_controller", params)
    return list(result)


def detach(target: Target, name: str) -> None:
    """Disconnect the NVMe controller `name`; its bdevs go away."""
    check_target(target)
    check_name(name, "a controller name")
    try:
        target.rpc("bdev_nvme_detach_controller", {"name": name})
    except RpcError as exc:
        if rpc_meaning(exc) == "no_device":
            raise DeviceNotFoundError(f"no NVMe controller named {name!r}") from None
        raise
