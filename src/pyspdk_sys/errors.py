"""Exceptions raised by the Python layer over SPDK."""

from __future__ import annotations

import errno as _errno
import os as _os
from typing import Any

__all__ = [
    "DeviceBusyError",
    "DeviceNotFoundError",
    "HugepagesError",
    "IoError",
    "NvmeError",
    "ProcessError",
    "ProcessExitedError",
    "ProcessStartError",
    "RpcError",
    "RuntimeStateError",
    "SpdkError",
    "StartError",
    "UblkIdInUseError",
    "UblkUnavailableError",
]


class SpdkError(Exception):
    """Base class of every error this package raises about SPDK."""


class RuntimeStateError(SpdkError, RuntimeError):
    """The call is not allowed in the runtime's current state.

    Raised instead of making the C call that SPDK would answer with abort():
    sending work to a stopped runtime, a second shutdown, a blocking wait on
    the SPDK thread itself, an object used after close or from the wrong thread.
    """


class StartError(SpdkError):
    """SPDK did not start; the message says why and where to look."""


class RpcError(SpdkError):
    """A JSON-RPC method answered with an error object."""

    def __init__(self, method: str, code: int, message: str) -> None:
        super().__init__(f"{method}: {message} (JSON-RPC error {code})")
        self.method = method
        self.code = code
        self.message = message


class DeviceNotFoundError(SpdkError, LookupError):
    """No block device has that name."""


class DeviceBusyError(SpdkError, OSError):
    """A device is in use, so it is not taken from its users; `users` names each use.

    errno is EBUSY. Raised, for instance, when an NVMe controller whose
    namespaces are mounted would be moved to a userspace driver.
    """

    def __init__(self, message: str, *, users: tuple[str, ...]) -> None:
        super().__init__(_errno.EBUSY, message)
        self.users = users


class IoError(SpdkError, OSError):
    """An I/O did not succeed; the device stays usable.

    `errno` is EIO for a failed I/O (with the NVMe status SPDK reports,
    `nvme_sct`/`nvme_sc`), ECANCELED when the device closed before the I/O
    reached SPDK or while SPDK held it (and aborted it), ENODEV when the device
    was removed. For read_many and write_many, `failed` lists the index of every
    I/O that failed.
    """

    def __init__(
        self,
        errno: int,
        message: str,
        *,
        device: str,
        op: str,
        offset: int,
        length: int,
        nvme_sct: int = 0,
        nvme_sc: int = 0,
    ) -> None:
        super().__init__(errno, message)
        self.device = device
        self.op = op
        self.offset = offset
        self.length = length
        self.nvme_sct = nvme_sct
        self.nvme_sc = nvme_sc
        self.failed: list[int] = []


# ------------------------------------------------------------------ NVMe status
#
# Names of NVMe completion statuses, from the NVMe Base and NVM Command Set
# specifications: status code type (SCT) and status code (SC).

