"""Boot the ublk guest that tests/guest/prepare.sh builds, run a script in it, collect output.

The guest (QEMU under TCG: KVM here cannot boot a Debian kernel) sees the
host's root read-only over 9p, with tmpfs on /tmp, /dev/shm, /var/tmp and
/run, and a writable share at /tmp/results. Its /init runs
/tmp/results/run.sh, writes the output and exit status to the share, and
powers off. About one boot in fourteen does not reach userspace: the serial
log says so, and the boot is retried once.

A boot can also have emulated NVMe controllers (`Nvme`: one or more
namespaces, each with its own block size, optionally in an NVM subsystem)
backed by sparse image files on the host, and a QMP socket. The script in
the guest asks the host for QMP commands (device_del, for a hot-remove) by
dropping a request file into the share (`tests/guest/host.py`); a thread
here sends each to QEMU and writes the answer back beside it. One request is
the host's own: x-host-read-image reads a drive's image file.
"""

from __future__ import annotations

import base64
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

GUEST_DIR = Path(os.environ.get("PYSPDK_GUEST_DIR", "/var/cache/pyspdk-guest"))
REQUIRE_GUEST = os.environ.get("PYSPDK_REQUIRE_GUEST", "") not in ("", "0")
PREPARE = Path(__file__).resolve().parent / "guest" / "prepare.sh"
USERSPACE_UP = "init: userspace up"
# Plain .ko files prepare.sh writes for the checks to load, in load order.
MODULES_DIR = GUEST_DIR / "modules"
# Where the guest sees the writable share, and the file naming the devices.
GUEST_SHARE = "/tmp/results"
DEVICES_FILE = "devices.json"
QMP_DIR = "qmp"


@dataclass(frozen=True)
class Nvme:
    """An emulated NVMe controller at PCI slot `slot` of the guest's bus 0.

    One namespace per entry of `block_sizes` (its logical and physical block
    size), each backed by a sparse raw image of `mib` MiB (a deallocation, by
    Dataset Management, punches a hole in it). With `subsystem` (an NQN) the
    controller belongs to a QEMU nvme-subsys of that NQN. `id` is QEMU's device
    id: the name device_del takes.
    """

    id: str
    slot: int
    serial: str
    block_sizes: tuple[int, ...] = (512,)
    mib: int = 64
    subsystem: str | None = None
    address: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "address", f"0000:00:{self.slot:02x}.0")

    def qemu_args(self, images: Path) -> list[str]:
        args: list[str] = []
        controller = f"nvme,id={self.id},serial={self.serial},addr={self.slot:x}.0"
        if self.subsystem is not None:
            args += ["-device", f"nvme-subsys,id={self.id}-subsys,nqn={self.subsystem}"]
            controller += f",subsys={self.id}-subsys"
        args += ["-device", controller]
        for nsid, size in enumerate(self.block_sizes, 1):
            drive = f"{self.id}n{nsid}"
            image = images / f"{drive}.img"
            with open(image, "wb") as backing:
                backing.truncate(self.mib << 20)
            args += [
                "-drive", f"file={image},if=none,id={drive},format=raw,discard=unmap",
                "-device",
                f"nvme-ns,bus={self.id},drive={drive},nsid={nsid},"
                f"logical_block_size={size},physical_block_size={size}",
            ]  # fmt: skip
        return args


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
    if not (MODULES_DIR / "order").is_file():
        return f"the guest's run-time modules are missing ({MODULES_DIR / 'order'}): run {PREPARE}"
    if shutil.which("qemu-system-x86_64") is None:
        return "qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)"
    return None


