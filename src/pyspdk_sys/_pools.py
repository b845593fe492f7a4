"""The built-in default configuration of a Runtime: pools sized for a program, not a server.

SPDK sizes its pools for a dedicated storage target: the iSCSI target's for
128 sessions, 65535 bdev_io structures. Creating a pool writes a header into
every object, so that memory is resident even when nothing uses it: about 180
MiB of an idle Runtime. A Runtime therefore starts with smaller pools, which
still let every module register and initialise, and below 1024 MiB of memory
it shrinks the iobuf pools to fit.

A method that the caller's own config calls replaces the default entry for
that method whole: SPDK's defaults then fill what the caller leaves out.
"""

from __future__ import annotations

from typing import Any

# (subsystem, method, params). iSCSI for 16 sessions, its pools sized as SPDK
# sizes them for that many; bdev_io for a few thousand I/Os in flight per core.
_LEAN: tuple[tuple[str, str, dict[str, int]], ...] = (
    (
        "iscsi",
        "iscsi_set_options",
        {
            "max_sessions": 16,
            "pdu_pool_size": 16 * 288,
            "immediate_data_pool_size": 16 * 128,
            "data_out_pool_size": 16 * 16,
        },
    ),
    ("bdev", "bdev_set_options", {"bdev_io_pool_size": 16383}),
)

# Below 1024 MiB, SPDK's iobuf pools (64 MiB of small and 132 MiB of large
# buffers) do not fit beside the rest: (at least this many MiB, small, large).
_IOBUF_BY_MEMORY: tuple[tuple[int, int, int], ...] = (
    (1024, 0, 0),  # SPDK's own sizes
    (512, 2048, 256),
    (0, 1024, 128),
)

# The least memory a Runtime with these defaults starts in, on both releases.
SMALLEST_MEM_SIZE_MB = 256


def default_entries(mem_size_mb: int) -> list[tuple[str, str, dict[str, int]]]:
    """The default (subsystem, method, params) entries for a Runtime of this much memory."""
    entries = [(subsystem, method, dict(params)) for subsystem, method, params in _LEAN]
    for floor, small, large in _IOBUF_BY_MEMORY:
        if mem_size_mb >= floor:
            if small:
                entries.append(
                    (
                        "iobuf",
                        "iobuf_set_options",
                        {"small_pool_count": small, "large_pool_count": large},
                    )
                )
            break
    return entries


def with_defaults(config: dict[str, Any] | None, mem_size_mb: int) -> dict[str, Any]:
    """`config` (JSON-ready, or None) plus every default entry it does not override."""
    merged: dict[str, Any] = dict(config or {})
    subsystems: list[dict[str, Any]] = [dict(s) for s in merged.get("subsystems", [])]
    called = {
        entry.get("method")
        for subsystem in subsystems
        for entry in subsystem.get("config") or []
        if isinstance(entry, dict)
    }
    by_name = {s.get("subsystem"): s for s in subsystems}
    for name, method, params in default_entries(mem_size_mb):
        if method in called:
            continue
        entry = {"method": method, "params": params}
        if name in by_name:
            target = by_name[name]
            target["config"] = [entry, *(target.get("config") or [])]
        else:
            by_name[name] = {"subsystem": name, "config": [entry]}
            subsystems.append(by_name[name])
    merged["subsystems"] = subsystems
    return merged
