"""Kernel clients in the QEMU guest: /dev/nbdN to nbdkit against /dev/ublkbN to SPDK.

    python3 bench/kernel_peers.py                  # 2 rounds of 4-s runs, a few minutes
    python3 bench/kernel_peers.py --rounds 3 --seconds 6 --json out.json

The backend of bench/peers.py (bench/peers_backend.py: 4 KiB reads copied out
of a 128 MiB bytearray) is served to the guest's kernel two ways, each beside
its own C server, in one boot of the test guest (tests/guest_vm.py):

- nbdkit 1.32 with its python plugin (and its `memory` plugin, C), attached
  by `nbd-client` over a Unix socket as /dev/nbd0 (and /dev/nbd1);
- a Runtime serving PythonBdev (and a malloc bdev, C) through SPDK's ublk
  target as /dev/ublkb1 (and /dev/ublkb0), without the kernel's user-copy
  mode: with it SPDK copies each I/O's data by a system call on the reactor,
  which here halved the malloc disk's IOPS (and cut PythonBdev's by a fifth).

Each device's data is checked first (1 MiB written and read back, direct
I/O); the rounds alternate which server goes first, so drift hits both.

fio reads each block device with io_uring and direct I/O, 4 KiB random reads
at QD1 and QD32. Placement in the guest's 2 vCPUs: every server on vCPU 0 and
fio on vCPU 1, but for PythonBdev's worker thread. SPDK's ublk target has no
interrupt mode (its poller is a busy one), so its reactor polls vCPU 0 and the
worker runs on vCPU 1 beside fio.

QEMU runs under TCG, so absolute rates say little: compare ratios. Reported
per device and depth: IOPS, median completion latency, and CPU per I/O of the
server process (CPU time over the run / I/Os) and of the whole guest (busy
time of both vCPUs from /proc/stat / I/Os). The goal (issue 25): PythonBdev
via ublk at least 2x nbdkit's python plugin via /dev/nbd0 at QD32.

The guest side of this script runs as `kernel_peers.py guest ...` (the round
loop) and `kernel_peers.py serve-ublk` (the SPDK server).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
TESTS_DIR = BENCH_DIR.parent / "tests"
sys.path[:0] = [str(BENCH_DIR), str(TESTS_DIR), str(TESTS_DIR / "guest")]

import guest_vm  # noqa: E402
from harness import machine_busy_seconds, print_result, process_cpu_seconds  # noqa: E402

BACKEND = BENCH_DIR / "peers_backend.py"
SIZE = 128 << 20
BLOCK = 4096
DEPTHS = (1, 32)
SERVER_CPU, CLIENT_CPU = 0, 1
RESULT_PREFIX = "kernel_peers_result "
READY = "kernel_peers_ublk_ready"
# (label, kind, C server or Python): kind "nbd" rows use nbdkit, "ublk" rows the Runtime.
DEVICES: tuple[tuple[str, str, str], ...] = (
    ("nbdkit memory plugin (C), /dev/nbd1", "nbd", "memory"),
    ("nbdkit python plugin, /dev/nbd0", "nbd", "python"),
    ("SPDK malloc (C), /dev/ublkb0", "ublk", "malloc"),
    ("PythonBdev, /dev/ublkb1", "ublk", "python"),
)
PYTHON_NBD = "nbdkit python plugin, /dev/nbd0"
PYTHON_UBLK = "PythonBdev, /dev/ublkb1"
NBD_DEVICE = {"python": "/dev/nbd0", "memory": "/dev/nbd1"}
UBLK_ID = {"malloc": 0, "python": 1}


# ------------------------------------------------------------------ in the guest


def _on_cpu(cpu: int) -> Any:
    return lambda: os.sched_setaffinity(0, {cpu})


def _stop(proc: subprocess.Popen[Any]) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _wait_for(path: str, proc: subprocess.Popen[Any], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not come up (exit {proc.poll()})")
        time.sleep(0.05)


def _sectors(device: str) -> int:
    try:
        with open(f"/sys/block/{os.path.basename(device)}/size") as size:
            return int(size.read())
    except (OSError, ValueError):
        return 0


def _wait_sized(device: str, timeout: float = 60) -> None:
    """Until the kernel knows `device` with its size (its node can come before that)."""
    deadline = time.monotonic() + timeout
    while not (os.path.exists(device) and _sectors(device) > 0):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{device} did not appear")
        time.sleep(0.05)


def _wait_gone(path: str, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while os.path.exists(path):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} stayed connected")
        time.sleep(0.05)


@contextmanager
def nbd_disk(plugin: str, workdir: Path) -> Iterator[tuple[int, str]]:
    """nbdkit with `plugin` on SERVER_CPU, attached by nbd-client: (server pid, device)."""
    sock = str(workdir / f"nbdkit-{plugin}.sock")
    if os.path.exists(sock):
        os.unlink(sock)  # an earlier round's: waiting for it would not wait for this server
    args = ["memory", f"size={SIZE}"] if plugin == "memory" else ["python", str(BACKEND)]
    server = subprocess.Popen(
        ["nbdkit", "--foreground", "--unix", sock, *args],
        preexec_fn=_on_cpu(SERVER_CPU),
        stdout=subprocess.DEVNULL,
    )
    device = NBD_DEVICE[plugin]
    try:
        _wait_for(sock, server, f"nbdkit {plugin}")
        attach = subprocess.run(
            ["nbd-client", "-unix", sock, device, "-block-size", str(BLOCK), "-timeout", "60"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        if attach.returncode != 0:
            raise RuntimeError(f"nbd-client {device}: {attach.stderr.strip() or attach.stdout}")
        try:
            yield server.pid, device
        finally:
            subprocess.run(["nbd-client", "-d", device], capture_output=True, timeout=60)
            _wait_gone(f"/sys/block/{os.path.basename(device)}/pid", device)
    finally:
        _stop(server)


@contextmanager
def ublk_disks(workdir: Path) -> Iterator[int]:
    """A Runtime serving malloc and PythonBdev through ublk (serve-ublk): its pid."""
    ready = workdir / "ublk.ready"
    ready.unlink(missing_ok=True)  # an earlier round's
    server = subprocess.Popen(
        [sys.executable, __file__, "serve-ublk", str(ready)],
        stdout=subprocess.DEVNULL,
    )
    try:
        _wait_for(str(ready), server, "the ublk server", timeout=300)
        yield server.pid
    finally:
        _stop(server)
        for ublk_id in UBLK_ID.values():  # the next round's server takes the same ids
            _wait_gone(f"/sys/block/ublkb{ublk_id}", f"/dev/ublkb{ublk_id}")


def fio(device: str, depth: int, seconds: float) -> dict[str, float]:
    """fio on `device` (CLIENT_CPU): IOPS, median latency and fio's CPU per I/O."""
    command = [
        "fio", "--name=kernel-peers", f"--filename={device}", "--ioengine=io_uring",
        "--direct=1", "--rw=randread", f"--bs={BLOCK}", f"--iodepth={depth}",
        "--ramp_time=1", f"--runtime={max(1, round(seconds))}", "--time_based",
        "--norandommap", "--randrepeat=0", f"--cpus_allowed={CLIENT_CPU}",
        "--output-format=json",
    ]  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 120)
    if proc.returncode != 0:
        raise RuntimeError(f"fio on {device} failed: {proc.stderr.strip()[-400:]}")
    job = json.loads(proc.stdout[proc.stdout.index("{") :])["jobs"][0]
    read = job["read"]
    if read["io_bytes"] <= 0:
        raise RuntimeError(f"fio read nothing from {device}")
    iops = float(read["iops"])
    fio_cpu = (job["usr_cpu"] + job["sys_cpu"]) / 100 * job["elapsed"]
    return {
        "iops": iops,
        "p50_us": read["clat_ns"]["percentile"]["50.000000"] / 1000,
        "client_cpu_us_per_io": fio_cpu * 1e6 / max(1, read["total_ios"]),
    }