class QmpBroker(threading.Thread):
    """Answers the guest's QMP requests: each `<n>.request` file in `requests` is
    one QMP command ({"execute": ..., "arguments": ...}); its answer, with the
    events QEMU sent since the previous answer, goes to `<n>.reply`."""

    def __init__(self, socket_path: Path, requests: Path, images: Path | None = None) -> None:
        super().__init__(name="qmp-broker", daemon=True)
        self.socket_path = socket_path
        self.requests = requests
        self.images = images
        self.done = threading.Event()
        self.log: list[dict[str, Any]] = []  # every request and answer, for the test's record
        self._sock: socket.socket | None = None
        self._pending = b""
        self._events: list[dict[str, Any]] = []

    def _receive(self, deadline: float) -> dict[str, Any]:
        assert self._sock is not None
        while b"\n" not in self._pending:
            self._sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = self._sock.recv(65536)
            if not chunk:
                raise ConnectionError("QEMU closed the QMP socket")
            self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        message: dict[str, Any] = json.loads(line)
        return message

    def _answer(self, command: dict[str, Any], deadline: float) -> dict[str, Any]:
        assert self._sock is not None
        self._sock.sendall(json.dumps(command).encode() + b"\n")
        while True:
            message = self._receive(deadline)
            if "event" in message:
                self._events.append(message)
            elif "return" in message or "error" in message:
                return message

    def _connect(self, deadline: float) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.connect(str(self.socket_path))
        greeting = self._receive(deadline)
        assert "QMP" in greeting, greeting
        self._answer({"execute": "qmp_capabilities"}, deadline)

    def read_image(self, drive: str, offset: int, length: int) -> dict[str, Any]:
        """Bytes of a drive's backing image, as the host sees them (the guest checks
        that writes it was told were done are there, even after a hot-remove)."""
        if self.images is None or "/" in drive or not 0 < length <= 1 << 20:
            return {"error": {"class": "HostError", "desc": f"cannot read {drive!r}"}}
        with open(self.images / f"{drive}.img", "rb") as image:
            image.seek(offset)
            data = image.read(length)
        return {"return": {"data": base64.b64encode(data).decode()}}

    def handle(self, command: dict[str, Any]) -> dict[str, Any]:
        if command.get("execute") == "x-host-read-image":
            args = command.get("arguments", {})
            answer = self.read_image(
                str(args.get("drive")), int(args["offset"]), int(args["length"])
            )
            answer["events"] = []
            return answer
        deadline = time.monotonic() + 30
        try:
            if self._sock is None:
                self._connect(deadline)
            answer = self._answer(command, deadline)
        except (OSError, ValueError, AssertionError) as exc:
            answer = {"error": {"class": "HostError", "desc": f"{type(exc).__name__}: {exc}"}}
        answer["events"], self._events = self._events, []
        return answer

    def run(self) -> None:
        while not self.done.wait(0.05):
            for request in sorted(self.requests.glob("*.request")):
                try:
                    command = json.loads(request.read_text())
                except ValueError:
                    continue  # still being written
                answer = self.handle(command)
                self.log.append({"request": command, "answer": answer})
                reply = request.with_suffix(".reply")
                reply.with_suffix(".tmp").write_text(json.dumps(answer))
                reply.with_suffix(".tmp").rename(reply)
                request.unlink()
        if self._sock is not None:
            self._sock.close()


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


def _once(script: str, timeout: float, nvme: Sequence[Nvme] = (), qmp: bool = False) -> Boot:
    start = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="pyspdk-guest-") as results,
        tempfile.TemporaryDirectory(prefix="pyspdk-guest-images-") as images,
    ):
        share = Path(results)
        (share / "run.sh").write_text(script)
        (share / "keep").write_text("".join(f"{p}\n" for p in _keep()))
        (share / DEVICES_FILE).write_text(json.dumps({"nvme": [asdict(n) for n in nvme]}))
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
        for controller in nvme:
            command += controller.qemu_args(Path(images))
        broker = None
        if qmp:
            (share / QMP_DIR).mkdir()
            socket_path = Path(images) / "qmp.sock"
            command += ["-qmp", f"unix:{socket_path},server=on,wait=off"]
            broker = QmpBroker(socket_path, share / QMP_DIR, Path(images))
        qemu = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        if broker is not None:
            broker.start()
        # On a timeout QEMU is killed; the serial log says how far it got.
        try:
            qemu_output, _ = qemu.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            qemu.kill()
            qemu_output, _ = qemu.communicate()
        if broker is not None:
            broker.done.set()
            broker.join(10)
        text = serial.read_text(errors="replace") if serial.exists() else ""
        if qemu.returncode != 0 and qemu_output:
            text += f"\n--- QEMU exited {qemu.returncode} ---\n" + qemu_output.decode(
                errors="replace"
            )
        rc_file = share / "rc"
        rc = int(rc_file.read_text()) if rc_file.exists() else None
        out = share / "output"
        output = out.read_text(errors="replace") if out.exists() else ""
    return Boot(rc, output, text, time.monotonic() - start, 1)


