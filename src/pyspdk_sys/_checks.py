"""Argument checks shared by every public entry point: run before anything reaches C.

Each raises TypeError or ValueError naming the parameter and the bad value,
so that C never sees a value it would truncate, wrap or abort on.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

INT64_MAX = (1 << 63) - 1
MAX_SECONDS = 365 * 24 * 3600.0  # a year: far inside int64 nanoseconds
MAX_CORE = 1023  # SPDK_CPUSET_SIZE - 1: spdk_cpuset_parse takes no higher core
SUN_PATH_MAX = 107  # sizeof(sockaddr_un.sun_path) - 1
NQN_MIN = 11  # SPDK_NVMF_NQN_MIN_LEN
NQN_MAX = 223  # SPDK_NVMF_NQN_MAX_LEN
DISCOVERY_NQN = "nqn.2014-08.org.nvmexpress.discovery"
_UUID_NQN_PREFIX = "nqn.2014-08.org.nvmexpress:uuid:"
# A PCI address (bus/device/function, with the domain optional), as Linux and
# SPDK's spdk_pci_addr_parse read it: the domain up to 32 bits (VMD's are past
# 16), bus 8, device 5, function 3.
_PCI_ADDRESS = re.compile(r"(?:([0-9a-fA-F]{1,8}):)?([0-9a-fA-F]{1,2}):([0-9a-fA-F]{1,2})\.([0-7])")


def check_int(name: str, value: Any, low: int, high: int) -> int:
    """An int (not a bool) within [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__} ({value!r})")
    if not low <= value <= high:
        raise ValueError(f"{name} must be from {low} to {high}, not {value!r}")
    return value


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, not {type(value).__name__} ({value!r})")
    return value