def verify(device: str) -> None:
    """Write 1 MiB of random bytes through `device` with direct I/O and read them back."""
    import mmap

    length, offset = 1 << 20, 8 << 20
    pattern = os.urandom(length)
    buffer = mmap.mmap(-1, length)  # page-aligned, as O_DIRECT wants
    fd = os.open(device, os.O_RDWR | os.O_DIRECT)
    try:
        buffer[:] = pattern
        if os.pwritev(fd, [buffer], offset) != length:
            raise RuntimeError(f"{device}: short write")
        buffer[:] = bytes(length)
        if os.preadv(fd, [buffer], offset) != length or buffer[:] != pattern:
            raise RuntimeError(f"{device}: the data read back differs from the data written")
    finally:
        os.close(fd)
        buffer.close()


def measure_device(device: str, server_pid: int, seconds: float) -> dict[str, Any]:
    """Each depth on `device` (its data checked first): fio's figures with the server's and
    the guest's CPU per I/O."""
    verify(device)
    rows: dict[str, Any] = {}
    for depth in DEPTHS:
        server_before, busy_before = process_cpu_seconds(server_pid), machine_busy_seconds()
        began = time.monotonic()
        row = fio(device, depth, seconds)
        wall = time.monotonic() - began
        ios = row["iops"] * wall  # the ramp second counts in both the CPU and the I/Os
        row["server_cpu_us_per_io"] = (process_cpu_seconds(server_pid) - server_before) * 1e6 / ios
        row["guest_cpu_us_per_io"] = (machine_busy_seconds() - busy_before) * 1e6 / ios
        rows[str(depth)] = row
    return rows


