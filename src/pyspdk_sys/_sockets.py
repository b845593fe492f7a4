"""RPC socket paths: never let SPDK delete or replace a file that is not a stale SPDK socket.

SPDK's RPC server takes `<path>.lock` with flock, then unlinks whatever is at
`<path>` before it binds, and unlinks both when it stops. So a path naming a
regular file, or another program's live socket, would be destroyed. Every
path the package hands SPDK as a socket goes through check_rpc_socket first.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import stat
import time

from ._checks import check_socket_path


def lock_is_held(lock: str | os.PathLike[str]) -> bool:
    """Whether some process holds SPDK's flock on `lock` (a missing file: no)."""
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def socket_accepts(path: str) -> bool:
    """Whether a program listens on the Unix socket at `path`."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except OSError as exc:
        return exc.errno not in (errno.ECONNREFUSED, errno.ENOENT)
    else:
        return True
    finally:
        probe.close()


def check_rpc_socket(path: str | os.PathLike[str], what: str = "rpc_socket") -> str:
    """The path as text, if SPDK may listen there; ValueError naming the problem if not.

    Accepted: nothing at the path, or a stale SPDK socket (no process holds its
    lock and nothing listens). Refused: a non-socket file, a live socket of any
    program, a lock file held by another process or that is not an empty file.
    """
    text = check_socket_path(what, path)
    lock = text + ".lock"
    if lock_is_held(lock):
        raise ValueError(f"{what} {text!r} is in use by another SPDK process (its lock is held)")
    try:
        mode = os.lstat(text).st_mode
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(mode):
            raise ValueError(
                f"{what} {text!r} exists and is not a socket: SPDK would delete it; "
                "choose another path"
            )
        if socket_accepts(text):
            raise ValueError(f"{what} {text!r} is a live socket of another program")
    try:
        info = os.lstat(lock)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISREG(info.st_mode) or info.st_size != 0:
            raise ValueError(
                f"{lock!r} exists and is not an SPDK lock file (an empty regular file): "
                "SPDK would take it over and delete it; choose another path"
            )
    return text


def receive_exactly(sock: socket.socket, size: int, deadline: float) -> bytes:
    """`size` bytes from a peer before `deadline` (time.monotonic()): TimeoutError when it
    is too slow, ConnectionResetError when it hangs up first. For probing peers that must
    not hold a caller (or SPDK's thread) for ever."""
    data = b""
    while len(data) < size:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        sock.settimeout(left)
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionResetError
        data += chunk
    return data


def remove_stale_socket(path: str) -> bool:
    """Remove a stale SPDK socket and its lock; False, removing nothing, if in use or foreign."""
    try:
        check_rpc_socket(path)
    except ValueError:
        return False
    for leftover in (path, path + ".lock"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(leftover)
    return True


def lock_owner(lock: str) -> int | None:
    """The pid holding a flock on `lock`, read from /proc/locks (None when unknown)."""
    try:
        info = os.stat(lock)
        with open("/proc/locks") as locks:
            table = locks.read()
    except OSError:
        return None
    wanted = (os.major(info.st_dev), os.minor(info.st_dev), info.st_ino)
    for line in table.splitlines():
        fields = line.split()
        if len(fields) < 6 or fields[1] != "FLOCK":
            continue
        with contextlib.suppress(ValueError):
            major, minor, inode = fields[5].split(":")
            if (int(major, 16), int(minor, 16), int(inode)) == wanted:
                return int(fields[4])
    return None
