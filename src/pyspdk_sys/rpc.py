"""Call any SPDK JSON-RPC method from Python, in the process that runs SPDK.

Why a socket at all: SPDK's dispatcher (lib/rpc/rpc.c) keeps its method table
and request handler static, and the JSON-RPC server that parses requests
(lib/jsonrpc/) reaches it only through a listening socket. A truly
socket-less path would need SPDK's private structures, so this module uses
the public API instead: on first use it opens an extra, private RPC server
with spdk_rpc_server_listen() on a Unix socket in a fresh directory of mode
0700 (other users cannot reach it; processes of the same user can, as with
any socket of theirs), polled every millisecond on the app thread. Requests
then go through exactly the parser, dispatcher, allow-list and state checks
that serve spdk_tgt's socket, whether or not the Runtime has a public
rpc_socket. The server closes, and its directory goes, when the runtime stops.

Arguments are checked in Python first, against the limits of SPDK's server
(lib/jsonrpc/jsonrpc_internal.h, lib/json/json_parse.c): a request it could
not read would close the connection without an answer.

Methods do what they do in spdk_tgt: `spdk_kill_instance`, for example,
sends the signal to this process.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import json
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Mapping
from typing import Any, NoReturn

from . import _jsonrpc
from ._binding import JSONRPC_REQUEST_MAX_BYTES, JSONRPC_REQUEST_MAX_VALUES, ffi, lib
from ._checks import SUN_PATH_MAX, check_seconds
from ._jsonrpc import RequestLimits
from ._resource import Resource, Stage
from .errors import RuntimeStateError, SpdkError, rpc_result
from .log import capture
from .runtime import Runtime, State, provide

__all__ = [
    "REQUEST_MAX_BYTES",
    "REQUEST_MAX_VALUES",
    "LocalRpc",
    "encode_request",
    "rpc_for",
]

# Limits of SPDK's JSON-RPC server, of the release compiled against (v26.01: 32 KiB and
# 1024 values; v26.05: 256 KiB and 8192).
REQUEST_MAX_BYTES = JSONRPC_REQUEST_MAX_BYTES  # SPDK_JSONRPC_RECV_BUF_SIZE: longer is never read
REQUEST_MAX_VALUES = JSONRPC_REQUEST_MAX_VALUES  # SPDK_JSONRPC_MAX_VALUES: values, names included
LOCAL_LIMITS = RequestLimits(REQUEST_MAX_BYTES, REQUEST_MAX_VALUES)
RESPONSE_MAX_BYTES = 32 * 1024 * 1024 + 1  # SPDK_JSONRPC_SEND_BUF_SIZE_MAX, and "\n"

_SOCKET_NAME = "rpc.sock"
_POOL_MAX = 8
_RECV_CHUNK = 256 * 1024


class LocalRpc(Resource):
    """SPDK's JSON-RPC methods for one Runtime, through a private server in this process.

    Any number of Python threads may call at once. Not from the SPDK thread:
    the reactor that would answer is the one that would wait.
    """

    def __init__(self, runtime: Runtime) -> None:
        if not isinstance(runtime, Runtime):
            raise TypeError(f"LocalRpc needs a Runtime, not {type(runtime).__name__}")
        self._runtime = runtime
        self._start_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._ids_lock = threading.Lock()
        # Touched on the SPDK thread only (_listen, _close_on_spdk_thread).
        self._server: Any = None
        self._poller: Any = None
        self._dir: str | None = None
        # Published by _listen; read by callers once it is set.
        self._path: str | None = None
        self._closed = False
        self._pool: list[socket.socket] = []
        self._pool_lock = threading.Lock()

    @property
    def socket_path(self) -> str | None:
        """The private server's socket, once the first call opened it (None before and after)."""
        return None if self._closed else self._path

    # ------------------------------------------------------------ calls

    def call(
        self, method: str, params: Mapping[str, Any] | None = None, timeout: float = 60.0
    ) -> Any:
        """Call `method` and return its JSON result; RpcError if SPDK answers with an error.

        TimeoutError after `timeout` seconds: the request may still run in SPDK.
        An exception carries, as `log`, what SPDK logged while the call ran.
        """
        with capture():
            return self._call(method, params, timeout)

    def _call(self, method: str, params: Mapping[str, Any] | None, timeout: float) -> Any:
        request_id = self._next_id()
        payload = encode_request(method, params, request_id)
        timeout = check_seconds("timeout", timeout)
        self._refuse_spdk_thread("call")
        deadline = time.monotonic() + timeout
        path = self._ensure_started(timeout)
        # In interrupt mode the server runs only while a call is in flight.
        lib.pyspdk_rpc_server_busy(1)
        try:
            sock = self._take_connection(path, method, deadline, timeout)
            reusable = False
            try:
                reply, clean = self._exchange(sock, payload, method, deadline, timeout)
                reusable = clean and isinstance(reply, dict) and reply.get("id") == request_id
            finally:
                self._give_back(sock, reusable)
        finally:
            lib.pyspdk_rpc_server_busy(-1)
        return rpc_result(method, request_id, reply)

    async def acall(
        self, method: str, params: Mapping[str, Any] | None = None, timeout: float = 60.0
    ) -> Any:
        """Awaitable form of call(), for asyncio programs: one connection per call."""
        with capture():
            return await self._acall(method, params, timeout)

    async def _acall(self, method: str, params: Mapping[str, Any] | None, timeout: float) -> Any:
        request_id = self._next_id()
        payload = encode_request(method, params, request_id)
        timeout = check_seconds("timeout", timeout)
        self._refuse_spdk_thread("acall")
        self._check_running()
        deadline = time.monotonic() + timeout
        path = self._path
        if path is None or self._closed:
            # The first call waits for the SPDK thread: not on the event loop.
            path = await asyncio.get_running_loop().run_in_executor(
                None, self._ensure_started, timeout
            )
        lib.pyspdk_rpc_server_busy(1)
        try:
            reply = await asyncio.wait_for(
                self._aexchange(path, payload, method), max(deadline - time.monotonic(), 0)
            )
        except asyncio.TimeoutError:
            raise _timeout(method, timeout) from None
        finally:
            lib.pyspdk_rpc_server_busy(-1)
        return rpc_result(method, request_id, reply)

    # ------------------------------------------------------------ checks

    def _next_id(self) -> int:
        with self._ids_lock:
            return next(self._ids)

    def _refuse_spdk_thread(self, name: str) -> None:
        if self._runtime.on_spdk_thread():
            raise RuntimeStateError(
                f"LocalRpc.{name}() on the SPDK thread would deadlock: the reactor that must "
                "answer the request would be the one waiting for it. Call it from another "
                "thread, hand the work to one with runtime.submit(), or use acall() in an "
                "asyncio loop on another thread."
            )

    def _check_running(self) -> None:
        if self._closed:
            raise RuntimeStateError(
                "the SPDK runtime has stopped and its private RPC server is closed"
            )
        state = self._runtime.state
        if state is not State.RUNNING:
            raise RuntimeStateError(f"the SPDK runtime is {state.value}: RPC calls need it running")

    # ------------------------------------------------------------ server (SPDK thread)

    def _ensure_started(self, timeout: float) -> str:
        """The socket path, opening the private server on first use."""
        self._check_running()
        path = self._path
        if path is not None:
            return path
        with self._start_lock:
            self._check_running()
            if self._path is None:
                try:
                    self._runtime.call(self._listen, timeout=timeout)
                except concurrent.futures.TimeoutError:
                    raise TimeoutError(
                        f"the SPDK thread did not open the private RPC server within {timeout} s"
                    ) from None
            if self._path is None:
                raise RuntimeStateError("the SPDK runtime stopped before its RPC server opened")
            return self._path

    def _listen(self) -> None:
        """On the SPDK thread: open the server, start its poller, close it at stop."""
        if self._closed or self._path is not None:
            return
        directory = _private_dir()
        path = os.path.join(directory, _SOCKET_NAME)
        server = lib.spdk_rpc_server_listen(path.encode())
        if server == ffi.NULL:
            shutil.rmtree(directory, ignore_errors=True)
            raise SpdkError(
                f"spdk_rpc_server_listen({path!r}) failed: SPDK could not open the private "
                "RPC server; its log (the exception's `log`) says why"
            )
        poller = lib.pyspdk_rpc_server_poller_register(server)
        if poller == ffi.NULL:
            lib.spdk_rpc_server_close(server)
            shutil.rmtree(directory, ignore_errors=True)
            raise SpdkError("could not register the private RPC server's poller (out of memory?)")
        self._server, self._poller, self._dir = server, poller, directory
        self._adopt(self._runtime)
        self._path = path

    STOP_STAGE = Stage.SERVICES

    def _close_on_spdk_thread(self) -> None:
        """Stop hook: close the server and remove its directory. Safe to repeat."""
        self._closed = True
        if self._poller is not None:
            lib.pyspdk_rpc_server_poller_unregister(ffi.new("struct spdk_poller **", self._poller))
            self._poller = None
        if self._server is not None:
            # Requests SPDK still runs answer into nothing: it drops them.
            lib.spdk_rpc_server_close(self._server)
            self._server = None
        with self._pool_lock:
            idle, self._pool = self._pool, []
        for sock in idle:
            sock.close()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    # ------------------------------------------------------------ client side

    def _take_connection(
        self, path: str, method: str, deadline: float, timeout: float
    ) -> socket.socket:
        with self._pool_lock:
            if self._pool:
                return self._pool.pop()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(_left(deadline, method, timeout))
            sock.connect(path)
        except TimeoutError:
            sock.close()
            raise _timeout(method, timeout) from None
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            self._check_running()
            raise
        except BaseException:
            sock.close()
            raise
        return sock

    def _give_back(self, sock: socket.socket, reusable: bool) -> None:
        if reusable:
            with self._pool_lock:
                if not self._closed and len(self._pool) < _POOL_MAX:
                    self._pool.append(sock)
                    return
        sock.close()

    def _exchange(
        self, sock: socket.socket, payload: bytes, method: str, deadline: float, timeout: float
    ) -> tuple[Any, bool]:
        """Send one request and read its answer: (reply, connection still usable)."""
        reader = _ReplyReader()
        try:
            sock.settimeout(_left(deadline, method, timeout))
            sock.sendall(payload)
            while True:
                sock.settimeout(_left(deadline, method, timeout))
                chunk = sock.recv(_RECV_CHUNK)
                if not chunk:
                    self._lost(method)
                reply = reader.feed(chunk)
                if reply is not None:
                    return reply, reader.clean
        except TimeoutError:
            raise _timeout(method, timeout) from None
        except (BrokenPipeError, ConnectionResetError):
            self._lost(method)

    async def _aexchange(self, path: str, payload: bytes, method: str) -> Any:
        try:
            reader, writer = await asyncio.open_unix_connection(path)
        except (FileNotFoundError, ConnectionRefusedError):
            self._check_running()
            raise
        try:
            writer.write(payload)
            await writer.drain()
            parser = _ReplyReader()
            while True:
                chunk = await reader.read(_RECV_CHUNK)
                if not chunk:
                    self._lost(method)
                reply = parser.feed(chunk)
                if reply is not None:
                    return reply
        except (BrokenPipeError, ConnectionResetError):
            self._lost(method)
        finally:
            writer.close()

    def _lost(self, method: str) -> NoReturn:
        """The server closed the connection before answering: why, as an exception."""
        if self._closed or self._runtime.state is not State.RUNNING:
            raise RuntimeStateError(f"{method}: the SPDK runtime stopped before it answered")
        raise SpdkError(f"{method}: SPDK's RPC server closed the connection without an answer")