def measure_nbd(workdir: Path, seconds: float) -> dict[str, Any]:
    figures = {}
    for label, kind, server in DEVICES:
        if kind == "nbd":
            with nbd_disk(server, workdir) as (pid, device):
                figures[label] = measure_device(device, pid, seconds)
    return figures


def measure_ublk(workdir: Path, seconds: float) -> dict[str, Any]:
    figures = {}
    with ublk_disks(workdir) as pid:
        for label, kind, server in DEVICES:
            if kind == "ublk":
                figures[label] = measure_device(f"/dev/ublkb{UBLK_ID[server]}", pid, seconds)
    return figures


def guest_main(args: argparse.Namespace) -> None:
    import host

    host.insmod("nbd")
    workdir = Path("/tmp/kernel-peers")
    workdir.mkdir(exist_ok=True)
    rounds: list[dict[str, Any]] = []
    for number in range(args.rounds):
        began = time.monotonic()
        figures: dict[str, Any] = {}
        for part in ("nbd", "ublk") if number % 2 == 0 else ("ublk", "nbd"):  # drift hits both
            figures.update(measure_nbd(workdir, args.seconds) if part == "nbd" else
                           measure_ublk(workdir, args.seconds))  # fmt: skip
        rounds.append({"devices": figures, "seconds": time.monotonic() - began})
        print(f"round {number + 1}: {json.dumps(rounds[-1])}", file=sys.stderr, flush=True)
    print(RESULT_PREFIX + json.dumps({"rounds": rounds}), flush=True)


