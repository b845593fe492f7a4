"""LocalRpc: any SPDK JSON-RPC method from Python, in-process, through SPDK's own request path.

The session runtime also listens on a public socket; the official client over
it is the reference: same process, same SPDK state, so the same answers.
Starting and stopping SPDK happens in a child interpreter (SPDK starts once
per process).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import stat
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from timing import time_bound, worst_time

from conftest import run_python, skip_or_fail


@pytest.fixture(scope="module")
def local(runtime: Any) -> Any:
    from pyspdk_sys.rpc import rpc_for

    return rpc_for(runtime)


@pytest.fixture(scope="module")
def public(runtime: Any) -> Iterator[Any]:
    """The official SPDK client on the runtime's public socket."""
    try:
        from spdk.rpc.client import JSONRPCClient
    except ImportError:
        skip_or_fail("the official SPDK client is not installed (pip install 'spdk==26.1.*')")
    client = JSONRPCClient(runtime.rpc_socket)
    yield client
    client.close()


@pytest.fixture
def bdev_name(local: Any) -> Iterator[str]:
    """A unique malloc bdev name; the bdev is deleted afterwards if it still exists."""
    from pyspdk_sys.errors import RpcError

    name = f"LocalRpc{uuid.uuid4().hex[:12]}"
    yield name
    with contextlib.suppress(RpcError):
        local.call("bdev_malloc_delete", {"name": name})


def official_error(public: Any, method: str, params: dict[str, Any]) -> dict[str, Any]:
    """The JSON-RPC error object the official client got (it prints it in its message)."""
    from spdk.rpc.client import JSONRPCException

    with pytest.raises(JSONRPCException) as caught:
        public.call(method, dict(params))
    return json.loads(caught.value.message.split("response:\n", 1)[1])


# ------------------------------------------------------------------ same answers


def test_rpc_get_methods_matches_the_official_client(local: Any, public: Any) -> None:
    ours = local.call("rpc_get_methods")
    assert sorted(ours) == sorted(public.call("rpc_get_methods"))
    assert len(ours) > 200
    assert "bdev_malloc_create" in ours
    with_aliases = local.call("rpc_get_methods", {"include_aliases": True})
    assert sorted(with_aliases) == sorted(public.call("rpc_get_methods", {"include_aliases": True}))


def test_malloc_bdev_created_here_is_seen_everywhere(
    local: Any, public: Any, bdev_name: str
) -> None:
    from pyspdk_sys.errors import RpcError

    created = local.call(
        "bdev_malloc_create", {"name": bdev_name, "num_blocks": 4096, "block_size": 512}
    )
    assert created == bdev_name
    (ours,) = local.call("bdev_get_bdevs", {"name": bdev_name})
    assert (ours["name"], ours["num_blocks"], ours["block_size"]) == (bdev_name, 4096, 512)
    assert ours["product_name"] == "Malloc disk"
    (theirs,) = public.call("bdev_get_bdevs", {"name": bdev_name})
    assert theirs["uuid"] == ours["uuid"]
    assert bdev_name in [b["name"] for b in local.call("bdev_get_bdevs")]

    assert local.call("bdev_malloc_delete", {"name": bdev_name}) is True
    assert bdev_name not in [b["name"] for b in public.call("bdev_get_bdevs")]
    with pytest.raises(RpcError) as gone:
        local.call("bdev_get_bdevs", {"name": bdev_name})
    assert gone.value.code == -19  # -ENODEV
    assert gone.value.method == "bdev_get_bdevs"


# ------------------------------------------------------------------ SPDK's errors


def test_unknown_method_raises_method_not_found(spdk: Any, local: Any, public: Any) -> None:
    from pyspdk_sys.errors import RpcError

    with pytest.raises(RpcError) as caught:
        local.call("no_such_method_here")
    assert caught.value.code == -32601 == spdk.lib.SPDK_JSONRPC_ERROR_METHOD_NOT_FOUND
    assert caught.value.method == "no_such_method_here"
    assert "no_such_method_here" in str(caught.value)
    assert "Method not found" in str(caught.value)
    assert official_error(public, "no_such_method_here", {}) == {
        "code": caught.value.code,
        "message": caught.value.message,
    }


