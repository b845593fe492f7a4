"""What registered itself when the fat library loaded, without starting SPDK.

SPDK modules register from constructors into private lists. Log flags and
trace groups can be walked; every other kind only answers "is NAME
registered?". To list those, the names to ask about are taken from the
library itself: a registered name is a string literal in its .rodata (the
linker may store it as the tail of a longer literal, so suffixes count too).
Every name listed has been confirmed by SPDK's own lookup function.
Nothing here needs root, hugepages or a running SPDK application.
"""

from __future__ import annotations

import functools
import re
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._binding import LIBRARY_PATH, ffi, lib

__all__ = [
    "KINDS",
    "KIND_KEYS",
    "Kind",
    "candidate_names",
    "kind",
    "registered",
    "snapshot",
]

_NAME = re.compile(rb"[A-Za-z0-9_.\-]{1,96}(?=\x00)")


@dataclass(frozen=True)
class Kind:
    """One kind of registration and how to observe it."""

    key: str
    title: str
    macro: str
    lookup: str
    list_names: Callable[[], list[str]]


def _walk(first: Callable[[], Any], following: Callable[[Any], Any]) -> Iterator[Any]:
    node = first()
    while node != ffi.NULL:
        yield node
        node = following(node)


def _log_flags() -> list[str]:
    nodes = _walk(lib.spdk_log_get_first_flag, lib.spdk_log_get_next_flag)
    return sorted(ffi.string(node.name).decode() for node in nodes)


def _trace_groups() -> list[str]:
    nodes = _walk(lib.spdk_trace_get_first_register_fn, lib.spdk_trace_get_next_register_fn)
    return sorted(ffi.string(node.name).decode() for node in nodes)


def _rodata(path: str) -> bytes:
    """The bytes of every .rodata section of an ELF64 little-endian file."""
    data = Path(path).read_bytes()
    if data[:6] != b"\x7fELF\x02\x01":
        raise ValueError(f"{path} is not a 64-bit little-endian ELF file")
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)

    def section(index: int) -> tuple[int, int, int]:
        name, _type, _flags, _addr, offset, size = struct.unpack_from(
            "<IIQQQQ", data, shoff + index * shentsize
        )
        return name, offset, size

    _, names_offset, _ = section(shstrndx)
    chunks = []
    for index in range(shnum):
        name, offset, size = section(index)
        end = data.index(b"\x00", names_offset + name)
        if data[names_offset + name : end].startswith(b".rodata"):
            chunks.append(data[offset : offset + size])
    return b"\x00".join(chunks)


@functools.cache
def candidate_names() -> frozenset[str]:
    """Every NUL-terminated name-like literal of the fat library, and its tails."""
    names: set[str] = set()
    for match in _NAME.finditer(_rodata(LIBRARY_PATH)):
        literal = match.group().decode()
        names.update(literal[start:] for start in range(len(literal)))
    return frozenset(names)


def _confirmed(is_registered: Callable[[bytes], bool]) -> Callable[[], list[str]]:
    def list_names() -> list[str]:
        with _quiet_log():
            return sorted(n for n in candidate_names() if is_registered(n.encode()))

    return list_names


class _quiet_log:
    """Silence SPDK's log while asking about names that mostly do not exist."""

    def __enter__(self) -> None:
        self._print_level = lib.spdk_log_get_print_level()
        self._level = lib.spdk_log_get_level()
        lib.spdk_log_set_print_level(lib.SPDK_LOG_DISABLED)
        lib.spdk_log_set_level(lib.SPDK_LOG_DISABLED)

    def __exit__(self, *exc: object) -> None:
        lib.spdk_log_set_print_level(self._print_level)
        lib.spdk_log_set_level(self._level)


def _rpc_method(name: bytes) -> bool:
    return bool(lib.spdk_rpc_get_method_state_mask(name, _MASK) == 0)


def _sock_impl(name: bytes) -> bool:
    _OPTS_LEN[0] = ffi.sizeof(_SOCK_OPTS[0])
    return bool(lib.spdk_sock_impl_get_opts(name, _SOCK_OPTS, _OPTS_LEN) == 0)