def check_float(name: str, value: Any, low: float, high: float) -> float:
    """A finite real number (int or float, not bool) within [low, high]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, not {type(value).__name__} ({value!r})")
    number = float(value)
    if not math.isfinite(number) or not low <= number <= high:
        raise ValueError(f"{name} must be a finite number from {low} to {high}, not {value!r}")
    return number


def check_timeout(name: str, value: Any, *, none_ok: bool = True) -> float | None:
    """A finite positive number of seconds, up to a year; None (wait for ever) if none_ok."""
    if value is None:
        if none_ok:
            return None
        raise TypeError(f"{name} must be a number of seconds, not None")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"{name} must be a number of seconds, not {type(value).__name__} ({value!r})"
        )
    seconds = float(value)
    if not (math.isfinite(seconds) and 0 < seconds <= MAX_SECONDS):
        allowed = "a positive number of seconds" + (" or None" if none_ok else "")
        raise ValueError(f"{name} must be {allowed} (at most {MAX_SECONDS:.0f}), not {value!r}")
    return seconds


def check_seconds(name: str, value: Any) -> float:
    """check_timeout where None is not allowed: the callers that always have a deadline."""
    seconds = check_timeout(name, value, none_ok=False)
    assert seconds is not None
    return seconds


def check_power_of_two(name: str, value: Any, low: int, high: int) -> int:
    check_int(name, value, low, high)
    if value & (value - 1):
        raise ValueError(f"{name} must be a power of two, not {value!r}")
    return int(value)


_HEX_MASK = re.compile(r"0x([0-9a-fA-F]{1,256})")  # 256 hex digits: 1024 cores
_LIST_MASK = re.compile(r"\[(.*)\]")
_LIST_ITEM = re.compile(r"\s*(\d{1,10})\s*(?:-\s*(\d{1,10})\s*)?")


def parse_cpu_mask(name: str, value: Any) -> tuple[int, ...]:
    """The cores of an SPDK CPU mask, '0x5' -> (0, 2), '[0,2-3]' -> (0, 2, 3).

    The one parser of CPU masks (Runtime, SpdkProcess, the CLI, vhost, ublk):
    every core from 0 to MAX_CORE, as spdk_cpuset_parse takes them, and never
    a range expanded before its bounds are checked.
    """
    if not isinstance(value, str):
        raise TypeError(
            f"{name} must be a str such as '0x3' or '[0,1]', not {type(value).__name__}"
        )
    cores: set[int] = set()
    hex_mask = _HEX_MASK.fullmatch(value)
    list_mask = None if hex_mask else _LIST_MASK.fullmatch(value)
    if hex_mask:
        bits = int(hex_mask.group(1), 16)
        cores = {core for core in range(bits.bit_length()) if bits >> core & 1}
    elif list_mask:
        for item in list_mask.group(1).split(","):
            match = _LIST_ITEM.fullmatch(item)
            if not match:
                raise ValueError(
                    f"{name} {value!r}: {item.strip()!r} is not a core number or a range "
                    "such as '2-3'"
                )
            first = int(match.group(1))
            last = first if match.group(2) is None else int(match.group(2))
            if last < first:
                raise ValueError(f"{name} {value!r}: the range {item.strip()!r} runs backwards")
            if last > MAX_CORE:
                raise ValueError(f"{name} {value!r}: core {last} is past SPDK's last, {MAX_CORE}")
            cores.update(range(first, last + 1))
    else:
        raise ValueError(f"{name} must look like '0x3' or '[0,1]', not {value!r}")
    if not cores:
        raise ValueError(f"{name} {value!r} names no core")
    if max(cores) > MAX_CORE:
        raise ValueError(f"{name} {value!r}: core {max(cores)} is past SPDK's last, {MAX_CORE}")
    return tuple(sorted(cores))


def mask_of(cores: tuple[int, ...] | list[int]) -> str:
    """The hexadecimal mask of `cores`: what SPDK is handed, whatever form the caller used."""
    return hex(sum(1 << core for core in set(cores)))


def check_cpu_mask(name: str, value: Any) -> str:
    """An SPDK CPU mask ('0x3' or a core list such as '[0,1]'), as given."""
    parse_cpu_mask(name, value)
    return str(value)


@functools.lru_cache(maxsize=1)
def online_cpus() -> frozenset[int]:
    """The CPUs this machine has online: the cores a reactor can run on."""
    try:
        text = Path("/sys/devices/system/cpu/online").read_text().strip()
        return frozenset(parse_cpu_mask("online CPUs", f"[{text}]"))
    except (OSError, ValueError):
        return frozenset(range(os.cpu_count() or 1))


def check_local_cpu_mask(name: str, value: Any) -> tuple[int, ...]:
    """The cores of a mask for reactors on this machine: every core must exist here.

    DPDK refuses a core the machine lacks only deep inside its start, with a
    reason that a Python caller never sees; this says it before anything starts.
    """
    cores = parse_cpu_mask(name, value)
    online = online_cpus()
    missing = [core for core in cores if core not in online]
    if missing:
        have = ", ".join(str(core) for core in sorted(online))
        raise ValueError(
            f"{name} {value!r} names core {missing[0]}, which this machine does not have "
            f"(its online cores: {have})"
        )
    return cores


def check_socket_path(name: str, value: Any) -> str:
    """An absolute Unix socket path that fits in sun_path, in a directory that exists."""
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name} must be a path, not {type(value).__name__}")
    text = os.fspath(value)
    if not isinstance(text, str) or not text or "\0" in text:
        raise ValueError(f"{name} must be a non-empty path without NUL, not {text!r}")
    text = os.path.abspath(text)
    if len(text.encode()) > SUN_PATH_MAX:
        raise ValueError(
            f"{name} {text!r} is {len(text.encode())} bytes; a Unix socket path holds at most "
            f"{SUN_PATH_MAX}"
        )
    parent = os.path.dirname(text)
    if not os.path.isdir(parent):
        raise ValueError(f"{name}'s directory {parent!r} does not exist")
    return text


def check_nqn(name: str, value: Any) -> str:
    """An NVMe Qualified Name as SPDK's own check (nvmf_nqn_is_valid) accepts it.

    Anything SPDK would refuse is refused here first, by name: SPDK itself
    answers some of these with nothing more than "Internal error".
    """
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    size = len(value.encode("utf-8", "surrogatepass"))
    if not NQN_MIN <= size <= NQN_MAX:
        raise ValueError(f"{name} must be {NQN_MIN} to {NQN_MAX} bytes, not {size}: {value!r}")
    if "\0" in value:
        raise ValueError(f"{name} contains a NUL character: {value!r}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{name} is not valid UTF-8: {value!r}") from None
    if value == DISCOVERY_NQN:
        return value
    if value.startswith(_UUID_NQN_PREFIX):
        tail = value[len(_UUID_NQN_PREFIX) :]
        if not re.fullmatch(r"[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}", tail):
            raise ValueError(f"{name} {value!r}: the part after ':uuid:' must be a UUID")
        return value
    if not re.fullmatch(r"nqn\.[0-9]{4}-[0-9]{2}\.", value[:12]):
        raise ValueError(
            f"{name} must look like 'nqn.2016-06.io.spdk:name' (nqn.yyyy-mm.domain:name), "
            f"not {value!r}"
        )
    domain, colon, user = value[12:].partition(":")
    if not colon or not user:
        raise ValueError(f"{name} {value!r} needs a name after the domain, as in '...:name'")
    problem = _domain_problem(domain)
    if problem:
        raise ValueError(f"{name} {value!r}: {problem}")
    return value


def _domain_problem(domain: str) -> str | None:
    """What SPDK finds wrong with an NQN's reverse domain, walking it as SPDK does."""
    expect_letter, after_dash, label = True, False, 0
    for index, char in enumerate(domain):
        if label > 63:
            return "a domain label is longer than 63 characters"
        ascii_alpha = char.isascii() and char.isalpha()
        if expect_letter:
            if not ascii_alpha:
                return f"domain labels must start with a letter, not {char!r}"
            expect_letter, label = False, label + 1
        elif ascii_alpha or (char.isascii() and char.isdigit()):
            after_dash, label = False, label + 1
        elif char == "-":
            if index == len(domain) - 1:
                return "the domain must end with a letter or digit"
            after_dash, label = True, label + 1
        elif char == "." and not after_dash:
            expect_letter, label = True, 0
        elif char == ".":
            return "a domain label must end with a letter or digit"
        else:
            return f"domain labels hold only letters, digits, '-' and '.', not {char!r}"
    return None