def run(
    commands: str, timeout: float = 240, *, nvme: Sequence[Nvme] = (), qmp: bool = False
) -> Boot:
    """Boot the guest, run the shell `commands` there; retry once if it never got to them.

    `nvme`: emulated controllers to give the guest (fresh, zeroed images each
    boot); `qmp`: serve the guest's QMP requests (see QmpBroker).
    """
    script = "set -e\n" + commands + "\n"
    boot = _once(script, timeout, nvme, qmp)
    if USERSPACE_UP not in boot.serial:
        first = boot.serial
        boot = _once(script, timeout, nvme, qmp)
        boot.attempts = 2
        boot.serial = f"--- first boot ---\n{first[-3000:]}\n--- second boot ---\n{boot.serial}"
    return boot


def python_command(script: Path) -> str:
    """Shell line that runs `script` with this interpreter from the tests directory."""
    tests = Path(__file__).resolve().parent
    python = shlex.quote(sys.executable)
    return f"cd {shlex.quote(str(tests))}\nexec {python} {shlex.quote(str(script))}"


# The checks every boot runs, in order: each a script that prints one JSON line
# per check ({"check", "ok", "seconds", "detail"}). One boot serves them all:
# under TCG a boot and SPDK's start are the slow part.
CHECK_SCRIPTS = (
    Path(__file__).resolve().parent / "guest" / "ublk_checks.py",
    Path(__file__).resolve().parent / "guest" / "nvme_checks.py",
)
# The NVMe checks' controllers: A alone, B with two namespaces (512 B and 4 KiB
# blocks) in an NVM subsystem, C for the hot-remove.
NVME = (
    Nvme("nvme0", 0x10, "pyspdk0001"),
    Nvme("nvme1", 0x11, "pyspdk0002", (512, 4096), subsystem="nqn.2026-01.io.pyspdk:subsys1"),
    Nvme("nvme2", 0x12, "pyspdk0003"),
)


def run_checks(pythonpath: str, timeout: float = 480) -> tuple[Boot, dict[str, dict[str, Any]]]:
    """One boot with NVME and QMP that runs every CHECK_SCRIPTS script; its results by check.

    A script that exits non-zero adds a failed check "<script name>" (its own
    checks printed before that stand).
    """
    python = shlex.quote(sys.executable)
    tests = shlex.quote(str(Path(__file__).resolve().parent))
    lines = [f"export PYTHONPATH={shlex.quote(pythonpath)}", f"cd {tests}"]
    for script in CHECK_SCRIPTS:
        quoted = shlex.quote(str(script))
        failed = json.dumps({"check": script.name, "ok": False, "seconds": 0, "detail": "%s"})
        lines.append(f'{python} {quoted} || printf {shlex.quote(failed + chr(10))} "exit $?"')
    boot = run("\n".join(lines), timeout, nvme=NVME, qmp=True)
    results: dict[str, dict[str, Any]] = {}
    for line in boot.output.splitlines():
        if line.startswith('{"check"'):
            entry = json.loads(line)
            results[entry["check"]] = entry
    return boot, results
