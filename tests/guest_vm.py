"""Boot the ublk guest that tests/guest/prepare.sh builds, run a script in it, collect output.

The guest (QEMU under TCG: KVM here cannot boot a Debian kernel) sees the
host's root read-only over 9p, with tmpfs on /tmp, /dev/shm, /var/tmp and
/run, and a writable share at /tmp/results. Its /init runs
/tmp/results/run.sh, writes the output and exit status to the share, and
powers off. About one boot in fourteen does not reach userspace: the serial
log says so, and the boot is retried once.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

GUEST_DIR = Path(os.environ.get("PYSPDK_GUEST_DIR", "/var/cache/pyspdk-guest"))
REQUIRE_GUEST = os.environ.get("PYSPDK_REQUIRE_GUEST", "") not in ("", "0")
PREPARE = Path(__file__).resolve().parent / "guest" / "prepare.sh"
USERSPACE_UP = "init: userspace up"


@dataclass
class Boot:
    rc: int | None  # the script's exit status; None when the guest never ran it
    output: str
    serial: str
    seconds: float
    attempts: int


def missing() -> str | None:
    """Why the guest cannot run here, or None."""
    for name in ("vmlinuz", "initramfs.cpio.gz", "stamp"):
        if not (GUEST_DIR / name).is_file():
            return (
                f"the ublk guest is not prepared ({GUEST_DIR / name} is missing): run "
                f"{PREPARE} (or set PYSPDK_GUEST_DIR)"
            )
    if shutil.which("qemu-system-x86_64") is None:
        return "qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)"
    return None


def _keep() -> list[str]:
    """Host directories the guest's tmpfs mounts would hide but the script needs."""
    import pyspdk_sys

    paths = {
        sys.prefix,
        sys.base_prefix,
        Path(pyspdk_sys.__file__).resolve().parents[1],
        Path(__file__).parents[1],
    }
    return sorted({str(Path(p).resolve()) for p in paths})


def _once(script: str, timeout: float) -> Boot:
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="pyspdk-guest-") as results:
        share = Path(results)
        (share / "run.sh").write_text(script)
        (share / "keep").write_text("".join(f"{p}\n" for p in _keep()))
        serial = share / "serial.log"
        command = [
            "qemu-system-x86_64",
            "-accel", "tcg",
            "-cpu", "max",
            "-smp", "2",
            "-m", "3G",
            "-kernel", str(GUEST_DIR / "vmlinuz"),
            "-initrd", str(GUEST_DIR / "initramfs.cpio.gz"),
            "-append", "console=ttyS0 panic=-1 quiet",
            "-nographic", "-no-reboot", "-nodefaults",
            "-serial", f"file:{serial}",
            "-virtfs",
            "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
            "-virtfs", f"local,path={share},mount_tag=results,security_model=none",
        ]  # fmt: skip
        # On a timeout subprocess.run kills QEMU; the serial log says how far it got.
        with contextlib.suppress(subprocess.TimeoutExpired):
            subprocess.run(command, capture_output=True, timeout=timeout, check=False)
        text = serial.read_text(errors="replace") if serial.exists() else ""
        rc_file = share / "rc"
        rc = int(rc_file.read_text()) if rc_file.exists() else None
        out = share / "output"
        output = out.read_text(errors="replace") if out.exists() else ""
    return Boot(rc, output, text, time.monotonic() - start, 1)


def run(commands: str, timeout: float = 240) -> Boot:
    """Boot the guest, run the shell `commands` there; retry once if it never got to them."""
    script = "set -e\n" + commands + "\n"
    boot = _once(script, timeout)
    if USERSPACE_UP not in boot.serial:
        first = boot.serial
        boot = _once(script, timeout)
        boot.attempts = 2
        boot.serial = f"--- first boot ---\n{first[-3000:]}\n--- second boot ---\n{boot.serial}"
    return boot


def python_command(script: Path) -> str:
    """Shell line that runs `script` with this interpreter from the tests directory."""
    tests = Path(__file__).resolve().parent
    python = shlex.quote(sys.executable)
    return f"cd {shlex.quote(str(tests))}\nexec {python} {shlex.quote(str(script))}"