@pytest.mark.parametrize(
    ("method", "params", "code", "message"),
    [
        # A required member missing: the malloc module answers "internal error".
        ("bdev_malloc_create", {"block_size": 512}, -32603, "spdk_json_decode_object failed"),
        # A member of the wrong type: the RPC core answers "invalid params".
        ("rpc_get_methods", {"current": "yes"}, -32602, "Invalid parameters"),
    ],
)
def test_invalid_params_raise_spdks_error(
    local: Any, public: Any, method: str, params: dict[str, Any], code: int, message: str
) -> None:
    from pyspdk_sys.errors import RpcError

    with pytest.raises(RpcError) as caught:
        local.call(method, params)
    assert (caught.value.code, caught.value.message) == (code, message)
    assert official_error(public, method, params) == {"code": code, "message": message}


# ------------------------------------------------------------------ checked in Python


BAD_ARGUMENTS: list[tuple[Any, Any, type[Exception], str]] = [
    (123, None, TypeError, "method must be a str"),
    (None, None, TypeError, "method must be a str"),
    ("", None, ValueError, "not a method name"),
    ("bdev get", None, ValueError, "not a method name"),
    ("bdev_get_bdevs\n", None, ValueError, "not a method name"),
    ("x;y", None, ValueError, "not a method name"),
    ("m\u00e9thode", None, ValueError, "not a method name"),
    ("rpc_get_methods", [1, 2], TypeError, "params must be a mapping"),
    ("rpc_get_methods", "current", TypeError, "params must be a mapping"),
    ("rpc_get_methods", {"a": object()}, ValueError, r"params\['a'\] is of type object"),
    ("rpc_get_methods", {"a": [1, {2, 3}]}, ValueError, r"params\['a'\]\[1\] is of type set"),
    ("rpc_get_methods", {"a": b"raw"}, ValueError, "is of type bytes"),
    ("rpc_get_methods", {"a": float("nan")}, ValueError, "JSON cannot express"),
    ("rpc_get_methods", {"a": float("inf")}, ValueError, "JSON cannot express"),
    ("rpc_get_methods", {1: "x"}, ValueError, "keys are strings"),
    ("rpc_get_methods", {"a": "x\0y"}, ValueError, "NUL"),
    ("rpc_get_methods", {"a\0": 1}, ValueError, "NUL"),
    ("rpc_get_methods", {"a": "\ud800"}, ValueError, "not valid Unicode"),
    ("rpc_get_methods", {"a": [0] * 9000}, ValueError, r"at most (1015|8183)\b"),
    ("rpc_get_methods", {"a": "x" * 300_000}, ValueError, r"at most (32768|262144) bytes"),
]


def cyclic() -> dict[str, Any]:
    loop: dict[str, Any] = {}
    loop["self"] = loop
    return loop


@pytest.mark.parametrize(("method", "params", "error", "match"), BAD_ARGUMENTS)
def test_bad_arguments_are_refused_before_spdk(
    runtime: Any, method: Any, params: Any, error: type[Exception], match: str
) -> None:
    from pyspdk_sys.rpc import LocalRpc

    fresh = LocalRpc(runtime)
    with pytest.raises(error, match=match):
        fresh.call(method, params)
    with pytest.raises(error, match=match):
        asyncio.run(fresh.acall(method, params))
    # Nothing reached SPDK: the private server was never even opened.
    assert fresh.socket_path is None


def test_cycles_and_bad_timeouts_are_refused_before_spdk(runtime: Any) -> None:
    from pyspdk_sys.rpc import LocalRpc

    fresh = LocalRpc(runtime)
    with pytest.raises(ValueError, match=r"nested too deep .* or is a cycle"):
        fresh.call("rpc_get_methods", cyclic())
    for timeout in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="timeout must be a positive number"):
            fresh.call("rpc_get_methods", timeout=timeout)
    with pytest.raises(TypeError, match="timeout must be a number"):
        fresh.call("rpc_get_methods", timeout="1")  # type: ignore[arg-type]
    assert fresh.socket_path is None


