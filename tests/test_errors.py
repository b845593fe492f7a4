"""The one error map: return codes, I/O statuses and RPC answers, each to its exception."""

from __future__ import annotations

import errno
from typing import Any

import pytest


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (errno.EINVAL, ValueError),
        (errno.ENOMEM, MemoryError),
        (errno.EPERM, PermissionError),
        (errno.EACCES, PermissionError),
        (errno.ENOENT, "DeviceNotFoundError"),
        (errno.ENODEV, "DeviceNotFoundError"),
        (errno.ETIMEDOUT, TimeoutError),
        (errno.EBADF, "RuntimeStateError"),
        (errno.EBUSY, "RuntimeStateError"),
        (errno.EIO, OSError),
    ],
)
def test_return_codes_become_their_exception(spdk: Any, code: int, kind: Any) -> None:
    from pyspdk_sys import errors

    expected = getattr(errors, kind) if isinstance(kind, str) else kind
    exc = errors.error_from_rc(-code, "opening Dev0")
    assert type(exc) is expected
    assert str(exc).startswith("opening Dev0: ") or "opening Dev0: " in str(exc)
    if isinstance(exc, OSError) and not isinstance(exc, errors.DeviceNotFoundError):
        assert exc.errno == code


def test_a_failed_io_carries_where_and_the_nvme_status(spdk: Any) -> None:
    from pyspdk_sys.errors import IoError, io_error

    exc = io_error("Dev0", "read", 4096, 512, 1, nvme_sct=0, nvme_sc=7)
    assert isinstance(exc, IoError) and isinstance(exc, OSError)
    assert exc.errno == errno.EIO
    assert (exc.device, exc.op, exc.offset, exc.length) == ("Dev0", "read", 4096, 512)
    assert (exc.nvme_sct, exc.nvme_sc) == (0, 7)
    assert str(exc) == (
        "[Errno 5] read of 512 bytes at offset 4096 on Dev0 failed (NVMe status type 0, code 7)"
    )
    assert exc.failed == []
    aio = io_error("Dev0", "write", 0, 4096, 1, aio_status=-errno.ENOSPC)
    assert aio.errno == errno.ENOSPC
    assert (aio.nvme_sct, aio.nvme_sc) == (0, 0)  # none given: none reported


@pytest.mark.parametrize(
    ("status", "code", "words"),
    [
        (
            -errno.ECANCELED,
            errno.ECANCELED,
            "was cancelled: the device closed (before SPDK ran it, or aborted)",
        ),
        (-errno.ENODEV, errno.ENODEV, "failed: the device was removed"),
        (-errno.EINVAL, errno.EINVAL, "was refused by SPDK: Invalid argument"),
    ],
)
def test_an_io_spdk_never_ran_says_why(spdk: Any, status: int, code: int, words: str) -> None:
    from pyspdk_sys.errors import io_error

    exc = io_error("Dev0", "flush", 0, 8192, status)
    assert exc.errno == code
    assert str(exc).endswith(f"flush of 8192 bytes at offset 0 on Dev0 {words}")
    assert (exc.nvme_sct, exc.nvme_sc) == (0, 0)


def test_rpc_replies_are_read_strictly(spdk: Any) -> None:
    from pyspdk_sys.errors import ProcessError, RpcError, SpdkError, rpc_result

    assert rpc_result("m", 3, {"jsonrpc": "2.0", "id": 3, "result": [1]}) == [1]
    assert rpc_result("m", 3, {"id": 3, "result": None}) is None
    with pytest.raises(RpcError) as caught:
        rpc_result("bdev_x", 4, {"id": 4, "error": {"code": -19, "message": "No such device"}})
    assert (caught.value.method, caught.value.code, caught.value.message) == (
        "bdev_x",
        -19,
        "No such device",
    )
    assert str(caught.value) == "bdev_x: No such device (JSON-RPC error -19)"
    with pytest.raises(RpcError) as caught:
        rpc_result("m", 1, {"id": 1, "error": "plain text"})
    assert (caught.value.code, caught.value.message) == (0, "plain text")
    with pytest.raises(RpcError) as caught:
        rpc_result("m", 1, {"id": 1, "error": {"code": "x", "message": 5}})
    assert (caught.value.code, caught.value.message) == (0, "5")
    with pytest.raises(SpdkError, match="does not answer this request"):
        rpc_result("m", 1, {"id": 2, "result": 1})
    with pytest.raises(ProcessError, match="does not answer this request"):
        rpc_result("m", 1, [1], ProcessError)
    with pytest.raises(SpdkError, match="neither result nor error"):
        rpc_result("m", 1, {"id": 1})