def check_ip_address(name: str, value: Any) -> tuple[str, str]:
    """(address, adrfam) for an IPv4 or IPv6 literal: 'ipv4' or 'ipv6'."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    try:
        parsed = ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"{name} must be an IPv4 or IPv6 address, not {value!r}") from None
    return str(parsed), "ipv4" if parsed.version == 4 else "ipv6"


def check_port(name: str, value: Any) -> int:
    """A TCP port from 1 to 65535."""
    return check_int(name, value, 1, 65535)


def check_pci_address(name: str, value: Any) -> str:
    """A PCI address in Linux's sysfs spelling: 'dddd:bb:dd.f', lower case.

    'bb:dd.f' means domain 0. The one check for every PCI address: it names
    sysfs entries too, so nothing but the address's own characters gets through.
    """
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__} ({value!r})")
    found = _PCI_ADDRESS.fullmatch(value)
    if found is None:
        raise ValueError(
            f"{name} must be a PCI address such as '0000:00:04.0' (domain:bus:device.function, "
            f"hexadecimal), not {value!r}"
        )
    domain, bus, device, function = found.groups()
    if int(device, 16) > 0x1F:
        raise ValueError(f"{name} {value!r}: the device number is 00 to 1f, not {device}")
    return f"{int(domain or '0', 16):04x}:{int(bus, 16):02x}:{int(device, 16):02x}.{function}"


def check_reconnect(loss: Any, delay: Any, fail: Any) -> tuple[int, int, int]:
    """bdev_nvme's reconnect options, alone and together, as SPDK's
    bdev_nvme_check_io_error_resiliency_params accepts them: (ctrlr_loss_timeout_sec,
    reconnect_delay_sec, fast_io_fail_timeout_sec). -1 retries for ever, 0 gives up at once."""
    loss = check_int("ctrlr_loss_timeout_sec", loss, -1, (1 << 31) - 1)
    delay = check_int("reconnect_delay_sec", delay, 0, (1 << 32) - 1)
    fail = check_int("fast_io_fail_timeout_sec", fail, 0, (1 << 32) - 1)
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
    return loss, delay, fail


def check_name(value: Any, what: str = "a device name") -> bytes:
    """A non-empty str without NUL, as the bytes C gets."""
    if not isinstance(value, str):
        raise TypeError(f"{what} is a str, not {type(value).__name__}")
    if not value or "\0" in value:
        raise ValueError(f"invalid {what}: {value!r}")
    return value.encode()


def check_config(config: Any) -> Any:
    """None, a JSON-ready copy of a mapping, or the absolute Path of a JSON file.

    The one check of an SPDK JSON config, for a Runtime and an SpdkProcess alike.
    """
    if config is None:
        return None
    if isinstance(config, Mapping):
        if not isinstance(config.get("subsystems", []), list):
            raise ValueError("config['subsystems'] must be a list of subsystem configs")
        try:
            return json.loads(json.dumps(dict(config), allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"config is not JSON-serialisable: {exc}") from None
    if not isinstance(config, (str, os.PathLike)):
        raise TypeError(f"config must be a mapping or a path, not {type(config).__name__}")
    path = Path(os.fspath(config)).absolute()
    if not path.is_file():
        raise ValueError(f"config file {str(path)!r} does not exist")
    try:
        json.loads(path.read_text())
    except ValueError as exc:
        raise ValueError(f"config file {str(path)!r} is not valid JSON: {exc}") from None
    return path