def test_arguments_are_checked_before_the_runtime_state(spdk: Any) -> None:
    from pyspdk_sys.errors import RuntimeStateError
    from pyspdk_sys.rpc import LocalRpc
    from pyspdk_sys.runtime import Runtime

    idle = LocalRpc(Runtime())  # never started
    with pytest.raises(ValueError, match="not a method name"):
        idle.call("no good")
    with pytest.raises(RuntimeStateError, match="runtime is new"):
        idle.call("rpc_get_methods")
    with pytest.raises(TypeError, match="needs a Runtime"):
        LocalRpc(object())  # type: ignore[arg-type]


def nested(levels: int) -> Any:
    value: Any = 0
    for _ in range(levels):
        value = [value]
    return value


def padded(size: int) -> dict[str, Any]:
    """Params that make a request (id 1) of exactly `size` bytes."""
    from pyspdk_sys.rpc import encode_request

    base = len(encode_request("rpc_get_methods", {"a": ""}, 1))
    return {"a": "x" * (size - base)}


def raw_exchange(path: str, payload: bytes) -> Any:
    """Send bytes to SPDK's server as they are: its reply, or None if it closed on us."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(path)
        sock.sendall(payload)
        reply = b""
        try:
            while not reply.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    return None
                reply += chunk
        except ConnectionResetError:
            return None
    return json.loads(reply)


def limits() -> dict[str, Any]:
    """SPDK's request limits for the release the module was built against."""
    from pyspdk_sys import lib

    values, size = lib.PYSPDK_JSONRPC_MAX_VALUES, lib.PYSPDK_JSONRPC_RECV_BUF_SIZE
    return {
        # 9 values of envelope + 5 around the list: SPDK reads `values` at most.
        "values": (lambda n: {"a": [0] * n}, values - 9 - 5, f"at most {values - 9}"),
        # The request and params are 2 of SPDK's 64 nesting levels.
        "depth": (lambda n: {"a": nested(n)}, 62, "nested too deep"),
        # SPDK's receive buffer holds `size` bytes.
        "bytes": (padded, size, f"at most {size} bytes"),
    }


@pytest.mark.parametrize("limit", ["bytes", "depth", "values"])
def test_limits_are_exactly_spdks(local: Any, limit: str) -> None:
    """At a limit SPDK reads the request; one past, SPDK would close the connection
    without an answer, so Python refuses it with ValueError instead."""
    from pyspdk_sys.rpc import encode_request

    make, at, message = limits()[limit]
    local.call("spdk_get_version")  # the server is open
    path = local.socket_path
    # At the limit: parsed and dispatched; rpc_get_methods rejects the unknown member.
    payload = encode_request("rpc_get_methods", make(at), 1)
    reply = raw_exchange(path, payload)
    assert reply is not None
    assert reply["error"]["code"] == -32602
    # One past: SPDK drops the connection, and Python never sends it.
    past = make(at + 1)
    with pytest.raises(ValueError, match=message):
        local.call("rpc_get_methods", past)
    request = {"jsonrpc": "2.0", "method": "rpc_get_methods", "id": 1, "params": past}
    assert raw_exchange(path, json.dumps(request, separators=(",", ":")).encode()) is None
    assert local.call("spdk_get_version")  # the server is unharmed


# ------------------------------------------------------------------ threads, asyncio, timeouts


