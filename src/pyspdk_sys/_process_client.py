"""The wire to an SPDK process: SPDK's official client, a pool of its connections, and
a monitor thread per process.

The official client blocks in recv() for up to its timeout, measured in CPU
time, not wall time; so a call's wall-clock deadline, and the death of the
process, are enforced from outside: the monitor shuts the call's socket down,
and the client's recv() returns at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

from ._process_log import first_line
from ._sockets import lock_is_held
from .errors import ProcessError

TICK = 0.05  # how often the monitor looks at deadlines and liveness (seconds)
_POOL_MAX = 4


class NotListening(ProcessError):
    """The socket exists but nobody accepts yet (start() retries)."""


# ------------------------------------------------------------------ client pool


class ClientPool:
    """Idle connections of SPDK's official client, at most _POOL_MAX."""

    def __init__(self) -> None:
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        self._closed = False

    def take(
        self, path: str, method: str, alive: Callable[[], bool], gone: Callable[[str], Exception]
    ) -> Any:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return connect(path, method, alive, gone)

    def give_back(self, client: Any, reusable: bool) -> None:
        if reusable:
            with self._lock:
                if not self._closed and len(self._idle) < _POOL_MAX:
                    self._idle.append(client)
                    return
        _close_client(client)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for client in idle:
            _close_client(client)


def official_client() -> tuple[Any, type[Exception]]:
    """SPDK's JSONRPCClient and JSONRPCException (the spdk package), or ProcessError."""
    try:
        from spdk.rpc.client import (
            JSONRPCClient,
            JSONRPCException,
        )
    except ImportError:
        raise ProcessError(
            "SPDK's official client is not installed: pip install 'spdk==26.1.*' "
            "(the package's 'process' extra)"
        ) from None
    return JSONRPCClient, JSONRPCException


def connect(
    path: str, method: str, alive: Callable[[], bool], gone: Callable[[str], Exception]
) -> Any:
    """A JSONRPCClient connected to `path`, without the log handler it adds per instance.

    alive(): whether the process still runs; gone(method): the error when it does not.
    """
    JSONRPCClient, JSONRPCException = official_client()
    logger = logging.getLogger(f"JSONRPCClient({path})")
    before = list(logger.handlers)
    try:
        # A generous CPU-time timeout: the monitor enforces the wall-clock deadline.
        client = JSONRPCClient(path, timeout=24 * 3600.0)
    except JSONRPCException as exc:
        if not alive():
            raise gone(method) from None
        # The client wraps the socket error it caught: refused or no socket yet.
        if isinstance(exc.__context__, ConnectionRefusedError) or not os.path.exists(path):
            raise NotListening(f"{method}: nothing listens on {path}") from None
        raise ProcessError(f"{method}: cannot connect to {path}: {first_line(exc)}") from None
    finally:
        for handler in logger.handlers:
            if handler not in before:
                logger.removeHandler(handler)
    return client


def _close_client(client: Any) -> None:
    sock = getattr(client, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.close()
        client.sock = None


# ------------------------------------------------------------------ monitor


class Monitor:
    """One thread per process: reaps it, and wakes calls whose deadline passed or whose
    process died by shutting their sockets down (the official client then returns)."""

    def __init__(
        self, popen: subprocess.Popen[bytes] | None, rpc_socket: str | None, pid: int | None
    ) -> None:
        """popen: the process if this program started it; else its liveness is its
        socket's lock."""
        self._popen = popen
        self._socket = rpc_socket
        self._cond = threading.Condition()
        self._calls: dict[int, tuple[Any, float, bool]] = {}
        self._ids = 0
        self._closed = False
        self.exited = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"pyspdk-watch-{pid}", daemon=True)
        self._thread.start()

    def watch(self, client: Any, deadline: float) -> int:
        with self._cond:
            self._ids += 1
            self._calls[self._ids] = (client, deadline, False)
            if self.exited.is_set() or self._closed:
                self._expire_all()
            return self._ids

    def unwatch(self, token: int) -> bool:
        """Forget a call; True when its socket was shut down because its deadline passed."""
        with self._cond:
            entry = self._calls.pop(token, None)
        return entry is not None and entry[2]

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._expire_all()
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(5.0)

    def _expire_all(self) -> None:
        for token, (client, deadline, expired) in list(self._calls.items()):
            _shutdown(client)
            self._calls[token] = (client, deadline, expired)

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._closed:
                    return
                now = time.monotonic()
                for token, (client, deadline, expired) in list(self._calls.items()):
                    if not expired and now >= deadline:
                        _shutdown(client)
                        self._calls[token] = (client, deadline, True)
            if self._popen is not None:
                try:
                    self._popen.wait(TICK)
                except subprocess.TimeoutExpired:
                    continue
                self.exited.set()
                with self._cond:
                    self._expire_all()  # later calls: watch() sees exited
                return
            alive = self._socket is not None and lock_is_held(self._socket + ".lock")
            with self._cond:
                if not alive:
                    # Gone for good: stop probing, so that a new application taking
                    # this socket never meets our momentary probe of its lock.
                    self.exited.set()
                    self._expire_all()
                    return
                self._cond.wait(TICK)


def _shutdown(client: Any) -> None:
    sock = getattr(client, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(2)  # SHUT_RDWR: a recv() waiting on it returns at once
