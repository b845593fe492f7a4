"""JSON-RPC requests as SPDK's server can read them: the one check, for every client.

SPDK's JSON-RPC server (lib/jsonrpc/, lib/json/json_parse.c) closes the
connection without an answer on a request it cannot read: too many bytes,
too many JSON values, nesting too deep. The in-process client (rpc.py) and
SpdkProcess both encode through encode_request, so a request that would be
dropped is refused here with the reason, against the limits of the release
that serves it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "LIMITS",
    "OLDEST",
    "REQUEST_MAX_DEPTH",
    "RequestLimits",
    "check_request",
    "encode_request",
    "limits_for",
]


@dataclass(frozen=True)
class RequestLimits:
    """What one request may hold: bytes read (SPDK_JSONRPC_RECV_BUF_SIZE) and JSON
    values, names included (SPDK_JSONRPC_MAX_VALUES)."""

    max_bytes: int
    max_values: int


LIMITS = {
    "26.01": RequestLimits(32 * 1024, 1024),
    "26.05": RequestLimits(256 * 1024, 8192),
}
"""Per supported SPDK release; a test checks each against the library built from it."""
OLDEST = "26.01"
REQUEST_MAX_DEPTH = 64  # SPDK_JSON_MAX_NESTING_DEPTH: nested objects and arrays

# The request envelope around params: {"jsonrpc": "2.0", "method": m, "id": n,
# "params": ...} is an object begin and end plus four names and three values.
_ENVELOPE_VALUES = 9
_METHOD = re.compile(r"[A-Za-z0-9_]+")
_RELEASE = re.compile(r"SPDK v(\d+\.\d+)")


def limits_for(version: str) -> RequestLimits:
    """The limits of the release named by a version ("26.05") or banner ("SPDK v26.05 git
    sha1 ..."); an unknown release gets the strictest known."""
    match = _RELEASE.match(version)
    release = match.group(1) if match else version
    return LIMITS.get(release, LIMITS[OLDEST])


def encode_request(
    method: str,
    params: Mapping[str, Any] | None,
    request_id: int,
    limits: RequestLimits | None = None,
) -> bytes:
    """The JSON-RPC request as compact bytes, or TypeError/ValueError if SPDK could not
    take it. limits: the server's (default: the oldest supported release's, the strictest)."""
    return check_request(method, params, request_id, limits)[1]


def check_request(
    method: str,
    params: Mapping[str, Any] | None,
    request_id: int,
    limits: RequestLimits | None = None,
    *,
    indent: int | None = None,
) -> tuple[Any, bytes]:
    """(params as plain JSON data, the request as bytes), or TypeError/ValueError naming
    what SPDK's server could not read. indent: how the sender lays the JSON out, which
    decides its size (SPDK's official client sends indent=2)."""
    limits = limits or LIMITS[OLDEST]
    if not isinstance(method, str):
        raise TypeError(f"method must be a str, not {type(method).__name__}")
    if not _METHOD.fullmatch(method):
        raise ValueError(
            f"method {method!r} is not a method name: use letters, digits and '_' only"
        )
    request: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": request_id}
    values = _ENVELOPE_VALUES - 2
    if params is not None:
        if not isinstance(params, Mapping):
            raise TypeError(f"params must be a mapping or None, not {type(params).__name__}")
        counter = [0]
        request["params"] = _plain(params, "params", 1, counter)
        values = _ENVELOPE_VALUES + counter[0]
    if values > limits.max_values:
        raise ValueError(
            f"params hold {values - _ENVELOPE_VALUES} JSON values; SPDK's RPC server takes "
            f"at most {limits.max_values - _ENVELOPE_VALUES} in one request"
        )
    try:
        if indent is None:
            text = json.dumps(request, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        else:
            text = json.dumps(request, allow_nan=False, indent=indent)
        payload = text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"params hold a string that is not valid Unicode: {exc}") from None
    if len(payload) > limits.max_bytes:
        raise ValueError(
            f"the request is {len(payload)} bytes of JSON; SPDK's RPC server reads at most "
            f"{limits.max_bytes} bytes per request"
        )
    return request.get("params"), payload


def _plain(value: Any, where: str, depth: int, counter: list[int]) -> Any:
    """A JSON-ready copy of value (Mappings become dicts), counting values as SPDK does.

    depth: how many objects and arrays enclose value, the request's own included.
    """
    counter[0] += 1
    if isinstance(value, (Mapping, list, tuple)) and depth >= REQUEST_MAX_DEPTH:
        raise ValueError(
            f"{_short(where)} is nested too deep for SPDK's JSON parser (at most "
            f"{REQUEST_MAX_DEPTH} objects and arrays inside each other, the request itself "
            "included), or is a cycle"
        )
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where} is {value!r}, which JSON cannot express")
        return value
    if isinstance(value, str):
        if "\0" in value:
            raise ValueError(f"{where} contains a NUL character, which SPDK's C strings cannot")
        return value
    if isinstance(value, Mapping):
        out = {}
        counter[0] += 1  # the closing brace
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where} has a key {key!r}: JSON object keys are strings")
            if "\0" in key:
                raise ValueError(f"{where} has a key with a NUL character: {key!r}")
            counter[0] += 1  # the name
            out[key] = _plain(item, f"{where}[{key!r}]", depth + 1, counter)
        return out
    if isinstance(value, (list, tuple)):
        counter[0] += 1  # the closing bracket
        return [_plain(item, f"{where}[{i}]", depth + 1, counter) for i, item in enumerate(value)]
    raise ValueError(f"{where} is of type {type(value).__name__}, which is not JSON")


def _short(where: str) -> str:
    """A value's path, cut to a readable length."""
    return where if len(where) <= 60 else where[:57] + "..."