def test_sixteen_threads_at_once(local: Any, bdev_name: str) -> None:
    local.call("bdev_malloc_create", {"name": bdev_name, "num_blocks": 2048, "block_size": 512})
    start = threading.Barrier(16)
    results: list[list[str]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker() -> None:
        try:
            start.wait(timeout=30)
            for _ in range(10):
                names = sorted(b["name"] for b in local.call("bdev_get_bdevs", timeout=30))
                with lock:
                    results.append(names)
        except BaseException as exc:
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert len(results) == 160
    assert all(names == results[0] for names in results)
    assert bdev_name in results[0]


def test_acall_under_asyncio(local: Any, public: Any) -> None:
    from pyspdk_sys.errors import RpcError

    async def main() -> tuple[Any, list[Any], RpcError]:
        methods = await local.acall("rpc_get_methods")
        versions = await asyncio.gather(*(local.acall("spdk_get_version") for _ in range(20)))
        try:
            await local.acall("no_such_method_here")
        except RpcError as exc:
            return methods, versions, exc
        raise AssertionError("no RpcError")

    methods, versions, error = asyncio.run(main())
    assert sorted(methods) == sorted(public.call("rpc_get_methods"))
    assert all(v == public.call("spdk_get_version") for v in versions)
    assert error.code == -32601


def test_timeout_while_the_reactor_is_busy(runtime: Any, local: Any) -> None:
    answered = worst_time(lambda: local.call("spdk_get_version"))  # the baseline; open
    busy = runtime.submit(time.sleep, 0.6)  # holds the SPDK thread
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"spdk_get_version: no answer from SPDK within 0\.1 s"):
        local.call("spdk_get_version", timeout=0.1)
    took = time.monotonic() - started
    # On time: not before 0.1 s, and not much later than an answered call takes.
    assert 0.1 <= took < time_bound(0.1, answered), (took, answered)
    busy.result(timeout=10)
    assert "version" in local.call("spdk_get_version")

    async def late() -> None:
        runtime.submit(time.sleep, 0.6)
        await local.acall("spdk_get_version", timeout=0.1)

    with pytest.raises(TimeoutError, match=r"within 0\.1 s"):
        asyncio.run(late())
    assert "version" in local.call("spdk_get_version", timeout=10)


def test_call_on_the_spdk_thread_is_refused(runtime: Any, local: Any) -> None:
    from pyspdk_sys.errors import RuntimeStateError

    with pytest.raises(RuntimeStateError, match=r"would deadlock.*submit\(\).*acall\(\)"):
        runtime.call(lambda: local.call("rpc_get_methods"), timeout=10)
    with pytest.raises(RuntimeStateError, match="on the SPDK thread would deadlock"):
        runtime.call(lambda: asyncio.run(local.acall("rpc_get_methods")), timeout=10)
    assert local.call("rpc_get_methods")  # the reactor is still serving


def test_waiting_for_an_unfinished_future_on_the_spdk_thread_is_refused(runtime: Any) -> None:
    from pyspdk_sys.errors import RuntimeStateError
    from pyspdk_sys.runtime import SpdkFuture

    def on_spdk_thread() -> str:
        queued = runtime.submit(lambda: None)  # runs after this call: not done yet
        for wait in (queued.result, queued.exception):
            with pytest.raises(RuntimeStateError, match="would deadlock"):
                wait()
        finished = SpdkFuture()
        finished.set_result(5)
        assert finished.result() == 5 and finished.exception() is None
        return "refused"

    assert runtime.call(on_spdk_thread, timeout=10) == "refused"
    assert runtime.submit(lambda: 7).result(timeout=10) == 7  # elsewhere it waits


# ------------------------------------------------------------------ the private server


def test_private_socket_in_a_0700_directory(runtime: Any, local: Any) -> None:
    from pyspdk_sys.rpc import rpc_for

    assert rpc_for(runtime) is local
    local.call("spdk_get_version")
    path = local.socket_path
    assert path is not None and path != runtime.rpc_socket
    assert len(os.fsencode(path)) <= 107
    directory = os.path.dirname(path)
    info = os.stat(directory)
    assert stat.S_IMODE(info.st_mode) == 0o700
    assert info.st_uid == os.getuid()
    assert stat.S_ISSOCK(os.stat(path).st_mode)
    assert sorted(os.listdir(directory)) == ["rpc.sock", "rpc.sock.lock"]


def test_served_by_a_one_millisecond_poller_on_the_app_thread(local: Any) -> None:
    pollers = local.call("thread_get_pollers")
    tick_rate = local.call("framework_get_reactors")["tick_rate"]
    (app,) = [t for t in pollers["threads"] if t["name"] == "app_thread"]
    (ours,) = [p for p in app["timed_pollers"] if p["name"] == "pyspdk_local_rpc"]
    assert ours["period_ticks"] == tick_rate // 1000


