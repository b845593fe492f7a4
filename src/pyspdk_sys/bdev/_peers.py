"""Peers a bdev's I/O depends on in another process, and how to tell they are gone.

SPDK's virtio-user initiator never notices its vhost-user target dying: the
requests in flight simply never complete. The helper that attaches such a
bdev (vhost.attach) registers a probe for it here; a BlockDevice on that bdev
asks the probe while a blocking call waits, and fails the call with IoError
(ENOTCONN) once the peer is gone, instead of waiting forever.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["Probe", "probe_for", "unwatch", "watch"]

Probe = Callable[[], "str | None"]
"""None while the peer is there; else why it is not (for the error message)."""

_lock = threading.Lock()
_probes: weakref.WeakKeyDictionary[Any, dict[str, Probe]] = weakref.WeakKeyDictionary()


def watch(runtime: Any, bdev_names: Iterable[str], probe: Probe) -> None:
    """Devices later opened on these bdevs of `runtime` consult `probe` while they wait."""
    with _lock:
        table = _probes.setdefault(runtime, {})
        for name in bdev_names:
            table[name] = probe


def unwatch(runtime: Any, bdev_names: Iterable[str]) -> None:
    with _lock:
        table = _probes.get(runtime, {})
        for name in bdev_names:
            table.pop(name, None)


def probe_for(runtime: Any, bdev_name: str) -> Probe | None:
    with _lock:
        return _probes.get(runtime, {}).get(bdev_name)