NVME_STATUS_TYPES = {
    0: "Generic Command Status",
    1: "Command Specific Status",
    2: "Media and Data Integrity Error",
    3: "Path Related Status",
    7: "Vendor Specific",
}
_NVME_STATUS_NAMES: dict[tuple[int, int], str] = {
    (0, 0x00): "Successful Completion",
    (0, 0x01): "Invalid Command Opcode",
    (0, 0x02): "Invalid Field in Command",
    (0, 0x03): "Command ID Conflict",
    (0, 0x04): "Data Transfer Error",
    (0, 0x05): "Commands Aborted due to Power Loss Notification",
    (0, 0x06): "Internal Error",
    (0, 0x07): "Command Abort Requested",
    (0, 0x08): "Command Aborted due to SQ Deletion",
    (0, 0x09): "Command Aborted due to Failed Fused Command",
    (0, 0x0A): "Command Aborted due to Missing Fused Command",
    (0, 0x0B): "Invalid Namespace or Format",
    (0, 0x0C): "Command Sequence Error",
    (0, 0x0D): "Invalid SGL Segment Descriptor",
    (0, 0x0E): "Invalid Number of SGL Descriptors",
    (0, 0x0F): "Data SGL Length Invalid",
    (0, 0x10): "Metadata SGL Length Invalid",
    (0, 0x11): "SGL Descriptor Type Invalid",
    (0, 0x12): "Invalid Use of Controller Memory Buffer",
    (0, 0x13): "PRP Offset Invalid",
    (0, 0x14): "Atomic Write Unit Exceeded",
    (0, 0x15): "Operation Denied",
    (0, 0x16): "SGL Offset Invalid",
    (0, 0x18): "Host Identifier Inconsistent Format",
    (0, 0x19): "Keep Alive Timer Expired",
    (0, 0x1A): "Keep Alive Timeout Invalid",
    (0, 0x1B): "Command Aborted due to Preempt and Abort",
    (0, 0x1C): "Sanitize Failed",
    (0, 0x1D): "Sanitize In Progress",
    (0, 0x1E): "SGL Data Block Granularity Invalid",
    (0, 0x1F): "Command Not Supported for Queue in CMB",
    (0, 0x20): "Namespace is Write Protected",
    (0, 0x21): "Command Interrupted",
    (0, 0x22): "Transient Transport Error",
    (0, 0x23): "Command Prohibited by Command and Feature Lockdown",
    (0, 0x24): "Admin Command Media Not Ready",
    (0, 0x80): "LBA Out of Range",
    (0, 0x81): "Capacity Exceeded",
    (0, 0x82): "Namespace Not Ready",
    (0, 0x83): "Reservation Conflict",
    (0, 0x84): "Format In Progress",
    (2, 0x80): "Write Fault",
    (2, 0x81): "Unrecovered Read Error",
    (2, 0x82): "End-to-end Guard Check Error",
    (2, 0x83): "End-to-end Application Tag Check Error",
    (2, 0x84): "End-to-end Reference Tag Check Error",
    (2, 0x85): "Compare Failure",
    (2, 0x86): "Access Denied",
    (2, 0x87): "Deallocated or Unwritten Logical Block",
    (3, 0x00): "Internal Path Error",
    (3, 0x01): "Asymmetric Access Persistent Loss",
    (3, 0x02): "Asymmetric Access Inaccessible",
    (3, 0x03): "Asymmetric Access Transition",
    (3, 0x60): "Controller Pathing Error",
    (3, 0x70): "Host Pathing Error",
    (3, 0x71): "Command Aborted By Host",
}


def _nvme_status_name(sct: int, sc: int) -> str:
    """A readable name for NVMe status (`sct`, `sc`); one that says what it is when
    the code has no name here (command-specific, vendor-specific, reserved)."""
    if not (0 <= sct <= 7 and 0 <= sc <= 0xFF):
        raise ValueError(f"an NVMe status is SCT 0 to 7 and SC 0 to 0xff, not {sct}/{sc}")
    name = _NVME_STATUS_NAMES.get((sct, sc))
    if name is not None:
        return name
    kind = NVME_STATUS_TYPES.get(sct, "Reserved Status Code Type")
    return f"{kind} {sc:#04x}"


