"""NVMe over PCIe in the QEMU guest: pyspdk_sys's read forms against bdevperf, as ratios.

    python3 bench/nvme_guest.py                 # 2 rounds of 4-s tests, a few minutes
    python3 bench/nvme_guest.py --rounds 3 --seconds 8 --json out.json

Boots the test guest (tests/guest_vm.py) once with one emulated NVMe
controller and, in it, on that controller, alternates per round: SPDK's
bdevperf in its own process (4 KiB random reads at queue depth 1 and 32),
then a fresh Python process with an in-process Runtime running three forms
of the same reads: blocking read() one at a time, read_many at depth 32, and
asyncio with 32 tasks awaiting aread(). Both sides attach the controller the
same way (uio_pci_generic, hugepages, one reactor on the guest's core 0).

QEMU runs under TCG, so absolute rates say little about SPDK or Python: the
result is each form's IOPS over bdevperf's at the same queue depth (the
medians over rounds). Under host load the figures are noisy; the rounds'
spread is printed beside them. Prints a table, then the JSON.

The guest side of this script runs as `nvme_guest.py guest ...` (the round
loop) and `nvme_guest.py forms ...` (one Python process's measurements).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
TESTS_DIR = BENCH_DIR.parent / "tests"
sys.path[:0] = [str(TESTS_DIR), str(TESTS_DIR / "guest")]

import guest_vm  # noqa: E402

CONTROLLER = guest_vm.Nvme("bench0", 0x10, "pyspdkbench1", mib=256)
RESULT_PREFIX = "nvme_guest_result "
QD = 32
# Each Python form: (name, pyside form function name, queue depth); bdevperf runs at each depth.
FORMS = (
    ("blocking", "form_blocking", 1),
    ("read_many", "form_many", QD),
    ("asyncio", "form_asyncio", QD),
)
REACTOR_MASK = "0x1"  # both sides' reactor on the guest's core 0; Python threads on core 1


# ------------------------------------------------------------------ in the guest


def _python_forms(address: str, seconds: float, seed: int) -> dict[str, float]:
    """One fresh process (SPDK starts once per process): IOPS of each form."""
    import pyside

    from pyspdk_sys import nvme
    from pyspdk_sys.bdev import open_bdev
    from pyspdk_sys.runtime import Runtime

    rt = Runtime(hugepages=True, pci=True, mem_size_mb=256, cpu_mask=REACTOR_MASK).start()
    (name,) = nvme.attach_pcie(rt, "N", address)
    os.sched_setaffinity(0, set(os.sched_getaffinity(0)) - {0} or {0})
    dev = open_bdev(rt, name)

    def reads() -> int:
        return int(rt.rpc("bdev_get_iostat", {"name": name})["bdevs"][0]["num_read_ops"])

    iops = {}
    for form, function, qd in FORMS:
        run = getattr(pyside, function)
        run(dev, "read", qd, 1.0, seed)  # warm-up, discarded
        before = reads()
        count, elapsed = run(dev, "read", qd, seconds, seed + 1)
        # SPDK's own count: the form's reads went to the device (more: asyncio's last ones).
        if not count <= reads() - before:
            raise RuntimeError(f"{form} counted {count} reads, the bdev saw fewer")
        iops[form] = count / elapsed
    return iops


def _bdevperf(path: str, address: str, seconds: float, workdir: Path) -> dict[int, float]:
    """bdevperf on the controller: IOPS of 4 KiB random reads at depth 1 and QD."""
    from bdevperf_ref import Bdevperf

    class OnNvme(Bdevperf):
        def __enter__(self) -> OnNvme:
            attach = {"name": "N", "trtype": "PCIe", "traddr": address}
            config = [
                {"method": "bdev_nvme_attach_controller", "params": attach},
                {"method": "bdev_wait_for_examine"},
            ]
            self.config.write_text(
                json.dumps({"subsystems": [{"subsystem": "bdev", "config": config}]})
            )
            command = [
                self.path, "-m", self.cpu_mask, "-s", "256", "--json", str(self.config),
                "-r", self.socket, "-z", "-q", "1", "-o", "4096", "-w", "randread", "-t", "1",
            ]  # fmt: skip
            with open(self.log, "wb") as log:
                self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
            self._wait_ready(120.0)
            return self

    with OnNvme(path, "nvme", workdir, REACTOR_MASK) as bench:
        bench.run("randread", 1, 1)  # warm-up, discarded
        return {qd: bench.run("randread", qd, max(1, round(seconds))) for qd in sorted({1, QD})}


def guest_main(args: argparse.Namespace) -> None:
    import host

    from pyspdk_sys import hugepages, nvme
    from pyspdk_sys.process import find_tool

    address = host.devices()["nvme"][0]["address"]
    host.insmod("uio", "uio_pci_generic")  # the kernel's nvme driver stays unloaded
    nvme.bind(address, "uio_pci_generic")
    hugepages.reserve(1024)
    hugepages.mount()
    # Found the way SpdkProcess finds spdk_tgt: beside the fat library, then pkg-config.
    bdevperf = find_tool("bdevperf")
    if bdevperf is None:
        raise SystemExit("bdevperf is not installed beside the fat library (build.sh installs it)")
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="nvme-guest-") as work:
        for number in range(args.rounds):
            began = time.monotonic()
            reference = _bdevperf(str(bdevperf), address, args.seconds, Path(work))
            forms = subprocess.run(
                [sys.executable, __file__, "forms", address, str(args.seconds), str(number)],
                capture_output=True, text=True, timeout=600,
            )  # fmt: skip
            if forms.returncode != 0:
                raise SystemExit(f"the Python forms failed:\n{forms.stdout}\n{forms.stderr}")
            python = json.loads(forms.stdout.strip().splitlines()[-1])
            rounds.append(
                {"bdevperf": reference, "python": python, "seconds": time.monotonic() - began}
            )
            print(f"round {number + 1}: {json.dumps(rounds[-1])}", file=sys.stderr, flush=True)
    result = {"bdevperf_path": str(bdevperf), "address": address, "rounds": rounds}
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def forms_main(args: argparse.Namespace) -> None:
    iops = _python_forms(args.address, args.seconds, 1000 * (args.round + 1))
    print(json.dumps(iops), flush=True)
    os._exit(0)  # the guest powers off after: a full teardown only costs time under TCG


# ------------------------------------------------------------------ on the host


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    """Medians over rounds, and each form's ratio to bdevperf at the same depth."""
    rounds = result["rounds"]
    table = {}
    for form, _, qd in FORMS:
        ratios = [r["python"][form] / r["bdevperf"][str(qd)] for r in rounds]
        table[form] = {
            "qd": qd,
            "iops": statistics.median(r["python"][form] for r in rounds),
            "bdevperf_iops": statistics.median(r["bdevperf"][str(qd)] for r in rounds),
            "ratio": statistics.median(ratios),
            "ratio_min": min(ratios),
            "ratio_max": max(ratios),
        }
    return table


