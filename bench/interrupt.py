"""Benchmark: SPDK's interrupt mode beside polling, in one run.

    python3 bench/interrupt.py                      # 3 rounds, about a minute
    python3 bench/interrupt.py --rounds 1 --seconds 0.5 --count 1000   # a smoke run
    python3 bench/interrupt.py --json out.json      # also every sample ('-': JSON only)

Each round starts one Runtime per mode (polling, then interrupt_mode=True),
each in its own process, with an aio bdev over a file on tmpfs (/dev/shm) and
a malloc bdev, the reactor on core 0 and Python pinned to the other cores.
Each measures:

- idle: the process's CPU time over a window, in % of a core, with no device
  open and with the aio bdev open;
- QD1 latency (p50, p99) of 4 KiB random reads: blocking `read`, asyncio
  `aread`, and `read_many` of one I/O per call;
- QD32 IOPS of 4 KiB random reads, and the process's CPU time per I/O (reactor
  included): 32 threads each blocking in `read`, 32 asyncio tasks, `read_many`
  with 32 in flight.

Then SPDK's bdevperf on the same bdevs, with and without --interrupt-mode: its
idle CPU, QD1 latency from the bdev's histogram, QD32 IOPS and CPU per I/O.
In interrupt mode a malloc bdev keeps the reactor busy while it is open (its
channel's poller and the software accel module's have no interrupt): its
figures say what a busy reactor in interrupt mode costs, not what sleeping does.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from harness import (
    BENCH_DIR,
    BLOCK_SIZE,
    IO_SIZE,
    MEM_SIZE_MB,
    NUM_BLOCKS,
    find_bdevperf,
    percentiles_us,
    print_result,
    process_cpu_seconds,
    qd1_samples,
    qd1_samples_async,
)

MODES = ("polling", "interrupt")
KINDS = {"aio": "Aio0", "malloc": "Malloc0"}
QD = 32
FORMS = ("blocking", "asyncio", "many")
IDLE_SECONDS = 3.0


def _config(backing: str) -> dict[str, Any]:
    """An aio bdev over `backing` and a malloc bdev, both NUM_BLOCKS of BLOCK_SIZE."""
    size = {"num_blocks": NUM_BLOCKS, "block_size": BLOCK_SIZE}
    methods = [
        {
            "method": "bdev_aio_create",
            "params": {"name": KINDS["aio"], "filename": backing, "block_size": BLOCK_SIZE},
        },
        {"method": "bdev_malloc_create", "params": {"name": KINDS["malloc"], **size}},
    ]
    return {"subsystems": [{"subsystem": "bdev", "config": methods}]}


def _backing(directory: str) -> str:
    """A file of the devices' size on tmpfs, for the aio bdev."""
    fd, path = tempfile.mkstemp(prefix="pyspdk-bench-aio-", dir=directory)
    os.ftruncate(fd, NUM_BLOCKS * BLOCK_SIZE)
    os.close(fd)
    return path


def _running_ns(pid: int | str) -> int:
    """Time the process's live threads have run so far, in ns (schedstat: no tick rounding)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as stat:
                total += int(stat.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # the thread ended
    return total


def idle_percent(seconds: float, pid: int | str = "self") -> float:
    """% of a core the process used over `seconds` of wall time (its threads live throughout)."""
    ran, wall = _running_ns(pid), time.monotonic()
    time.sleep(seconds)
    return 100 * (_running_ns(pid) - ran) / 1e9 / (time.monotonic() - wall)


# ---------------------------------------------------------------- the worker


def _latencies(dev: Any, count: int) -> dict[str, list[int]]:
    """QD1 latency samples (ns, sorted) of each form on an open device."""
    from pyside import _LOOP, offsets

    source = offsets(11)
    buffer = bytearray(IO_SIZE)
    read, read_many, aread = dev.read, dev.read_many, dev.aread

    def blocking(offset: int) -> None:
        read(offset, IO_SIZE)

    def many(offset: int) -> None:
        read_many((offset,), IO_SIZE, buffer, depth=1)

    one_aread: Callable[[int], Awaitable[bytes]] = functools.partial(aread, length=IO_SIZE)

    return {
        "blocking": qd1_samples(blocking, source, count),
        "asyncio": _LOOP.run_until_complete(qd1_samples_async(one_aread, source, count)),
        "many": qd1_samples(many, source, count),
    }


PYSIDE_FORM = {"blocking": "threads", "asyncio": "asyncio", "many": "many"}
"""bench/pyside.py's form for each QD32 figure (threads: QD threads each blocking)."""


