"""What a check inside the guest asks of the host and the harness (tests/guest_vm.py).

The writable share is mounted at /tmp/results in the guest: the harness left
devices.json there (the emulated NVMe controllers it gave QEMU), and serves
QMP requests dropped into its qmp/ directory.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import subprocess
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

SHARE = Path("/tmp/results")
MODULES = Path(os.environ.get("PYSPDK_GUEST_DIR", "/var/cache/pyspdk-guest")) / "modules"
_numbers = itertools.count(1)


def devices() -> dict[str, Any]:
    """The harness's devices.json: {"nvme": [{"id", "slot", "serial", "block_sizes",
    "mib", "subsystem", "address"}, ...]}."""
    found: dict[str, Any] = json.loads((SHARE / "devices.json").read_text())
    return found


def qmp(execute: str, arguments: dict[str, Any] | None = None, timeout: float = 30) -> Any:
    """Have the host send one QMP command to this guest's QEMU; its answer
    ({"return": ...} or {"error": ...}, with "events" QEMU sent meanwhile)."""
    requests = SHARE / "qmp"
    if not requests.is_dir():
        raise RuntimeError("this boot has no QMP broker (guest_vm.run(..., qmp=True))")
    number = next(_numbers)
    command: dict[str, Any] = {"execute": execute}
    if arguments is not None:
        command["arguments"] = arguments
    staged = requests / f"{os.getpid()}-{number}.staged"
    staged.write_text(json.dumps(command))
    staged.rename(staged.with_suffix(".request"))
    reply = staged.with_suffix(".reply")
    deadline = time.monotonic() + timeout
    while not reply.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the host did not answer QMP {execute} within {timeout} s")
        time.sleep(0.02)
    return json.loads(reply.read_text())


def insmod(*names: str) -> list[str]:
    """Load the named modules from the guest cache (busybox insmod: the host has no
    kmod); a module already loaded is left as it is. Returns those loaded now."""
    loaded = []
    for name in names:
        if Path("/sys/module", name.replace("-", "_")).exists():
            continue
        done = subprocess.run(
            ["busybox", "insmod", str(MODULES / f"{name}.ko")],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if done.returncode != 0:
            raise OSError(f"insmod {name}: {done.stderr.strip() or done.stdout.strip()}")
        loaded.append(name)
    return loaded


def read_image(drive: str, offset: int, length: int) -> bytes:
    """Bytes of a drive's image file on the host (x-host-read-image)."""
    answer = qmp("x-host-read-image", {"drive": drive, "offset": offset, "length": length})
    if "error" in answer:
        raise OSError(f"the host did not read {drive}: {answer['error']}")
    return base64.b64decode(answer["return"]["data"])


def emit(check: str, fn: Callable[[], str]) -> bool:
    """Run one check; print its JSON line {"check", "ok", "seconds", "detail"}."""
    start = time.monotonic()
    try:
        detail, ok = fn(), True
    except Exception:
        detail, ok = traceback.format_exc(), False
    line = {
        "check": check,
        "ok": ok,
        "seconds": round(time.monotonic() - start, 2),
        "detail": detail,
    }
    print(json.dumps(line), flush=True)
    return ok