class NvmeError(IoError):
    """An NVMe command completed with an error status; errno is EIO.

    `sct` (status code type) and `sc` (status code) say what went wrong,
    `name` says it in words; `dnr` (do not retry: the same command would
    fail again) and `more` (the controller has more in its Error Information
    log page) are the status's two flags, `crd` its command retry delay index.
    A command sent through an NVMe bdev (BlockDevice.nvme_admin/nvme_io)
    has `dnr` and `more` None: SPDK's bdev layer does not carry the flags;
    its `cdw0` is the completion's dword 0. An IoError, so code that
    catches I/O errors catches it too.
    """

    def __init__(
        self,
        sct: int,
        sc: int,
        *,
        dnr: bool | None = False,
        more: bool | None = False,
        crd: int = 0,
        command: str = "NVMe command",
        device: str = "",
        cdw0: int = 0,
        length: int = 0,
    ) -> None:
        name = _nvme_status_name(sct, sc)
        flags = "".join(f", {flag}" for flag, on in (("DNR", dnr), ("more", more)) if on)
        where = f" on {device}" if device else ""
        super().__init__(
            _errno.EIO,
            f"{command}{where} failed: {name} (SCT {sct}, SC {sc:#04x}{flags})",
            device=device,
            op=command,
            offset=0,
            length=length,
            nvme_sct=sct,
            nvme_sc=sc,
        )
        self.cdw0 = cdw0
        self.sct = sct
        self.sc = sc
        self.dnr = dnr
        self.more = more
        self.crd = crd
        self.name = name
        self.command = command
        self.device = device

    @staticmethod
    def status_name(sct: int, sc: int) -> str:
        """A readable name for NVMe status (`sct`, `sc`); one that says what kind it
        is when the code has no name here (command-specific, vendor-specific, reserved)."""
        return _nvme_status_name(sct, sc)

    @classmethod
    def from_status(
        cls, status: int, *, command: str = "NVMe command", device: str = ""
    ) -> NvmeError:
        """From the completion's 16-bit status word (SPDK's status_raw: bit 0 the phase
        tag, then SC in bits 1-8, SCT 9-11, CRD 12-13, More 14, DNR 15)."""
        if not 0 <= status <= 0xFFFF:
            raise ValueError(f"an NVMe status word is 16 bits, not {status:#x}")
        return cls(
            (status >> 9) & 0x7,
            (status >> 1) & 0xFF,
            crd=(status >> 12) & 0x3,
            more=bool(status & (1 << 14)),
            dnr=bool(status & (1 << 15)),
            command=command,
            device=device,
        )


class ProcessError(SpdkError):
    """An SPDK application running as its own process failed or cannot be reached.

    `log_path` is the application's log file when it outlives the error (None
    for an attached process, or a private log that stop() removed) and
    `log_tail` its last lines when the error was raised.
    """

    def __init__(self, message: str, *, log_path: str | None = None, log_tail: str = "") -> None:
        if log_tail:
            message = f"{message}\n--- last lines of {log_path or 'its log'} ---\n{log_tail}"
        super().__init__(message)
        self.log_path = log_path
        self.log_tail = log_tail


class ProcessStartError(ProcessError, StartError):
    """The SPDK application did not come up; `reason` names the cause found in its log.

    reason is one of: "binary", "not_spdk", "config", "cpu_mask", "memory",
    "rpc_socket", "exited", "timeout".
    """

    def __init__(
        self, message: str, *, reason: str, log_path: str | None = None, log_tail: str = ""
    ) -> None:
        super().__init__(message, log_path=log_path, log_tail=log_tail)
        self.reason = reason


class ProcessExitedError(ProcessError, RuntimeStateError):
    """The SPDK application is no longer running: an RPC cannot reach it."""


class UblkUnavailableError(SpdkError):
    """The kernel cannot serve ublk disks here; `reasons` says why.

    reasons holds one or more of: "no_driver" (no /dev/ublk-control: the
    kernel lacks ublk_drv or it is not loaded), "not_privileged" (serving
    ublk disks needs CAP_SYS_ADMIN).
    """

    def __init__(self, message: str, *, reasons: tuple[str, ...]) -> None:
        super().__init__(message)
        self.reasons = reasons


class UblkIdInUseError(SpdkError, ValueError):
    """A ublk disk with that id already exists."""


class HugepagesError(SpdkError):
    """Hugepages could not be reserved or mounted as asked (other than for permission)."""


# ------------------------------------------------------------------ the one map
#
# Every negative errno the C layer returns, and every failed I/O status, is
# turned into an exception here and nowhere else.

_REFUSALS: dict[int, type[Exception]] = {
    _errno.EINVAL: ValueError,
    _errno.ENOMEM: MemoryError,
    _errno.EPERM: PermissionError,
    _errno.EACCES: PermissionError,
    _errno.ENOENT: DeviceNotFoundError,
    _errno.ENODEV: DeviceNotFoundError,
    _errno.ETIMEDOUT: TimeoutError,
}


def waits_on_spdk_thread(what: str) -> RuntimeStateError:
    """The refusal of a call that would wait for the SPDK thread, made on that thread."""
    return RuntimeStateError(
        f"{what} waits for the SPDK thread, and this is the SPDK thread: it would "
        "deadlock. Call it from another thread, or use the future/asyncio form."
    )


