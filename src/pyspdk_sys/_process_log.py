"""Reading an SPDK process's log: its last lines, and why it did not start."""

from __future__ import annotations

import os
import re
import signal

_TAIL_BYTES = 64 * 1024


def tail(path: str | None, lines: int) -> str:
    if path is None:
        return ""
    try:
        with open(path, "rb") as log:
            log.seek(0, os.SEEK_END)
            size = log.tell()
            log.seek(max(size - _TAIL_BYTES, 0))
            data = log.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace").rstrip("\n")
    return "\n".join(text.splitlines()[-lines:])


def log_size(path: str | None) -> int:
    """Where the log ends now (0 when there is none): the start of a call's lines."""
    if path is None:
        return 0
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def read_from(path: str | None, offset: int, limit: int = _TAIL_BYTES) -> str:
    """The log from `offset` on (its last `limit` bytes at most), '' when there is none."""
    if path is None:
        return ""
    try:
        with open(path, "rb") as log:
            log.seek(0, os.SEEK_END)
            offset = max(offset, log.tell() - limit)
            log.seek(offset)
            data = log.read()
    except OSError:
        return ""
    return data.decode("utf-8", errors="replace")


def describe_status(returncode: int | None) -> str:
    if returncode is None:
        return "is running"
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with status {returncode}"


def first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "message", "") or exc or type(exc).__name__)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


# What an SPDK application's log says when it cannot start, and what that means.
# Checked in order; the first match names the reason.
_DIAGNOSES: tuple[tuple[str, re.Pattern[str], str], ...] = (
    (
        "cpu_mask",
        re.compile(
            r"lcore \d+ unavailable|No valid lcores|invalid coremask|Invalid cpumask|"
            r"Unable to acquire lock on assigned core mask|Cannot create lock on core|"
            r"Unable to parse.*core",
            re.IGNORECASE,
        ),
        "the cpu_mask names a core that does not exist or that another SPDK process holds",
    ),
    (
        "memory",
        re.compile(
            r"Unable to allocate|Could not allocate|Cannot allocate memory|Failed to allocate|"
            r"initialization failed with code: -12|Cannot get hugepage|not enough memory|"
            r"No free .*hugepages|Cannot init memory",
            re.IGNORECASE,
        ),
        "not enough memory: raise mem_size_mb (1024 is a safe minimum with the default "
        "subsystems) or reserve more hugepages",
    ),
    (
        "config",
        re.compile(r"json_config|JSON|Failed to load subsystems", re.IGNORECASE),
        "SPDK rejected the JSON config",
    ),
    (
        "rpc_socket",
        re.compile(r"RPC server|rpc_listen|Address already in use", re.IGNORECASE),
        "the RPC socket could not be opened",
    ),
)


def diagnose(log_text: str) -> tuple[str, str]:
    """(reason, explanation) for an application that ended before it was ready."""
    if "SPDK" not in log_text and "spdk" not in log_text:
        return "not_spdk", "its output never mentions SPDK: is it an SPDK application?"
    for reason, pattern, why in _DIAGNOSES:
        if pattern.search(log_text):
            return reason, why
    return "exited", "see the log's last lines below"