def _qd32(dev: Any, seconds: float) -> dict[str, Any]:
    """IOPS and the process's CPU per I/O of each form at QD32."""
    from pyside import FORMS as PYSIDE_FORMS

    found = {}
    for form in FORMS:
        run = functools.partial(PYSIDE_FORMS[PYSIDE_FORM[form]], dev, "read", QD)
        run(seconds / 4, 1)  # warm-up
        cpu = process_cpu_seconds()
        ops, elapsed = run(seconds, 2)
        used = process_cpu_seconds() - cpu
        found[form] = {"iops": ops / elapsed, "cpu_us_per_io": used / ops * 1e6}
    return found


def worker(mode: str, request: dict[str, Any]) -> dict[str, Any]:
    """One Runtime in `mode`: idle, QD1 latency and QD32 IOPS on each bdev kind."""
    from pyside import pin_off_reactor

    from pyspdk_sys.runtime import Runtime

    backing = _backing("/dev/shm")
    try:
        runtime = Runtime(
            mem_size_mb=MEM_SIZE_MB,
            cpu_mask="0x1",
            config=_config(backing),
            interrupt_mode=mode == "interrupt",
        ).start()
        pinned = pin_off_reactor()
        time.sleep(0.5)
        result: dict[str, Any] = {"pinned_to": pinned, "idle": idle_percent(request["idle"])}
        for kind, name in KINDS.items():
            dev = runtime.open_bdev(name)
            if kind == "aio":
                time.sleep(0.3)
                result["idle_open"] = idle_percent(request["idle"])
            latency = _latencies(dev, int(request["count"]))
            result[kind] = {
                "qd1": {
                    form: {k: v for k, v in percentiles_us(samples).items() if k != "quantiles"}
                    for form, samples in latency.items()
                },
                "qd32": _qd32(dev, float(request["seconds"])),
            }
            dev.close()
        runtime.stop()
        return result
    finally:
        os.unlink(backing)


# ---------------------------------------------------------------- bdevperf


def bdevperf_mode(path: str, mode: str, seconds: int, idle: float) -> dict[str, Any]:
    """bdevperf on each kind in `mode`: idle CPU, QD1 latency, QD32 IOPS and CPU per I/O."""
    from bdevperf_ref import Bdevperf, BdevperfError

    found: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="pyspdk-bench-") as workdir:
        backing = _backing("/dev/shm")
        try:
            for kind, name in KINDS.items():
                config = _config(backing)
                methods = config["subsystems"][0]["config"]
                config["subsystems"][0]["config"] = [
                    m for m in methods if m["params"]["name"] == name
                ]
                args = ("--interrupt-mode",) if mode == "interrupt" else ()
                try:
                    with Bdevperf(
                        path, kind, Path(workdir), config=config, bdev_name=name, args=args
                    ) as perf:
                        assert perf.proc is not None
                        pid = perf.proc.pid
                        time.sleep(0.5)
                        idle_cpu = idle_percent(idle, pid)
                        perf.run("randread", QD, 1)  # warm-up, discarded
                        latency = perf.latency(seconds)
                        cpu = process_cpu_seconds(pid)
                        start = time.perf_counter()
                        iops = perf.run("randread", QD, seconds)
                        elapsed = time.perf_counter() - start
                        used = process_cpu_seconds(pid) - cpu
                    found[kind] = {
                        "idle": idle_cpu,
                        "qd1": {k: v for k, v in latency.items() if k != "quantiles"},
                        "qd32": {"iops": iops, "cpu_us_per_io": used / (iops * elapsed) * 1e6},
                    }
                except BdevperfError as exc:
                    found[kind] = {"error": str(exc).splitlines()[0]}
        finally:
            os.unlink(backing)
    return found


# ---------------------------------------------------------------- the run


