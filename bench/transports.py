"""Python initiators against bdevperf as the initiator, on one target, over vhost-user and NVMe/TCP.

    python3 bench/transports.py [--seconds 3] [--json OUT]

For each transport: a Python target (Runtime, reactor on core 0, a 128 MiB
malloc bdev) in its own process; then, one after the other on core 1, a
Python initiator process with its Python threads on that core too (read_many
into a DmaBuffer and into a bytearray at QD1 and QD32, blocking reads from 8
threads, the same 8 threads on a local malloc bdev for the in-process figure,
and the three wait policies) and bdevperf (randread QD1 and QD32).
4 KiB random reads. The vhost-user initiators need hugepages (2 GiB free).
Prints a table and the ratios; see bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from harness import find_bdevperf

BLOCK = 4096
SIZE = 128 << 20
NQN = "nqn.2016-06.io.spdk:bench"
PORT = 4430
TARGET_MASK, INITIATOR_MASK = "0x1", "0x2"
DESIGN_POINT = 120_000  # IOPS where the earlier vhost client switched from events to polling


# ------------------------------------------------------------------ roles (subprocesses)


def role_target(kind: str, socket_path: str) -> None:
    from pyspdk_sys import nvmf, vhost
    from pyspdk_sys.bdev.manage import create_malloc
    from pyspdk_sys.runtime import Runtime

    with Runtime(cpu_mask=TARGET_MASK, mem_size_mb=1024, name="bench-target") as rt:
        create_malloc(rt, "Target0", SIZE, 512)
        if kind == "vhost":
            vhost.create_blk_controller(rt, socket_path, "Target0")
        else:
            nvmf.serve(rt, NQN, ["Target0"], port=PORT)
        print("READY", flush=True)
        sys.stdin.read()
        if kind == "vhost":
            vhost.delete_controller(rt, socket_path)
    sys.stdout.flush()
    os._exit(0)  # past DPDK's vhost thread at exit: see pyspdk_sys.vhost


def _rate(fn: Any, seconds: float) -> float:
    """I/Os per second of fn() (which returns how many I/Os it did), over `seconds`."""
    fn()  # warm
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        done += fn()
    return done / (time.perf_counter() - start)


def _threads(dev: Any, seconds: float, count: int = 8) -> float:
    stop = time.perf_counter() + seconds
    totals = [0] * count
    blocks = dev.size // BLOCK

    def worker(index: int) -> None:
        rng = random.Random(index)
        n = 0
        while time.perf_counter() < stop:
            dev.read(rng.randrange(blocks) * BLOCK, BLOCK)
            n += 1
        totals[index] = n

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(totals) / (time.perf_counter() - start)


WAIT_POLICIES: dict[str, float | None] = {"adaptive": None, "spin50": 50.0, "futex": 0.0}
"""Blocking waits over the transport: the default that adapts, a fixed spin, a futex sleep."""
WAIT_THREADS = (1, 8, 16)


def role_initiator(kind: str, socket_path: str, seconds: float) -> None:
    from pyspdk_sys import nvmf, vhost
    from pyspdk_sys.bdev.manage import create_malloc
    from pyspdk_sys.dma import DmaBuffer
    from pyspdk_sys.placement import cores_of
    from pyspdk_sys.runtime import Runtime

    results: dict[str, float] = {}
    with Runtime(
        cpu_mask=INITIATOR_MASK,
        hugepages=kind == "vhost",
        mem_size_mb=1024 if kind == "vhost" else 2048,
        name="bench-init",
    ) as rt:
        # The initiator's Python threads share its reactor's core and leave the
        # target's core to the target, as bdevperf (-m INITIATOR_MASK) does.
        # Unpinned, the scheduler also puts them on the target's core, where
        # they preempt the reactor that serves their I/O: blocking reads from 8
        # threads measured 44-55k there, and 137k pinned (2026-12-05). Threads
        # made from here on (the workers, the futures thread) inherit it.
        os.sched_setaffinity(0, cores_of(INITIATOR_MASK))
        if kind == "vhost":
            (name,) = vhost.attach(rt, "Remote", socket_path, queues=4)
        else:
            (name,) = nvmf.attach(rt, "Remote", "127.0.0.1", PORT, NQN)
        create_malloc(rt, "Local0", SIZE, 512)
        rng = random.Random(1)
        with rt.open_bdev(name) as dev:
            # 1024 I/Os (4 MiB) per call at both depths. With 8192 (32 MiB) the
            # reads stream through more memory than the caches hold, and NVMe/TCP
            # at QD32 fell to 0.64x of bdevperf (whose 32 buffers stay cached)
            # while 1024 reached 1.01x (2026-12-05): a figure of the buffer's
            # size, not of the binding.
            count = 1024
            offsets = [rng.randrange(SIZE // BLOCK) * BLOCK for _ in range(count)]
            dma = DmaBuffer(rt, count * BLOCK)
            plain = bytearray(count * BLOCK)
            for qd in (1, 32):
                n = count

                def into_dma(qd: int = qd, n: int = n) -> int:
                    dev.read_many(offsets[:n], BLOCK, dma, depth=qd)
                    return n

                def into_bytes(qd: int = qd, n: int = n) -> int:
                    dev.read_many(offsets[:n], BLOCK, memoryview(plain)[: n * BLOCK], depth=qd)
                    return n

                results[f"read_many_dma_qd{qd}"] = _rate(into_dma, seconds)
                results[f"read_many_bytearray_qd{qd}"] = _rate(into_bytes, seconds)
            results["blocking_8_threads"] = _threads(dev, seconds)
        for policy, spin in WAIT_POLICIES.items():
            with rt.open_bdev(name, spin_us=spin) as waiting:
                for threads in WAIT_THREADS:
                    results[f"wait_{policy}_{threads}_threads"] = _threads(
                        waiting, seconds, threads
                    )

                def many(waiting: Any = waiting) -> int:
                    waiting.read_many(offsets, BLOCK, dma, depth=32)
                    return count

                results[f"wait_{policy}_many_qd32"] = _rate(many, seconds)
        dma.close()
        with rt.open_bdev("Local0") as local:
            results["inprocess_blocking_8_threads"] = _threads(local, seconds)
        if kind == "vhost":
            vhost.detach(rt, "Remote")
        else:
            nvmf.detach(rt, "Remote")
    print("RESULT " + json.dumps(results), flush=True)


# ------------------------------------------------------------------ the driver


def _bdevperf_path() -> str | None:
    """bdevperf as bench/run.py finds it, else one on PATH."""
    path, _why = find_bdevperf(None)
    return path or shutil.which("bdevperf")


def _bdevperf(
    binary: str, kind: str, socket_path: str, qd: int, seconds: float, work: Path
) -> float:
    if kind == "vhost":
        attach = {
            "method": "bdev_virtio_attach_controller",
            "params": {
                "name": "Remote",
                "trtype": "user",
                "traddr": socket_path,
                "dev_type": "blk",
                "vq_count": 2,
            },
        }
    else:
        attach = {
            "method": "bdev_nvme_attach_controller",
            "params": {
                "name": "Remote",
                "trtype": "tcp",
                "adrfam": "ipv4",
                "traddr": "127.0.0.1",
                "trsvcid": str(PORT),
                "subnqn": NQN,
            },
        }
    config = work / f"bdevperf-{kind}.json"
    config.write_text(json.dumps({"subsystems": [{"subsystem": "bdev", "config": [attach]}]}))
    command = [binary, "-m", INITIATOR_MASK, "--disable-cpumask-locks", "--json", str(config)]
    command += ["-q", str(qd), "-o", str(BLOCK), "-w", "randread", "-t", str(max(1, int(seconds)))]
    command += ["-s", "1024"] + (["-g"] if kind == "vhost" else ["--no-huge"])
    run = subprocess.run(command, capture_output=True, text=True, timeout=120)
    match = re.search(r"Total\s*:\s*([\d.]+)", run.stdout + run.stderr)
    if run.returncode != 0 or not match:
        raise RuntimeError(
            f"bdevperf failed ({run.returncode}):\n{(run.stdout + run.stderr)[-2000:]}"
        )
    return float(match.group(1))


_LOG = sys.stderr


def _progress(message: str) -> None:
    print(f"transports: {message}", file=sys.stderr, flush=True)


def _spawn(role: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, role, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=_LOG,
        text=True,
    )


def _expect(proc: subprocess.Popen[str], prefix: str) -> str:
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith(prefix):
            return line[len(prefix) :].strip()
    raise RuntimeError(f"{prefix} never came (exit {proc.wait()})")


def measure(seconds: float) -> dict[str, Any]:
    binary = _bdevperf_path()
    if binary is None:
        # The figures are ratios against bdevperf: without it they mean nothing.
        raise SystemExit(
            "transports.py: bdevperf, the reference, is not installed (build.sh installs it "
            "beside the fat library; or set PYSPDK_BDEVPERF)"
        )
    work = Path(tempfile.mkdtemp(prefix="pyspdk-bt-"))
    socket_path = str(work / "vhost.sock")
    out: dict[str, Any] = {
        "placement": {
            "target reactor": f"core mask {TARGET_MASK}",
            "initiator reactor (Python Runtime or bdevperf)": f"core mask {INITIATOR_MASK}",
            "initiator Python threads": f"pinned to core mask {INITIATOR_MASK}, by its reactor",
        }
    }
    try:
        for kind in ("vhost", "nvmf"):
            _progress(f"{kind}: target")
            target = _spawn("target", kind, socket_path)
            try:
                _expect(target, "READY")
                _progress(f"{kind}: Python initiator")
                init = _spawn("initiator", kind, socket_path, str(seconds))
                python = json.loads(_expect(init, "RESULT "))
                init.wait(60)
                ref = {}
                for qd in (1, 32):
                    _progress(f"{kind}: bdevperf QD{qd}")
                    ref[f"bdevperf_qd{qd}"] = _bdevperf(
                        binary, kind, socket_path, qd, seconds, work
                    )
                out[kind] = {**python, **ref}
            finally:
                assert target.stdin is not None
                target.stdin.close()
                target.wait(60)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def ratios(result: dict[str, Any]) -> dict[str, dict[str, float]]:
    found: dict[str, dict[str, float]] = {}
    for kind in ("vhost", "nvmf"):
        r = result.get(kind, {})
        row: dict[str, float] = {}
        for qd in (1, 32):
            ref = r.get(f"bdevperf_qd{qd}")
            if ref:
                row[f"dma_qd{qd}_vs_bdevperf"] = r[f"read_many_dma_qd{qd}"] / ref
                row[f"bytearray_qd{qd}_vs_bdevperf"] = r[f"read_many_bytearray_qd{qd}"] / ref
        row["threads_vs_inprocess"] = r["blocking_8_threads"] / r["inprocess_blocking_8_threads"]
        # Each wait row: the adaptive default against the better fixed policy.
        for cell in (*(f"{n}_threads" for n in WAIT_THREADS), "many_qd32"):
            fixed = [r.get(f"wait_{p}_{cell}", 0.0) for p in WAIT_POLICIES if p != "adaptive"]
            if max(fixed, default=0.0) > 0 and f"wait_adaptive_{cell}" in r:
                row[f"adaptive_vs_best_fixed_{cell}"] = r[f"wait_adaptive_{cell}"] / max(fixed)
        row["dma_qd32_vs_design_point"] = r["read_many_dma_qd32"] / DESIGN_POINT
        found[kind] = row
    return found


def table(result: dict[str, Any]) -> str:
    keys = [
        "read_many_dma_qd1",
        "read_many_dma_qd32",
        "read_many_bytearray_qd1",
        "read_many_bytearray_qd32",
        "bdevperf_qd1",
        "bdevperf_qd32",
        "blocking_8_threads",
        "inprocess_blocking_8_threads",
        *(f"wait_{policy}_{n}_threads" for policy in WAIT_POLICIES for n in WAIT_THREADS),
        *(f"wait_{policy}_many_qd32" for policy in WAIT_POLICIES),
    ]
    lines = [f"{'4 KiB randread, IOPS':32} {'vhost-user':>12} {'NVMe/TCP':>12}"]
    for key in keys:
        cells = [result.get(k, {}).get(key) for k in ("vhost", "nvmf")]
        lines.append(f"{key:32} " + " ".join(f"{c:12.0f}" if c else f"{'-':>12}" for c in cells))
    for kind, row in ratios(result).items():
        lines.append(f"{kind}: " + ", ".join(f"{k} {v:.2f}x" for k, v in row.items()))
    lines += [f"{k}: {v}" for k, v in result["placement"].items()]
    return "\n".join(lines)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "target":
        role_target(sys.argv[2], sys.argv[3])
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "initiator":
        role_initiator(sys.argv[2], sys.argv[3], float(sys.argv[4]))
        return 0
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args()
    result = measure(args.seconds)
    result["ratios"] = ratios(result)
    print(table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
