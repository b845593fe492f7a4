"""Exceptions raised by the Python layer over SPDK."""

from __future__ import annotations


class SpdkError(Exception):
    """Base class of every error this package raises about SPDK."""


class RuntimeStateError(SpdkError, RuntimeError):
    """The call is not allowed in the runtime's current state.

    Raised instead of making the C call that SPDK would answer with abort():
    sending work to a stopped runtime, a second shutdown, a blocking wait on
    the SPDK thread itself, an object used after close or from the wrong thread.
    """


class StartError(SpdkError):
    """SPDK did not start; the message says why and where to look."""


class RpcError(SpdkError):
    """A JSON-RPC method answered with an error object."""

    def __init__(self, method: str, code: int, message: str) -> None:
        super().__init__(f"{method}: {message} (JSON-RPC error {code})")
        self.method = method
        self.code = code
        self.message = message