def host_main(args: argparse.Namespace) -> int:
    reason = guest_vm.missing()
    if reason is not None:
        print(f"nvme_guest: {reason}", file=sys.stderr)
        return 2
    import pyspdk_sys

    where = str(Path(pyspdk_sys.__file__).resolve().parents[1])
    python = shlex.quote(sys.executable)
    script = shlex.quote(str(Path(__file__).resolve()))
    commands = (
        f"export PYTHONPATH={shlex.quote(where)}\ncd {shlex.quote(str(BENCH_DIR))}\n"
        f"{python} {script} guest --rounds {args.rounds} --seconds {args.seconds}"
    )
    timeout = 240 + args.rounds * (150 + 8 * args.seconds)
    load_before = os.getloadavg()[0]
    boot = guest_vm.run(commands, timeout, nvme=(CONTROLLER,))
    found = [line for line in boot.output.splitlines() if line.startswith(RESULT_PREFIX)]
    if boot.rc != 0 or not found:
        print(
            f"nvme_guest: the guest run failed (exit {boot.rc}, {boot.seconds:.0f} s):\n"
            f"{boot.output[-4000:]}\n--- serial ---\n{boot.serial[-2000:]}",
            file=sys.stderr,
        )
        return 1
    result = json.loads(found[-1][len(RESULT_PREFIX) :])
    result["boot_seconds"] = boot.seconds
    # The host's 1-minute load average before and after: TCG's vCPUs share the host's cores.
    result["host_load"] = [load_before, os.getloadavg()[0], os.cpu_count()]
    result["summary"] = summarize(result)
    print(f"NVMe over PCIe in the guest (QEMU TCG), 4 KiB random reads, {args.rounds} rounds")
    print(f"{'form':<10} {'QD':>3} {'IOPS':>8} {'bdevperf':>9} {'ratio':>6}  (range)")
    for form, row in result["summary"].items():
        print(
            f"{form:<10} {row['qd']:>3} {row['iops']:>8.0f} {row['bdevperf_iops']:>9.0f} "
            f"{row['ratio']:>6.2f}  ({row['ratio_min']:.2f}-{row['ratio_max']:.2f})"
        )
    before, after, cpus = result["host_load"]
    print(
        f"Absolute IOPS under TCG mean little; compare the ratios. Host load average "
        f"{before:.1f} before, {after:.1f} after, on {cpus} CPUs."
    )
    text = json.dumps(result, indent=1)
    print(text)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="side")
    parser.add_argument("--rounds", type=int, default=2, help="rounds (default 2)")
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds per test (default 4)")
    parser.add_argument("--json", type=Path, help="also write the result here")
    guest = sub.add_parser("guest", help="(in the guest) the round loop")
    guest.add_argument("--rounds", type=int, default=2)
    guest.add_argument("--seconds", type=float, default=4.0)
    forms = sub.add_parser("forms", help="(in the guest) one process's Python forms")
    forms.add_argument("address")
    forms.add_argument("seconds", type=float)
    forms.add_argument("round", type=int)
    args = parser.parse_args()
    if args.rounds < 1 or args.seconds <= 0:
        parser.error("--rounds and --seconds must be positive")
    if args.side == "guest":
        guest_main(args)
        return 0
    if args.side == "forms":
        forms_main(args)
        return 0
    return host_main(args)


if __name__ == "__main__":
    sys.exit(main())
