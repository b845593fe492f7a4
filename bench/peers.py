"""Benchmark: one Python backend served by nbdkit's python plugin and by PythonBdev.

    python3 bench/peers.py                  # 3 rounds of 5 s per server, about 2 minutes
    python3 bench/peers.py --rounds 1 --seconds 1   # a smoke run
    python3 bench/peers.py --json out.json  # also every sample ('-': JSON only)

The backend (bench/peers_backend.py: 4 KiB reads copied out of a bytearray)
is served two ways, each beside its own C server, in one run:

- over NBD by nbdkit 1.32 (its python plugin, THREAD_MODEL_PARALLEL; and its
  `memory` plugin, C), read by fio's nbd engine (libnbd, userspace);
- over NVMe/TCP by a Runtime's NVMe-oF target (PythonBdev; and a malloc bdev,
  C), read by SPDK's bdevperf attached with bdev_nvme. PythonBdev runs with the
  target polling and with the target in interrupt mode, where the reactor
  sleeps whenever it has nothing to do and leaves its core to the Python worker.

4 KiB random reads at QD32 over the whole 128 MiB. Every server runs on core 0
(its threads, Python's included), every client on core 1, so each side has one
core. Reported: IOPS, and CPU per I/O of the server and of the client (process
CPU time over the timed run / I/Os). The goal (issue 25): PythonBdev over
NVMe/TCP at least 2x nbdkit's python plugin over NBD.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from harness import BENCH_DIR, find_bdevperf, print_result, process_cpu_seconds

SERVER_CORE, CLIENT_CORE = 0, 1
QD = 32
NQN = "nqn.2026-12.io.pyspdk:peers"
BACKEND = BENCH_DIR / "peers_backend.py"

SERVERS: list[tuple[str, str, dict[str, Any]]] = [
    ("nbdkit memory plugin (C), NBD", "nbd", {"plugin": "memory"}),
    ("nbdkit python plugin, NBD", "nbd", {"plugin": "python"}),
    ("SPDK malloc (C), NVMe/TCP", "nvmf", {"kind": "malloc", "interrupt": False}),
    ("PythonBdev, NVMe/TCP, target polling", "nvmf", {"kind": "python", "interrupt": False}),
    (
        "PythonBdev, NVMe/TCP, target in interrupt mode",
        "nvmf",
        {"kind": "python", "interrupt": True},
    ),
]
PYTHON_NBD = "nbdkit python plugin, NBD"
PYTHON_NVMF = (
    "PythonBdev, NVMe/TCP, target polling",
    "PythonBdev, NVMe/TCP, target in interrupt mode",
)


def log(message: str) -> None:
    print(f"peers: {message}", file=sys.stderr, flush=True)


def _on_core(core: int) -> Callable[[], None]:
    return lambda: os.sched_setaffinity(0, {core})


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# ---------------------------------------------------------------- NBD: nbdkit and fio


@contextmanager
def nbdkit(plugin: str, workdir: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """nbdkit with `plugin` on SERVER_CORE, serving on a Unix socket."""
    sock = str(workdir / f"nbdkit-{plugin}.sock")
    if os.path.exists(sock):
        os.unlink(sock)  # an earlier round's: waiting for it would not wait for this server
    args = ["memory", "size=128M"] if plugin == "memory" else ["python", str(BACKEND)]
    proc = subprocess.Popen(
        ["nbdkit", "--foreground", "--unix", sock, *args],
        preexec_fn=_on_core(SERVER_CORE),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(sock):
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise RuntimeError(f"nbdkit {plugin} did not start: {err.strip()}")
            time.sleep(0.05)
        yield proc, sock
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def fio_nbd(sock: str, seconds: float) -> tuple[float, float]:
    """fio's nbd engine, 4 KiB randread at QD on CLIENT_CORE: (IOPS, fio's CPU seconds)."""
    seconds = max(1, round(seconds))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(
        ["fio", "--name=peers", "--ioengine=nbd", f"--uri=nbd+unix:///?socket={sock}",
         "--rw=randread", "--bs=4k", f"--iodepth={QD}", f"--runtime={seconds}",
         "--time_based", "--output-format=json"],
        preexec_fn=_on_core(CLIENT_CORE),
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    )  # fmt: skip
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"fio failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    report = json.loads(proc.stdout[proc.stdout.index("{") :])
    used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return float(report["jobs"][0]["read"]["iops"]), used


def run_nbd(plugin: str, seconds: float, workdir: Path) -> dict[str, float]:
    with nbdkit(plugin, workdir) as (server, sock):
        fio_nbd(sock, 1)  # warm-up, discarded
        cpu = process_cpu_seconds(server.pid)
        iops, client_cpu = fio_nbd(sock, seconds)
        server_cpu = process_cpu_seconds(server.pid) - cpu
    ios = iops * max(1, round(seconds))
    return {
        "iops": iops,
        "server_cpu_us_per_io": server_cpu / ios * 1e6,
        "client_cpu_us_per_io": client_cpu / ios * 1e6,
    }


# ---------------------------------------------------------------- NVMe/TCP: a Runtime and bdevperf


def serve(kind: str, interrupt: bool, port: str, workers: int) -> None:
    """The target (a subprocess): the backend or a malloc bdev over NVMe/TCP, until stdin ends."""
    from peers_backend import SIZE, Ram

    from pyspdk_sys.pybdev import PythonBdev
    from pyspdk_sys.runtime import Runtime

    os.sched_setaffinity(0, {SERVER_CORE})
    with Runtime(cpu_mask=hex(1 << SERVER_CORE), interrupt_mode=interrupt, name="peers") as rt:
        os.sched_setaffinity(0, {SERVER_CORE})  # the workers inherit it
        served = None
        if kind == "python":
            served = PythonBdev(
                rt, "Srv0", Ram(), num_blocks=SIZE // 4096, block_size=4096, workers=workers
            )
        else:
            rt.rpc("bdev_malloc_create", {"name": "Srv0", "num_blocks": SIZE // 4096,
                                          "block_size": 4096})  # fmt: skip
        rt.rpc("nvmf_create_transport", {"trtype": "TCP"})
        rt.rpc("nvmf_create_subsystem", {"nqn": NQN, "allow_any_host": True})
        rt.rpc("nvmf_subsystem_add_ns", {"nqn": NQN, "namespace": {"bdev_name": "Srv0"}})
        address = {"trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1", "trsvcid": port}
        rt.rpc("nvmf_subsystem_add_listener", {"nqn": NQN, "listen_address": address})
        print("ready", flush=True)
        sys.stdin.readline()
        rt.rpc("nvmf_delete_subsystem", {"nqn": NQN})
        if served is not None:
            served.close()


def run_nvmf(
    bdevperf: str, kind: str, interrupt: bool, seconds: float, workers: int, workdir: Path
) -> dict[str, float]:
    from bdevperf_ref import Bdevperf

    port = str(_free_port())
    command = [sys.executable, str(Path(__file__).resolve()), "--serve", kind, "--port", port]
    command += ["--workers", str(workers), *(["--interrupt"] if interrupt else [])]
    target = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert target.stdout is not None and target.stdin is not None
        if target.stdout.readline().strip() != "ready":
            err = target.stderr.read() if target.stderr else ""
            raise RuntimeError(f"the {kind} target did not start: {err.strip()[-800:]}")
        attach = {
            "name": "N0", "trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1",
            "trsvcid": port, "subnqn": NQN,
        }  # fmt: skip
        config = {
            "subsystems": [
                {
                    "subsystem": "bdev",
                    "config": [{"method": "bdev_nvme_attach_controller", "params": attach}],
                }
            ]
        }
        with Bdevperf(
            bdevperf, "nvme", workdir, hex(1 << CLIENT_CORE), config=config, bdev_name="N0n1"
        ) as perf:
            assert perf.proc is not None
            perf.run("randread", QD, 1)  # warm-up, discarded
            server_cpu = process_cpu_seconds(target.pid)
            client_cpu = process_cpu_seconds(perf.proc.pid)
            start = time.perf_counter()
            iops = perf.run("randread", QD, max(1, round(seconds)))
            elapsed = time.perf_counter() - start
            server_cpu = process_cpu_seconds(target.pid) - server_cpu
            client_cpu = process_cpu_seconds(perf.proc.pid) - client_cpu
        target.stdin.write("done\n")
        target.stdin.flush()
        target.wait(60)
    finally:
        if target.poll() is None:
            target.kill()
            target.wait()
    # The CPU times cover the whole call (test set-up included): per I/O over its wall time.
    ios = iops * elapsed
    return {
        "iops": iops,
        "server_cpu_us_per_io": server_cpu / ios * 1e6,
        "client_cpu_us_per_io": client_cpu / ios * 1e6,
    }


# ---------------------------------------------------------------- the run


def measure(rounds: int, seconds: float, workers: int) -> dict[str, Any]:
    bdevperf, origin = find_bdevperf(None)
    missing = [tool for tool in ("nbdkit", "fio") if shutil.which(tool) is None]
    if missing or not bdevperf:
        raise SystemExit(
            f"peers.py: cannot run without {', '.join(missing) or 'bdevperf'}"
            + ("" if bdevperf else f" ({origin})")
        )
    if (os.cpu_count() or 1) < 2:
        raise SystemExit("peers.py: needs two cores (server on core 0, client on core 1)")
    samples: dict[str, list[dict[str, float]]] = {label: [] for label, _, _ in SERVERS}
    with tempfile.TemporaryDirectory(prefix="pyspdk-peers-") as directory:
        workdir = Path(directory)
        for round_no in range(1, rounds + 1):
            for label, transport, options in SERVERS:
                log(f"round {round_no}/{rounds}: {label}")
                if transport == "nbd":
                    row = run_nbd(options["plugin"], seconds, workdir)
                else:
                    row = run_nvmf(
                        bdevperf, options["kind"], options["interrupt"], seconds, workers, workdir
                    )
                samples[label].append(row)
    medians = {
        label: {key: statistics.median(row[key] for row in rows) for key in rows[0]}
        for label, rows in samples.items()
    }
    return {
        "rounds": rounds,
        "seconds": seconds,
        "workers": workers,
        "bdevperf": bdevperf,
        "samples": samples,
        "medians": medians,
    }


def table(result: dict[str, Any]) -> str:
    medians = result["medians"]
    base = medians[PYTHON_NBD]["iops"]
    best = max(PYTHON_NVMF, key=lambda label: medians[label]["iops"])
    lines = [
        "### One Python backend, two servers: PythonBdev over NVMe/TCP vs nbdkit's python "
        "plugin over NBD",
        "",
        f"4 KiB randread, QD{QD}; servers on core {SERVER_CORE}, clients on core {CLIENT_CORE} "
        "(fio's nbd engine for NBD, bdevperf for NVMe/TCP). Median of "
        f"{result['rounds']} rounds of {result['seconds']} s; PythonBdev with "
        f"{result['workers']} worker(s). CPU per I/O: process CPU time / I/Os.",
        "",
        "| server | IOPS | vs nbdkit python | server CPU us/I/O | client CPU us/I/O |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for label, _, _ in SERVERS:
        row = medians[label]
        lines.append(
            f"| {label} | {row['iops']:,.0f} | {row['iops'] / base:.2f}x "
            f"| {row['server_cpu_us_per_io']:.2f} | {row['client_cpu_us_per_io']:.2f} |"
        )
    ratio = medians[best]["iops"] / base
    verdict = "met" if ratio >= 2 else "not met"
    lines += [
        "",
        f"Goal: PythonBdev over NVMe/TCP >= 2x nbdkit python: {ratio:.2f}x ({best}): {verdict}.",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="timed seconds per server")
    parser.add_argument("--workers", type=int, default=1, help="PythonBdev's worker threads")
    parser.add_argument("--json", type=Path, help="write the samples here ('-': stdout only)")
    parser.add_argument("--serve", choices=("python", "malloc"), help=argparse.SUPPRESS)
    parser.add_argument("--port", help=argparse.SUPPRESS)
    parser.add_argument("--interrupt", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.interrupt, args.port, args.workers)
        return 0
    if args.rounds < 1 or args.seconds < 1 or args.workers < 1:
        parser.error("--rounds >= 1, --seconds >= 1 and --workers >= 1")
    result = measure(args.rounds, args.seconds, args.workers)
    print_result(result, args.json, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
