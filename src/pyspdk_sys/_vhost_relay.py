"""A relay for vhost-user's control channel that no target can stall.

SPDK's virtio-user initiator waits for each reply with a blocking recv()
on SPDK's thread. attach() probes the target first, but a target can answer
the probe and stall later (on GET_QUEUE_NUM, GET_CONFIG, GET_VRING_BASE),
and then SPDK's thread would wait for ever. So SPDK connects to this relay
instead, and the relay, on a thread of its own, passes every message on
(with the file descriptors it carries) and waits for each reply with a
deadline. A target that misses one loses its connection: the relay closes
SPDK's side, SPDK's recv() returns, the attach fails (or, later, that
request fails), and SPDK's thread goes on.

Only control messages cross the relay; I/O goes through shared memory and
eventfds, as without it. The relay lives as long as the connection: SPDK
closing its side (detach) ends it.
"""

from __future__ import annotations

import array
import logging
import os
import select
import shutil
import socket
import struct
import tempfile
import threading
import time

__all__ = ["Relay"]

log = logging.getLogger(__name__)

_HEADER = struct.Struct("<III")  # request, flags, size
_REPLY = 0x4
# The requests SPDK's virtio-user waits for a reply to (lib/virtio/virtio_vhost_user.c).
_WANTS_REPLY = {1: "GET_FEATURES", 11: "GET_VRING_BASE", 15: "GET_PROTOCOL_FEATURES",
                17: "GET_QUEUE_NUM", 24: "GET_CONFIG"}  # fmt: skip
_MAX_PAYLOAD = 1 << 16  # far above any vhost-user message SPDK sends or reads
_MAX_FDS = 8  # VHOST_USER_MEMORY_MAX_NREGIONS
_FDS_SPACE = socket.CMSG_SPACE(_MAX_FDS * array.array("i").itemsize)


class Relay:
    """One initiator connection: SPDK connects to `path`, the relay to `target`."""

    def __init__(self, target: str, reply_seconds: float) -> None:
        self.target = target
        self.reply_seconds = reply_seconds
        self.failure: str | None = None  # why the relay cut the connection, if it did
        self._dir = tempfile.mkdtemp(prefix="pyspdk-vrelay-")
        self.path = os.path.join(self._dir, "relay.sock")
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(self.path)
        self._listener.listen(1)
        self._stop_r, self._stop_w = os.pipe()
        self._pipe_lock = threading.Lock()  # the pipe closes once; abandon() never writes after
        self._pipe_open = True
        self._thread = threading.Thread(target=self._run, name="pyspdk-vhost-relay", daemon=True)
        self._thread.start()

    def abandon(self) -> None:
        """The attach failed or never connected: end the relay now."""
        with self._pipe_lock:
            if self._pipe_open:
                os.write(self._stop_w, b"x")
        self._thread.join(10)

    # ------------------------------------------------------------ the relay thread

    def _run(self) -> None:
        front = back = None
        try:
            ready, _, _ = select.select([self._listener.fileno(), self._stop_r], [], [])
            if self._stop_r in ready:
                return
            front, _ = self._listener.accept()
            self._listener.close()
            back = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            # Every wait on the target is bounded: a header, a payload, a send.
            back.settimeout(self.reply_seconds)
            back.connect(self.target)
            self._relay(front, back)
        except OSError as exc:
            self.failure = f"the relay to {self.target} failed: {exc}"
        finally:
            for sock in (front, back, self._listener):
                if sock is not None:
                    sock.close()
            with self._pipe_lock:
                self._pipe_open = False
                os.close(self._stop_r)
                os.close(self._stop_w)
            shutil.rmtree(self._dir, ignore_errors=True)
            if self.failure:
                log.warning("pyspdk_sys: vhost-user: %s", self.failure)

    def _relay(self, front: socket.socket, back: socket.socket) -> None:
        waiting: tuple[str, float] | None = None  # (the request, its deadline)
        while True:
            timeout = None if waiting is None else max(0.0, waiting[1] - time.monotonic())
            ready, _, _ = select.select(
                [front.fileno(), back.fileno(), self._stop_r], [], [], timeout
            )
            if self._stop_r in ready:
                return
            if not ready:
                assert waiting is not None
                self.failure = (
                    f"the vhost target at {self.target} did not answer VHOST_USER_{waiting[0]} "
                    f"within {self.reply_seconds:g} s: the connection was closed so that "
                    "SPDK's thread, which waits for that answer, goes on"
                )
                return
            if front.fileno() in ready:
                message = _receive(front, self.target, take_fds=True)
                if message is None:
                    return  # SPDK closed its side: detached
                data, fds = message
                try:
                    _send(back, data, fds)
                finally:
                    for fd in fds:
                        os.close(fd)
                request = _HEADER.unpack_from(data)[0]
                if request in _WANTS_REPLY:
                    waiting = (_WANTS_REPLY[request], time.monotonic() + self.reply_seconds)
            if back.fileno() in ready:
                message = _receive(back, self.target, take_fds=False)
                if message is None:
                    self.failure = f"the vhost target at {self.target} closed the connection"
                    return
                front.sendall(message[0])
                if _HEADER.unpack_from(message[0])[1] & _REPLY:
                    waiting = None


def _receive(sock: socket.socket, target: str, take_fds: bool) -> tuple[bytes, list[int]] | None:
    """One whole message (header, payload) and the fds it carried; None at the end."""
    header, ancillary, _, _ = sock.recvmsg(_HEADER.size, _FDS_SPACE if take_fds else 0)
    fds: list[int] = []
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            got = array.array("i")
            got.frombytes(payload[: len(payload) - len(payload) % got.itemsize])
            fds.extend(got)
    if not header:
        return None
    try:
        while len(header) < _HEADER.size:
            more = sock.recv(_HEADER.size - len(header))
            if not more:
                raise OSError(f"a message from {target} ended inside its header")
            header += more
        size = _HEADER.unpack(header)[2]
        if size > _MAX_PAYLOAD:
            raise OSError(f"a vhost-user message of {size} bytes (at most {_MAX_PAYLOAD})")
        payload = b""
        while len(payload) < size:
            more = sock.recv(size - len(payload))
            if not more:
                raise OSError(f"a message from {target} ended inside its payload")
            payload += more
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return header + payload, fds


def _send(sock: socket.socket, data: bytes, fds: list[int]) -> None:
    ancillary = []
    if fds:
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]
    sent = sock.sendmsg([data], ancillary)
    if sent < len(data):
        sock.sendall(data[sent:])