LIFECYCLE = """
import asyncio, json, os, sys, threading, time
from pyspdk_sys.errors import RuntimeStateError
from pyspdk_sys.rpc import rpc_for
from pyspdk_sys.runtime import Runtime
from cores import reactor_mask

out = {}
rt = Runtime(cpu_mask=reactor_mask(), mem_size_mb=1024)
try:
    rpc_for(rt).call("rpc_get_methods")
except RuntimeStateError as exc:
    out["before_start"] = str(exc)
rt.start()
local = rpc_for(rt)
out["same_object"] = rpc_for(rt) is local
out["public_socket"] = rt.rpc_socket
out["methods"] = len(local.call("rpc_get_methods"))
out["created"] = local.call(
    "bdev_malloc_create", {"name": "M0", "num_blocks": 1024, "block_size": 512}
)
out["bdevs"] = [b["name"] for b in local.call("bdev_get_bdevs")]
path = local.socket_path
directory = os.path.dirname(path)
out["dir_mode"] = oct(os.stat(directory).st_mode & 0o777)

# A call in flight when the runtime stops ends: answered, or refused.
rt.submit(time.sleep, 0.5)
in_flight = {}
def late():
    try:
        in_flight["result"] = "version" in local.call("spdk_get_version", timeout=30)
    except RuntimeStateError as exc:
        in_flight["refused"] = str(exc)
thread = threading.Thread(target=late)
thread.start()
def exchanging():
    # Whether the caller is inside LocalRpc._exchange (sending, or waiting for the answer
    # the busy SPDK thread holds back): the call is in flight.
    frame = sys._current_frames().get(thread.ident)
    while frame is not None:
        if frame.f_code.co_name == "_exchange":
            return True
        frame = frame.f_back
    return False
deadline = time.monotonic() + 30
while not exchanging():
    assert time.monotonic() < deadline, "the call never went out"
    time.sleep(0.001)
rt.stop()
thread.join(timeout=60)
out["in_flight"] = in_flight
out["state"] = rt.state.value
out["dir_left"] = os.path.exists(directory)
out["socket_path_after"] = local.socket_path
for name, fn in [
    ("call_after", lambda: local.call("rpc_get_methods")),
    ("acall_after", lambda: asyncio.run(local.acall("rpc_get_methods"))),
]:
    try:
        fn()
        out[name] = "answered"
    except RuntimeStateError as exc:
        out[name] = "RuntimeStateError: " + str(exc)
print(json.dumps(out))
"""


def test_lifecycle_without_a_public_socket(spdk: Any) -> None:
    result = run_python(LIFECYCLE)
    assert result.returncode == 0, result.stderr[-4000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert "runtime is new" in out["before_start"]
    assert out["same_object"] is True
    assert out["public_socket"] is None
    assert out["methods"] > 200
    assert out["created"] == "M0"
    assert "M0" in out["bdevs"]
    assert out["dir_mode"] == "0o700"
    # Queued behind the stop, the request is never read: refused, not left hanging.
    assert out["in_flight"] == {"result": True} or out["in_flight"] == {
        "refused": "spdk_get_version: the SPDK runtime stopped before it answered"
    }
    assert out["state"] == "stopped"
    assert out["dir_left"] is False
    assert out["socket_path_after"] is None
    assert out["call_after"].startswith("RuntimeStateError: ")
    assert out["acall_after"].startswith("RuntimeStateError: ")


def test_runtime_rpc_delegates_to_the_local_server(runtime: Any) -> None:
    import asyncio

    from pyspdk_sys.errors import RpcError
    from pyspdk_sys.rpc import rpc_for

    name = "DelegatedNull"
    runtime.rpc("bdev_null_create", {"name": name, "num_blocks": 1024, "block_size": 4096})
    try:
        names = [b["name"] for b in asyncio.run(runtime.arpc("bdev_get_bdevs"))]
        assert name in names
        assert rpc_for(runtime) is rpc_for(runtime)
    finally:
        runtime.rpc("bdev_null_delete", {"name": name})
    with pytest.raises(RpcError):
        runtime.rpc("bdev_null_delete", {"name": name})
