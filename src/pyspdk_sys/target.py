"""The one thing every device and target helper needs of an SPDK application: its RPCs.

A `Runtime` (SPDK in this process) and an `SpdkProcess` (SPDK in another
process) both satisfy it, so helpers such as `create_malloc` or the vhost and
NVMe-oF helpers take either and go through JSON-RPC, never through the other's
internals.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "Target",
]


@runtime_checkable
class Target(Protocol):
    """An SPDK application that answers JSON-RPC calls."""

    def rpc(
        self, method: str, params: Mapping[str, Any] | None = None, timeout: float = 60.0
    ) -> Any:
        """Call `method` and return its result; RpcError when SPDK answers with an error."""
        ...


def check_target(target: Any) -> Target:
    """`target`, or TypeError if it cannot answer JSON-RPC calls."""
    if not isinstance(target, Target):
        raise TypeError(
            f"expected a Runtime or an SpdkProcess (anything with rpc()), not "
            f"{type(target).__name__}"
        )
    return target