def error_from_rc(rc: int, what: str) -> Exception:
    """The exception for a C call that returned rc < 0: `what` says what was attempted."""
    code = -rc
    if code in (_errno.EBADF, _errno.EBUSY):
        return RuntimeStateError(f"{what}: {_os.strerror(code)}")
    kind = _REFUSALS.get(code, OSError)
    message = f"{what}: {_os.strerror(code)}"
    if issubclass(kind, OSError):
        return kind(code, message)
    return kind(message)


def io_error(
    device: str,
    op: str,
    offset: int,
    length: int,
    status: int,
    *,
    aio_status: int = 0,
    nvme_sct: int = 0,
    nvme_sc: int = 0,
) -> IoError:
    """The IoError for an I/O that ended with `status` (struct pyspdk_io's: 1 or -errno)."""
    where = f"{op} of {length} bytes at offset {offset} on {device}"
    if status == 1:
        code = _errno.EIO if aio_status == 0 else -aio_status
        return IoError(
            code,
            f"{where} failed (NVMe status type {nvme_sct}, code {nvme_sc})",
            device=device,
            op=op,
            offset=offset,
            length=length,
            nvme_sct=nvme_sct,
            nvme_sc=nvme_sc,
        )
    code = -status
    reason = {
        _errno.ECANCELED: "was cancelled: the device closed (before SPDK ran it, or aborted)",
        _errno.ENODEV: "failed: the device was removed",
    }.get(code, f"was refused by SPDK: {_os.strerror(code)}")
    return IoError(code, f"{where} {reason}", device=device, op=op, offset=offset, length=length)


def rpc_result(
    method: str, request_id: int, reply: Any, malformed: type[SpdkError] = SpdkError
) -> Any:
    """A JSON-RPC reply's result; RpcError for an error object, `malformed` for anything else.

    Both the in-process client (rpc.py) and SpdkProcess read replies through here.
    """
    if not isinstance(reply, dict) or reply.get("id") != request_id:
        raise malformed(f"{method}: SPDK's reply does not answer this request: {reply!r:.200}")
    error = reply.get("error")
    if error is not None:
        if isinstance(error, dict):
            code, message = error.get("code"), error.get("message")
        else:
            code, message = None, error
        raise RpcError(method, code if isinstance(code, int) else 0, str(message))
    if "result" not in reply:
        raise malformed(f"{method}: SPDK's reply has neither result nor error: {reply!r:.200}")
    return reply["result"]


# ------------------------------------------------------------------ RPC answers
#
# SPDK's RPC methods answer a failure with a JSON-RPC error whose code is
# sometimes -errno and sometimes a generic JSON-RPC code, with the errno's text
# as message. What an answer means is read here and nowhere else: callers ask
# rpc_meaning() and raise their own precise exception.

_RPC_MEANINGS: tuple[tuple[str, frozenset[int], tuple[str, ...]], ...] = (
    ("no_device", frozenset({_errno.ENODEV, _errno.ENOENT}), ("no such device", "no such file")),
    ("exists", frozenset({_errno.EEXIST}), ("file exists", "already exists")),
    ("busy", frozenset({_errno.EBUSY}), ("device or resource busy", "busy")),
    ("address_in_use", frozenset({_errno.EADDRINUSE}), ("address already in use",)),
    ("refused", frozenset({_errno.ECONNREFUSED}), ("connection refused",)),
    ("not_permitted", frozenset({_errno.EPERM, _errno.EACCES}), ("not permitted",)),
    ("unsupported", frozenset({_errno.ENOTSUP, _errno.EOPNOTSUPP}), ("not supported",)),
)


def rpc_meaning(exc: RpcError) -> str | None:
    """What an RPC error answer means, when it says: one of "no_device", "exists",
    "busy", "address_in_use", "refused", "not_permitted", "unsupported"; else None."""
    text = exc.message.lower()
    for meaning, codes, phrases in _RPC_MEANINGS:
        if -exc.code in codes or any(phrase in text for phrase in phrases):
            return meaning
    return None
