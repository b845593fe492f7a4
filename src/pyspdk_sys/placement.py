"""Which cores other SPDK processes hold, so that two do not share one by accident.

An SPDK application that claims its cores (spdk_tgt, bdevperf, without
--disable-cpumask-locks) holds a POSIX write lock on /var/tmp/spdk_cpu_lock_NNN
for each core it runs a reactor on. A reactor polls without sleeping: two on
one core crawl. Runtime and SpdkProcess read those locks before they start and
warn (CoreSharingWarning) when a chosen core is already held by another
process. A Runtime does not take the locks itself: other programs on the
machine, the test suite's spdk_tgt runs among them, start on its core by
design, and an SPDK application that finds a lock refuses to start.
"""

from __future__ import annotations

import os
import warnings

from ._checks import parse_cpu_mask

LOCK_PATH = "/var/tmp/spdk_cpu_lock_{:03d}"

__all__ = ["CoreSharingWarning", "all_held_cores", "cores_of", "held_cores", "warn_if_held"]


class CoreSharingWarning(UserWarning):
    """A core chosen for a reactor is already held by another SPDK process."""


def cores_of(mask: str) -> list[int]:
    """The cores of an SPDK CPU mask: '0x5' -> [0, 2]; '[0,2-3]' -> [0, 2, 3]."""
    return list(parse_cpu_mask("CPU mask", mask))


def _posix_lock_holders() -> dict[tuple[int, int, int], int]:
    """(major, minor, inode) -> pid for every POSIX lock in /proc/locks."""
    try:
        with open("/proc/locks") as table:
            lines = table.read().splitlines()
    except OSError:
        return {}
    found = {}
    for line in lines:
        fields = line.split()
        # "1: POSIX  ADVISORY  WRITE 1234 00:2a:5678 0 EOF"; "->" marks waiters
        if "->" in fields or len(fields) < 6 or fields[1] not in ("POSIX", "OFDLCK"):
            continue
        try:
            major, minor, inode = fields[5].split(":")
            found[(int(major, 16), int(minor, 16), int(inode))] = int(fields[4])
        except ValueError:
            continue
    return found


def held_cores(mask: str) -> dict[int, int]:
    """Core -> pid for each core of `mask` whose SPDK lock another process holds."""
    holders = None
    held = {}
    for core in cores_of(mask):
        try:
            info = os.stat(LOCK_PATH.format(core))
        except OSError:
            continue
        if holders is None:
            holders = _posix_lock_holders()
        pid = holders.get((os.major(info.st_dev), os.minor(info.st_dev), info.st_ino))
        if pid is not None and pid != os.getpid():
            held[core] = pid
    return held


def all_held_cores() -> dict[int, int]:
    """Core -> pid for every core whose SPDK lock another process holds now."""
    prefix = LOCK_PATH.format(0)[:-3]
    directory, _, stem = prefix.rpartition("/")
    try:
        names = os.listdir(directory)
    except OSError:
        return {}
    cores = [
        int(name[len(stem) :])
        for name in names
        if name.startswith(stem) and name[len(stem) :].isdigit()
    ]
    if not cores:
        return {}
    return held_cores(f"[{','.join(map(str, cores))}]")


def warn_if_held(mask: str, who: str, stacklevel: int = 3) -> dict[int, int]:
    """Warn (CoreSharingWarning) when a core of `mask` is held; return what is held."""
    held = held_cores(mask)
    if held:
        taken = ", ".join(f"core {core} by pid {pid}" for core, pid in sorted(held.items()))
        warnings.warn(
            f"{who} puts a reactor on a core another SPDK process holds ({taken}): both "
            "will poll that core and slow each other down; choose other cores with cpu_mask",
            CoreSharingWarning,
            stacklevel=stacklevel,
        )
    return held
