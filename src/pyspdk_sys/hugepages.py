"""Hugepages: what the kernel has reserved and mounted, and how to get more.

Why: SPDK runs without hugepages (no_huge), but PCI devices and vhost-user
initiators need hugepage memory: pages reserved in the kernel's pool
(nr_hugepages under /sys/kernel/mm/hugepages) and a hugetlbfs mount for DPDK
to create its files in. Reading needs nothing; reserving and mounting need
root (CAP_SYS_ADMIN), and say so with PermissionError.

Reserving never lowers a pool: other programs may be using the pages. The
kernel may grant fewer pages than asked (fragmented or short memory): the
count is checked afterwards, and a short grant is given back and reported.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import HugepagesError

__all__ = [
    "DEFAULT_MOUNT_POINT",
    "PageSize",
    "default_size_kb",
    "hugetlbfs_mounts",
    "mount",
    "page_size",
    "reclaim_stale_files",
    "reserve",
    "status",
    "supported_sizes",
    "unmount",
]

SYSFS = Path("/sys/kernel/mm/hugepages")
MOUNTS = Path("/proc/mounts")
MEMINFO = Path("/proc/meminfo")
DEFAULT_MOUNT_POINT = "/dev/hugepages"

_DIR = re.compile(r"hugepages-(\d+)kB")
_UNITS = {"": 1, "K": 1, "M": 1024, "G": 1024 * 1024}


@dataclass(frozen=True)
class PageSize:
    """The kernel's pool of one hugepage size, and where hugetlbfs serves that size."""

    size_kb: int
    total: int
    free: int
    reserved: int
    surplus: int
    mounts: tuple[str, ...]

    @property
    def available(self) -> int:
        """Pages a new program can still take: free and not promised to a mapping."""
        return max(self.free - self.reserved, 0)

    @property
    def size_label(self) -> str:
        """The size as people write it: '2M', '1G'."""
        for unit, factor in (("G", 1024 * 1024), ("M", 1024)):
            if self.size_kb % factor == 0:
                return f"{self.size_kb // factor}{unit}"
        return f"{self.size_kb}K"


def supported_sizes() -> list[int]:
    """The hugepage sizes this kernel offers, in KiB, smallest first."""
    try:
        names = os.listdir(SYSFS)
    except FileNotFoundError:
        return []
    return sorted(int(m.group(1)) for name in names if (m := _DIR.fullmatch(name)))


def default_size_kb() -> int:
    """The default hugepage size (Hugepagesize in /proc/meminfo), in KiB."""
    value = _meminfo().get("Hugepagesize")
    if value is None:
        raise HugepagesError("this kernel has no hugepage support (no Hugepagesize in meminfo)")
    return value


def status() -> list[PageSize]:
    """The pool and mount points of every hugepage size, smallest first."""
    mounts = hugetlbfs_mounts()
    return [_read(size, mounts) for size in supported_sizes()]


def page_size(size_kb: int | None = None) -> PageSize:
    """The pool of one size (default: the kernel's default size)."""
    size = _check_size(size_kb)
    return _read(size, hugetlbfs_mounts())


def hugetlbfs_mounts() -> dict[str, int]:
    """Every hugetlbfs mount point and the page size it serves, in KiB."""
    found: dict[str, int] = {}
    default: int | None = None
    for line in MOUNTS.read_text().splitlines():
        fields = line.split()
        if len(fields) < 4 or fields[2] != "hugetlbfs":
            continue
        size = None
        for option in fields[3].split(","):
            if option.startswith("pagesize="):
                size = _parse_size(option.removeprefix("pagesize="))
        if size is None:
            if default is None:
                default = default_size_kb()
            size = default
        found[_unescape(fields[1])] = size
    return found


def reserve(count: int, size_kb: int | None = None) -> PageSize:
    """Make sure at least `count` pages of the size are reserved; the pool afterwards.

    Never lowers the pool. HugepagesError when memory is short (checked
    before asking, and after: a partial grant is given back); PermissionError
    without root.
    """
    if isinstance(count, bool) or not isinstance(count, int):
        raise TypeError(f"count must be an int, not {count!r}")
    if count < 0:
        raise ValueError(f"count must be 0 or more pages, not {count}")
    size = _check_size(size_kb)
    before = page_size(size)
    if before.total >= count:
        return before
    more_kb = (count - before.total) * size
    available_kb = _meminfo().get("MemAvailable", 0)
    if more_kb > available_kb:
        raise HugepagesError(
            f"{count} pages of {before.size_label} need {more_kb // 1024} MiB more, but only "
            f"{available_kb // 1024} MiB of memory is available; nothing was changed"
        )
    _write_pool(size, count)
    after = page_size(size)
    if after.total < count:
        _write_pool(size, before.total)
        raise HugepagesError(
            f"asked for {count} pages of {before.size_label}, the kernel granted only "
            f"{after.total} (memory too fragmented or short); gave them back, the pool "
            f"holds {page_size(size).total} again"
        )
    return after