def _spawn_worker(mode: str, request: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--worker", mode],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"interrupt.py --worker {mode} failed ({proc.returncode}):\n{tail}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def measure(rounds: int, seconds: float, count: int, idle: float) -> dict[str, Any]:
    """Every round: the Python side in each mode, then bdevperf in each mode."""
    bdevperf, origin = find_bdevperf(None)
    samples: dict[str, list[Any]] = {
        f"{who}_{m}": [] for who in ("python", "bdevperf") for m in MODES
    }
    request = {"seconds": seconds, "count": count, "idle": idle}
    for round_no in range(1, rounds + 1):
        for mode in MODES:
            print(
                f"interrupt: round {round_no}/{rounds}, Python, {mode}", file=sys.stderr, flush=True
            )
            samples[f"python_{mode}"].append(_spawn_worker(mode, request))
        if bdevperf:
            for mode in MODES:
                print(
                    f"interrupt: round {round_no}/{rounds}, bdevperf, {mode}",
                    file=sys.stderr,
                    flush=True,
                )
                samples[f"bdevperf_{mode}"].append(
                    bdevperf_mode(bdevperf, mode, max(1, round(seconds)), idle)
                )
    return {
        "rounds": rounds,
        "seconds": seconds,
        "count": count,
        "idle_seconds": idle,
        "bdevperf": bdevperf or f"not run: {origin}",
        "samples": samples,
        "medians": medians(samples),
    }


def _median_at(rows: list[Any], path: tuple[str, ...]) -> float | None:
    values = []
    for row in rows:
        for key in path:
            row = row.get(key) if isinstance(row, dict) else None
        if isinstance(row, (int, float)):
            values.append(float(row))
    return statistics.median(values) if values else None


FIGURES: list[tuple[str, tuple[str, ...]]] = [
    ("idle, no device: % of a core", ("idle",)),
    ("idle, aio bdev open: % of a core", ("idle_open",)),
]
for _kind in KINDS:
    for _form in FORMS:
        FIGURES.append((f"{_kind}, {_form}: QD1 p50 us", (_kind, "qd1", _form, "p50")))
    for _form in FORMS:
        FIGURES.append((f"{_kind}, {_form}: QD32 IOPS", (_kind, "qd32", _form, "iops")))
        FIGURES.append(
            (f"{_kind}, {_form}: QD32 CPU us per I/O", (_kind, "qd32", _form, "cpu_us_per_io"))
        )
BDEVPERF_FIGURES: list[tuple[str, tuple[str, ...]]] = []
for _kind in KINDS:
    BDEVPERF_FIGURES += [
        (f"bdevperf {_kind}: idle % of a core", (_kind, "idle")),
        (f"bdevperf {_kind}: QD1 p50 us", (_kind, "qd1", "p50")),
        (f"bdevperf {_kind}: QD32 IOPS", (_kind, "qd32", "iops")),
        (f"bdevperf {_kind}: QD32 CPU us per I/O", (_kind, "qd32", "cpu_us_per_io")),
    ]


def medians(samples: dict[str, list[Any]]) -> dict[str, dict[str, float | None]]:
    """{mode: {figure label: median over rounds}}, for the Python side and bdevperf."""
    found: dict[str, dict[str, float | None]] = {}
    for mode in MODES:
        found[mode] = {
            label: _median_at(samples[f"python_{mode}"], path) for label, path in FIGURES
        }
        found[mode].update(
            {
                label: _median_at(samples[f"bdevperf_{mode}"], path)
                for label, path in BDEVPERF_FIGURES
            }
        )
    return found


def _cell(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:.2f}"


def table(result: dict[str, Any]) -> str:
    """The figures of both modes side by side, with interrupt / polling."""
    polling, interrupt = result["medians"]["polling"], result["medians"]["interrupt"]
    lines = [
        "### Interrupt mode beside polling (4 KiB randread; aio over tmpfs and malloc)",
        "",
        f"One Runtime per mode and round, reactor on core 0, Python on the others. Median of "
        f"{result['rounds']} rounds; {result['seconds']} s per IOPS figure, {result['count']} "
        f"I/Os per latency figure, idle over {result['idle_seconds']} s. CPU per I/O is the "
        "whole process's (reactor included). Goals: idle in interrupt mode <= 1% of a core; "
        "blocking QD1 p50 interrupt / polling <= 2x. In interrupt mode malloc keeps the reactor "
        "busy while open (pollers without interrupts).",
        "",
        "| figure | polling | interrupt | interrupt / polling |",
        "| --- | ---: | ---: | ---: |",
    ]
    for label, _ in FIGURES + BDEVPERF_FIGURES:
        a, b = polling.get(label), interrupt.get(label)
        ratio = f"{b / a:.2f}x" if a and b is not None else "-"
        lines.append(f"| {label} | {_cell(a)} | {_cell(b)} | {ratio} |")
    errors = {
        f"{mode} {kind}": row[kind]["error"]
        for mode in MODES
        for row in result["samples"][f"bdevperf_{mode}"]
        for kind in KINDS
        if "error" in row.get(kind, {})
    }
    for where, error in sorted(errors.items()):
        lines.append(f"\nbdevperf {where} did not run: {error}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=1.0, help="timed seconds per IOPS figure")
    parser.add_argument("--count", type=int, default=10_000, help="I/Os per latency figure")
    parser.add_argument(
        "--idle", type=float, default=IDLE_SECONDS, help="seconds of each idle figure"
    )
    parser.add_argument("--json", type=Path, help="write the samples here ('-': stdout only)")
    parser.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        sys.path.insert(0, str(BENCH_DIR))
        result = worker(args.worker, json.loads(sys.stdin.read()))
        print(json.dumps(result))
        return 0
    if args.rounds < 1 or args.seconds <= 0 or args.count < 10 or args.idle <= 0:
        parser.error("--rounds >= 1, --seconds > 0, --count >= 10 and --idle > 0")
    result = measure(args.rounds, args.seconds, args.count, args.idle)
    print_result(result, args.json, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