@pytest.mark.parametrize(
    ("code", "message", "meaning"),
    [
        (-errno.ENODEV, "whatever", "no_device"),
        (-32602, "No such device", "no_device"),
        (-32602, "No such file or directory", "no_device"),
        (-errno.EEXIST, "x", "exists"),
        (-32603, "Bdev Malloc0 already exists", "exists"),
        (-errno.EBUSY, "x", "busy"),
        (-32603, "Device or resource busy", "busy"),
        (-errno.EADDRINUSE, "x", "address_in_use"),
        (-32603, "Address already in use", "address_in_use"),
        (-errno.ECONNREFUSED, "x", "refused"),
        (-32603, "Connection refused", "refused"),
        (-errno.EPERM, "x", "not_permitted"),
        (-32603, "Operation not permitted", "not_permitted"),
        (-errno.ENOTSUP, "x", "unsupported"),
        (-32603, "Operation not supported", "unsupported"),
        (-32602, "Invalid parameters", None),
        (-32603, "Internal error", None),
    ],
)
def test_rpc_answers_mean_what_they_say(
    spdk: Any, code: int, message: str, meaning: str | None
) -> None:
    from pyspdk_sys.errors import RpcError, rpc_meaning

    assert rpc_meaning(RpcError("m", code, message)) == meaning


def test_process_errors_carry_their_log(spdk: Any) -> None:
    from pyspdk_sys.errors import ProcessError, ProcessStartError, StartError

    plain = ProcessError("it died")
    assert (str(plain), plain.log_path, plain.log_tail) == ("it died", None, "")
    with_log = ProcessStartError("no start", reason="memory", log_path="/x.log", log_tail="a\nb")
    assert isinstance(with_log, StartError)
    assert with_log.reason == "memory"
    assert str(with_log) == "no start\n--- last lines of /x.log ---\na\nb"


def test_nvme_error_names_the_status_and_its_flags(spdk: Any) -> None:
    from pyspdk_sys.errors import NvmeError, SpdkError

    exc = NvmeError(0, 1, dnr=True, command="admin opcode 0xff", device="Nvme0n1")
    assert isinstance(exc, SpdkError) and isinstance(exc, OSError) and exc.errno == errno.EIO
    assert (exc.sct, exc.sc, exc.dnr, exc.more, exc.crd) == (0, 1, True, False, 0)
    assert exc.name == "Invalid Command Opcode"
    assert str(exc) == (
        "[Errno 5] admin opcode 0xff on Nvme0n1 failed: "
        "Invalid Command Opcode (SCT 0, SC 0x01, DNR)"
    )
    more = NvmeError(2, 0x81, more=True)
    assert more.name == "Unrecovered Read Error"
    assert str(more).endswith("NVMe command failed: Unrecovered Read Error (SCT 2, SC 0x81, more)")


@pytest.mark.parametrize(
    ("raw", "fields"),
    [
        # SPDK's status_raw: phase bit 0, SC 1-8, SCT 9-11, CRD 12-13, More 14, DNR 15.
        (0x0002, (0, 0x01, 0, False, False)),  # Invalid Command Opcode, no flags
        (0x0003, (0, 0x01, 0, False, False)),  # the phase bit is not part of the status
        (0x8000 | (2 << 9) | (0x81 << 1), (2, 0x81, 0, False, True)),
        (0x4000 | (1 << 12) | (0x0E << 1), (0, 0x0E, 1, True, False)),
        (0xFFFF, (7, 0xFF, 3, True, True)),
    ],
)
def test_nvme_error_from_the_status_word(spdk: Any, raw: int, fields: tuple[Any, ...]) -> None:
    from pyspdk_sys.errors import NvmeError

    exc = NvmeError.from_status(raw, command="read", device="N0n1")
    assert (exc.sct, exc.sc, exc.crd, exc.more, exc.dnr) == fields
    assert str(exc).startswith("[Errno 5] read on N0n1 failed: ")


def test_nvme_status_names(spdk: Any) -> None:
    from pyspdk_sys.errors import NvmeError

    nvme_status_name = NvmeError.status_name

    names = {
        (0, 0x00): "Successful Completion",
        (0, 0x02): "Invalid Field in Command",
        (0, 0x04): "Data Transfer Error",
        (0, 0x06): "Internal Error",
        (0, 0x07): "Command Abort Requested",
        (0, 0x08): "Command Aborted due to SQ Deletion",
        (0, 0x0B): "Invalid Namespace or Format",
        (0, 0x80): "LBA Out of Range",
        (2, 0x80): "Write Fault",
        (3, 0x03): "Asymmetric Access Transition",
    }
    for (sct, sc), name in names.items():
        assert nvme_status_name(sct, sc) == name
    # No name here: the kind of status, and the code.
    assert nvme_status_name(1, 0x02) == "Command Specific Status 0x02"
    assert nvme_status_name(7, 0xC0) == "Vendor Specific 0xc0"
    assert nvme_status_name(0, 0x17) == "Generic Command Status 0x17"
    assert nvme_status_name(5, 0x01) == "Reserved Status Code Type 0x01"
    for bad in ((8, 0), (-1, 0), (0, 256), (0, -1)):
        with pytest.raises(ValueError, match="an NVMe status is SCT 0 to 7 and SC 0 to 0xff"):
            nvme_status_name(*bad)
    with pytest.raises(ValueError, match="16 bits"):
        NvmeError.from_status(0x10000)