def serve_ublk(ready: Path) -> None:
    """The SPDK side: reactor on SERVER_CPU, PythonBdev's worker on CLIENT_CPU (see above)."""
    import signal

    import peers_backend

    from pyspdk_sys import ublk
    from pyspdk_sys.bdev import create_malloc
    from pyspdk_sys.pybdev import PythonBdev
    from pyspdk_sys.runtime import Runtime

    rt = Runtime(cpu_mask=hex(1 << SERVER_CPU), mem_size_mb=512, name="kernel-peers").start()
    os.sched_setaffinity(0, {CLIENT_CPU})  # the worker thread inherits it
    # Without the kernel's user-copy mode: with it SPDK copies each I/O's data with a
    # pread/pwrite on /dev/ublkcN from the reactor, which halved malloc's IOPS here.
    ublk.create_target(rt, user_copy=False)
    create_malloc(rt, "Malloc0", SIZE, BLOCK)
    bdev = PythonBdev(rt, "Py1", peers_backend.Ram(SIZE), num_blocks=SIZE // BLOCK,
                      block_size=BLOCK, workers=1)  # fmt: skip
    disks = [
        ublk.start_disk(rt, name, UBLK_ID[kind], num_queues=1, queue_depth=64)
        for name, kind in (("Malloc0", "malloc"), ("Py1", "python"))
    ]
    for disk in disks:
        _wait_sized(disk.device)
    stop = False

    def on_term(signum: int, frame: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    ready.write_text(READY)
    while not stop:
        time.sleep(0.1)
    for disk in disks:
        ublk.stop_disk(rt, disk.id)
    bdev.close()
    os._exit(0)  # the guest powers off soon: a full teardown only costs time under TCG


# ------------------------------------------------------------------ on the host


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    """Medians over rounds of every figure, and each device's IOPS over nbdkit python's."""
    rounds = result["rounds"]
    table: dict[str, Any] = {}
    for label, _, _ in DEVICES:
        table[label] = {}
        for depth in map(str, DEPTHS):
            rows = [r["devices"][label][depth] for r in rounds]
            entry = {key: statistics.median(row[key] for row in rows) for key in rows[0]}
            ratios = [
                r["devices"][label][depth]["iops"] / r["devices"][PYTHON_NBD][depth]["iops"]
                for r in rounds
            ]
            entry["vs_nbdkit_python"] = statistics.median(ratios)
            entry["ratio_min"], entry["ratio_max"] = min(ratios), max(ratios)
            table[label][depth] = entry
    return table


def table(result: dict[str, Any]) -> str:
    summary = result["summary"]
    lines = [
        "### Kernel clients in the guest: PythonBdev via ublk vs nbdkit's python plugin "
        "via /dev/nbd0",
        "",
        "fio (io_uring, direct, 4 KiB randread) on each block device in the QEMU guest "
        f"(TCG, 2 vCPUs). Median of {len(result['rounds'])} rounds; servers on vCPU "
        f"{SERVER_CPU}, fio on vCPU {CLIENT_CPU} (PythonBdev's worker too: SPDK's ublk "
        "target polls). CPU per I/O: the server process's, and the whole guest's.",
        "",
        "| device | QD | IOPS | vs nbdkit python | p50 us | server CPU us/I/O | guest CPU us/I/O |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, _, _ in DEVICES:
        for depth in map(str, DEPTHS):
            row = summary[label][depth]
            lines.append(
                f"| {label} | {depth} | {row['iops']:,.0f} | {row['vs_nbdkit_python']:.2f}x "
                f"| {row['p50_us']:,.0f} | {row['server_cpu_us_per_io']:,.1f} "
                f"| {row['guest_cpu_us_per_io']:,.1f} |"
            )
    goal = summary[PYTHON_UBLK][str(DEPTHS[-1])]
    verdict = "met" if goal["vs_nbdkit_python"] >= 2 else "not met"
    lines += [
        "",
        f"Goal: PythonBdev via ublk >= 2x nbdkit python via /dev/nbd0 at QD{DEPTHS[-1]}: "
        f"{goal['vs_nbdkit_python']:.2f}x (rounds {goal['ratio_min']:.2f}-"
        f"{goal['ratio_max']:.2f}): {verdict}. Absolute IOPS under TCG mean little.",
    ]
    return "\n".join(lines)


def measure(rounds: int, seconds: float) -> dict[str, Any]:
    """Boot the guest, run the rounds there: the samples, their summary and the host's load."""
    reason = guest_vm.missing()
    if reason is not None:
        raise RuntimeError(f"kernel_peers: {reason}")
    import pyspdk_sys

    where = str(Path(pyspdk_sys.__file__).resolve().parents[1])
    commands = (
        f"export PYTHONPATH={shlex.quote(where)}\ncd {shlex.quote(str(BENCH_DIR))}\n"
        f"{shlex.quote(sys.executable)} {shlex.quote(str(Path(__file__).resolve()))} "
        f"guest --rounds {rounds} --seconds {seconds}"
    )
    timeout = 240 + rounds * (240 + 2 * len(DEVICES) * (seconds + 3))
    load_before = os.getloadavg()[0]
    boot = guest_vm.run(commands, timeout)
    found = [line for line in boot.output.splitlines() if line.startswith(RESULT_PREFIX)]
    if boot.rc != 0 or not found:
        raise RuntimeError(
            f"kernel_peers: the guest run failed (exit {boot.rc}, {boot.seconds:.0f} s):\n"
            f"{boot.output[-4000:]}\n--- serial ---\n{boot.serial[-2000:]}"
        )
    result: dict[str, Any] = json.loads(found[-1][len(RESULT_PREFIX) :])
    result["seconds"] = seconds
    result["boot_seconds"] = boot.seconds
    # TCG's vCPUs share the host's cores: the host's 1-minute load before and after.
    result["host_load"] = [load_before, os.getloadavg()[0], os.cpu_count()]
    result["summary"] = summarize(result)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="side")
    parser.add_argument("--rounds", type=int, default=2, help="rounds (default 2)")
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds per run (default 4)")
    parser.add_argument("--json", type=Path, help="also write the result here ('-': JSON only)")
    guest = sub.add_parser("guest", help="(in the guest) the round loop")
    guest.add_argument("--rounds", type=int, default=2)
    guest.add_argument("--seconds", type=float, default=4.0)
    serve = sub.add_parser("serve-ublk", help="(in the guest) the SPDK server")
    serve.add_argument("ready", type=Path)
    args = parser.parse_args()
    if args.side == "serve-ublk":
        serve_ublk(args.ready)
        return 0
    if args.rounds < 1 or args.seconds < 1:
        parser.error("--rounds >= 1 and --seconds >= 1")
    if args.side == "guest":
        guest_main(args)
        return 0
    try:
        result = measure(args.rounds, args.seconds)
    except RuntimeError as error:
        print(error, file=sys.stderr)
        return 1
    print_result(result, args.json, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