def rpc_for(runtime: Runtime) -> LocalRpc:
    """The one LocalRpc of `runtime`, created on first use (what Runtime.rpc uses)."""
    if not isinstance(runtime, Runtime):
        raise TypeError(f"rpc_for needs a Runtime, not {type(runtime).__name__}")
    return runtime.service(LocalRpc, LocalRpc)


# ------------------------------------------------------------------ requests


def _private_dir() -> str:
    """A new 0700 directory whose socket path fits in sun_path."""
    room = SUN_PATH_MAX - len("/pyspdk-rpc-XXXXXXXX/") - len(_SOCKET_NAME + ".lock")
    base = tempfile.gettempdir()
    if len(os.fsencode(base)) > room:
        base = "/tmp"
    return tempfile.mkdtemp(prefix="pyspdk-rpc-", dir=base)


# ------------------------------------------------------------------ replies


class _ReplyReader:
    """Collects one reply. SPDK ends each with "\\n" and escapes newlines inside it."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self.clean = True

    def feed(self, chunk: bytes) -> Any:
        """The decoded reply once complete, else None."""
        self._buf += chunk
        if len(self._buf) > RESPONSE_MAX_BYTES:
            raise SpdkError(f"SPDK's reply exceeds {RESPONSE_MAX_BYTES} bytes without ending")
        if not chunk.endswith(b"\n"):
            return None
        text = self._buf.decode("utf-8", errors="replace")
        try:
            reply, end = json.JSONDecoder().raw_decode(text, len(text) - len(text.lstrip()))
        except ValueError:
            return None  # not the end yet
        # Anything after the reply would belong to no request: do not reuse the connection.
        self.clean = not text[end:].strip()
        return reply


def _left(deadline: float, method: str, timeout: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise _timeout(method, timeout)
    return left


def encode_request(method: str, params: Mapping[str, Any] | None, request_id: int) -> bytes:
    """The request as this client sends it, against the limits of the release compiled
    against; TypeError/ValueError naming what SPDK's server could not read."""
    return _jsonrpc.encode_request(method, params, request_id, LOCAL_LIMITS)


def _timeout(method: str, timeout: float) -> TimeoutError:
    return TimeoutError(
        f"{method}: no answer from SPDK within {timeout} s (the request may still run)"
    )


provide("rpc", rpc_for)