def _nvmf_transport(name: bytes) -> bool:
    return bool(lib.spdk_nvmf_transport_opts_init(name, _NVMF_OPTS, ffi.sizeof(_NVMF_OPTS[0])))


_MASK = ffi.new("uint32_t *")
_SOCK_OPTS = ffi.new("struct spdk_sock_impl_opts *")
_OPTS_LEN = ffi.new("size_t *")
_NVMF_OPTS = ffi.new("struct spdk_nvmf_transport_opts *")


def _found(lookup: Callable[[bytes], object]) -> Callable[[bytes], bool]:
    return lambda name: lookup(name) != ffi.NULL


KINDS: tuple[Kind, ...] = (
    Kind(
        "log_flags",
        "log flags",
        "SPDK_LOG_REGISTER_COMPONENT",
        "spdk_log_get_first_flag/next_flag",
        _log_flags,
    ),
    Kind(
        "rpc_methods",
        "RPC methods",
        "SPDK_RPC_REGISTER",
        "spdk_rpc_get_method_state_mask",
        _confirmed(_rpc_method),
    ),
    Kind(
        "bdev_modules",
        "bdev modules",
        "SPDK_BDEV_MODULE_REGISTER",
        "spdk_bdev_module_list_find",
        _confirmed(_found(lib.spdk_bdev_module_list_find)),
    ),
    Kind(
        "accel_modules",
        "accel modules",
        "SPDK_ACCEL_MODULE_REGISTER",
        "spdk_accel_get_module",
        _confirmed(_found(lib.spdk_accel_get_module)),
    ),
    Kind(
        "sock_impls",
        "sock implementations",
        "SPDK_NET_IMPL_REGISTER",
        "spdk_sock_impl_get_opts",
        _confirmed(_sock_impl),
    ),
    Kind(
        "nvme_transports",
        "NVMe transports",
        "SPDK_NVME_TRANSPORT_REGISTER",
        "spdk_nvme_transport_available_by_name",
        _confirmed(lambda n: n.isupper() and lib.spdk_nvme_transport_available_by_name(n)),
    ),
    Kind(
        "nvmf_transports",
        "NVMe-oF transports",
        "SPDK_NVMF_TRANSPORT_REGISTER",
        "spdk_nvmf_transport_opts_init",
        _confirmed(lambda n: n.isupper() and _nvmf_transport(n)),
    ),
    Kind(
        "pci_drivers",
        "PCI drivers",
        "SPDK_PCI_DRIVER_REGISTER",
        "spdk_pci_get_driver",
        _confirmed(_found(lib.spdk_pci_get_driver)),
    ),
    Kind(
        "fsdev_modules",
        "fsdev modules",
        "SPDK_FSDEV_MODULE_REGISTER",
        "spdk_fsdev_module_list_find",
        _confirmed(_found(lib.spdk_fsdev_module_list_find)),
    ),
    Kind(
        "trace_groups",
        "trace groups",
        "SPDK_TRACE_REGISTER_FN",
        "spdk_trace_get_first_register_fn/next_register_fn",
        _trace_groups,
    ),
    Kind(
        "subsystems",
        "subsystems",
        "SPDK_SUBSYSTEM_REGISTER",
        "spdk_subsystem_exists",
        _confirmed(lib.spdk_subsystem_exists),
    ),
)

KIND_KEYS: tuple[str, ...] = tuple(kind.key for kind in KINDS)


def kind(key: str) -> Kind:
    """The Kind called `key` (one of KIND_KEYS)."""
    for candidate in KINDS:
        if candidate.key == key:
            return candidate
    raise ValueError(f"unknown registration kind {key!r}; expected one of {', '.join(KIND_KEYS)}")


def registered(key: str) -> list[str]:
    """Sorted names registered under the kind `key`, for example 'bdev_modules'."""
    return kind(key).list_names()


def snapshot() -> dict[str, list[str]]:
    """Every kind's registered names."""
    return {k.key: k.list_names() for k in KINDS}