def mount(path: str | os.PathLike[str] = DEFAULT_MOUNT_POINT, size_kb: int | None = None) -> str:
    """A hugetlbfs mount point for the size: an existing one, else a new one at `path`."""
    size = _check_size(size_kb)
    for point, served in hugetlbfs_mounts().items():
        if served == size:
            return point
    target = os.fspath(path)
    os.makedirs(target, exist_ok=True)
    _libc_call(
        "mount",
        b"nodev",
        os.fsencode(target),
        b"hugetlbfs",
        0,
        f"pagesize={size}K".encode(),
        what=f"mounting hugetlbfs at {target}",
    )
    return target


def unmount(path: str | os.PathLike[str]) -> None:
    """Unmount a hugetlbfs mount point (files in it must be closed)."""
    target = os.fspath(path)
    if target not in hugetlbfs_mounts():
        raise ValueError(f"{target!r} is not a hugetlbfs mount point")
    _libc_call("umount", os.fsencode(target), what=f"unmounting {target}")


# SPDK names a process's DPDK files after its pid when it has no shared-memory
# id (the default here): spdk_pid<pid>map_<n> in the hugetlbfs mount.
_STALE = re.compile(r"spdk_pid(\d+)map_\d+")


def reclaim_stale_files(directory: str | os.PathLike[str] | None = None) -> list[str]:
    """Remove the hugepage files that SPDK processes which died left behind; their names.

    A process killed before it could clean up keeps its pages out of the pool
    for good: its files' names carry a fresh prefix per process, so no later
    start reuses them. A file counts as stale only when its process is gone
    and nobody holds a lock on it (DPDK locks the files it maps).
    """
    import fcntl

    removed = []
    points = [os.fspath(directory)] if directory is not None else list(hugetlbfs_mounts())
    for point in points:
        try:
            names = os.listdir(point)
        except OSError:
            continue
        for name in names:
            match = _STALE.fullmatch(name)
            if match is None or Path(f"/proc/{match.group(1)}").exists():
                continue
            path = os.path.join(point, name)
            try:
                fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                os.unlink(path)
                removed.append(path)
            except OSError:
                pass  # in use after all
            finally:
                os.close(fd)
    return removed


# ------------------------------------------------------------------ helpers


def _check_size(size_kb: int | None) -> int:
    if size_kb is None:
        return default_size_kb()
    if isinstance(size_kb, bool) or not isinstance(size_kb, int):
        raise TypeError(f"size_kb must be an int (KiB) or None, not {size_kb!r}")
    sizes = supported_sizes()
    if size_kb not in sizes:
        offered = ", ".join(str(s) for s in sizes) or "none"
        raise ValueError(f"size_kb {size_kb} is not a hugepage size here (offered: {offered})")
    return size_kb


def _read(size: int, mounts: dict[str, int]) -> PageSize:
    directory = SYSFS / f"hugepages-{size}kB"

    def number(name: str) -> int:
        return int((directory / name).read_text().strip())

    return PageSize(
        size_kb=size,
        total=number("nr_hugepages"),
        free=number("free_hugepages"),
        reserved=number("resv_hugepages"),
        surplus=number("surplus_hugepages"),
        mounts=tuple(point for point, served in mounts.items() if served == size),
    )


def _write_pool(size: int, count: int) -> None:
    path = SYSFS / f"hugepages-{size}kB" / "nr_hugepages"
    try:
        path.write_text(f"{count}\n")
    except PermissionError:
        raise PermissionError(
            errno.EACCES,
            f"reserving hugepages needs root: {path} is not writable by uid {os.geteuid()}",
        ) from None
    except OSError as exc:
        raise HugepagesError(f"writing {count} to {path} failed: {exc.strerror}") from None


def _meminfo() -> dict[str, int]:
    """/proc/meminfo values in KiB (counts as they are)."""
    found: dict[str, int] = {}
    for line in MEMINFO.read_text().splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            found[name] = int(parts[0])
    return found


def _parse_size(text: str) -> int | None:
    match = re.fullmatch(r"(\d+)([KMG]?)", text.upper().removesuffix("B"))
    return None if match is None else int(match.group(1)) * _UNITS[match.group(2)]


def _unescape(field: str) -> str:
    """/proc/mounts writes space, tab, newline and backslash as octal escapes."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _libc_call(name: str, *args: object, what: str) -> None:
    """mount(2) or umount(2), with errno turned into PermissionError or HugepagesError."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    function = getattr(libc, name)
    function.restype = ctypes.c_int
    function.argtypes = _ARGTYPES[name]
    if function(*args) != 0:
        code = ctypes.get_errno()
        if code in (errno.EPERM, errno.EACCES):
            raise PermissionError(code, f"{what} needs root (CAP_SYS_ADMIN)")
        raise HugepagesError(f"{what} failed: {os.strerror(code)}")


_ARGTYPES = {
    "mount": [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p],
    "umount": [ctypes.c_char_p],
}
