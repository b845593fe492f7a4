"""The extern "Python" trampolines declared in cdefs/callbacks.h.

Each one turns the C context back into the Python object that owns it and
hands over; no exception ever propagates into C. A failure the owner cannot
take is logged, never dropped silently.
"""

from __future__ import annotations

import logging
from typing import Any

from ._binding import ffi

log = logging.getLogger("pyspdk_sys")

# Set by runtime.py: the object whose work queue the poller drains.
work_owner: Any = None


@ffi.def_extern()  # type: ignore[untyped-decorator]
def pyspdk_app_started(ctx: Any) -> None:
    try:
        ffi.from_handle(ctx)._on_app_started()
    except BaseException:
        log.exception("pyspdk_sys: error in the SPDK start callback")


@ffi.def_extern()  # type: ignore[untyped-decorator]
def pyspdk_drain_work() -> None:
    try:
        if work_owner is not None:
            work_owner._drain()
    except BaseException:
        log.exception("pyspdk_sys: error while running queued work on the SPDK thread")
