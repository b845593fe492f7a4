"""Benchmark: what serving a bdev from Python costs, against the floor of calling Python.

    python3 bench/pybdev.py                 # 3 rounds, about 60 s
    python3 bench/pybdev.py --json out.json

A Python-served bdev whose backend's readinto does nothing, read with
read_many (4 KiB, QD32, zero-copy into a DmaBuffer) in this process, with
1, 2 and 4 worker threads; and written with write_many, whose backend's
write does nothing, with 1 and 2. The floor: a bare loop calling the same
backend method with one memoryview, in the same run; the goal is at least
0.5x that. A second floor gives each call a view of its own I/O's buffer,
sliced and released as the workers do: what any Python backend call per I/O
costs. One more row has readinto fill the buffer (4 KiB from a bytes), as
any real backend does.

The workers hand the backend bounce memory of their own, never SPDK's
(pybdev.py): fetch zeroes each read's place (or copies a write's data in)
and commit copies a read's data out, in C, without the GIL. The figures
include those copies; the last row, a backend that keeps a view of every
buffer, adds the new bounce memory each of its batches then takes.
SPDK's reactor runs on core 0; Python (the caller and the workers) is
pinned to the other cores when there are any.

Prints a Markdown table on stdout; with --json, writes every sample.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from harness import print_result

CPU_MASK = "0x1"
IO_SIZE = 4096
NUM_BLOCKS = 32768
QD = 32
CALL = 1024  # I/Os per read_many call
WORKERS = (1, 2, 4)
WRITE_WORKERS = (1, 2)


class Nothing:
    """The backend: reads and writes succeed and do nothing."""

    def readinto(self, offset: int, buffer: memoryview) -> None:
        pass

    def write(self, offset: int, data: memoryview) -> None:
        pass


class Fills(Nothing):
    """A backend whose readinto fills the buffer, as any real one does."""

    DATA = bytes(IO_SIZE)

    def readinto(self, offset: int, buffer: memoryview) -> None:
        try:
            buffer[:] = self.DATA
        except ValueError:  # not 4 KiB: SPDK's own reads, such as its examine of a new bdev
            buffer[:] = bytes(len(buffer))


class Keeps(Nothing):
    """A backend that keeps a view of the last buffer it read into (its bug)."""

    def __init__(self) -> None:
        self.kept: memoryview | None = None

    def readinto(self, offset: int, buffer: memoryview) -> None:
        self.kept = buffer[:]


def pin_off_reactor() -> list[int]:
    reactor = {0}
    others = sorted(set(os.sched_getaffinity(0)) - reactor)
    if others:
        os.sched_setaffinity(0, others)
    return others


def floor(seconds: float) -> float:
    """Calls per second of backend.readinto(offset, view) in a bare loop."""
    backend = Nothing()
    view = memoryview(bytearray(IO_SIZE))
    readinto = backend.readinto
    offsets = [random.randrange(NUM_BLOCKS) * IO_SIZE for _ in range(CALL)]
    done = 0
    start = time.perf_counter()
    end = start + seconds
    while time.perf_counter() < end:
        for offset in offsets:
            readinto(offset, view)
        done += len(offsets)
    return done / (time.perf_counter() - start)


def floor_with_views(seconds: float) -> float:
    """Calls per second of readinto(offset, view) with a fresh view of the
    I/O's place in one buffer per call, released after it."""
    backend = Nothing()
    whole = memoryview(bytearray(CALL * IO_SIZE))
    readinto = backend.readinto
    offsets = [random.randrange(NUM_BLOCKS) * IO_SIZE for _ in range(CALL)]
    places = [(offset, i * IO_SIZE, (i + 1) * IO_SIZE) for i, offset in enumerate(offsets)]
    done = 0
    start = time.perf_counter()
    end = start + seconds
    while time.perf_counter() < end:
        for offset, lo, hi in places:
            view = whole[lo:hi]
            readinto(offset, view)
            view.release()
        done += len(places)
    return done / (time.perf_counter() - start)


def served(
    runtime: Any,
    workers: int,
    seconds: float,
    seed: int,
    *,
    write: bool = False,
    backend: Nothing | None = None,
) -> float:
    """IOPS of read_many (or write_many) over a Python-served bdev with `workers` threads."""
    from pyspdk_sys.bdev import DmaBuffer
    from pyspdk_sys.pybdev import PythonBdev

    name = f"PyBench{workers}_{seed}_{'w' if write else 'r'}_{type(backend).__name__}"
    rng = random.Random(seed)
    offsets = [rng.randrange(NUM_BLOCKS) * IO_SIZE for _ in range(CALL)]
    with PythonBdev(
        runtime,
        name,
        backend or Nothing(),
        num_blocks=NUM_BLOCKS,
        block_size=IO_SIZE,
        workers=workers,
    ):
        device = runtime.open_bdev(name, queue_depth=QD)
        buffer = DmaBuffer(runtime, CALL * IO_SIZE)
        run = device.write_many if write else device.read_many
        try:
            warm_end = time.perf_counter() + seconds / 4
            while time.perf_counter() < warm_end:
                run(offsets, IO_SIZE, buffer, depth=QD)
            done = 0
            start = time.perf_counter()
            end = start + seconds
            while time.perf_counter() < end:
                run(offsets, IO_SIZE, buffer, depth=QD)
                done += CALL
            return done / (time.perf_counter() - start)
        finally:
            device.close()
            buffer.close()


def measure(rounds: int, seconds: float) -> dict[str, Any]:
    from pyspdk_sys.runtime import Runtime

    pinned = pin_off_reactor()
    samples: dict[str, list[float]] = {
        "floor": [],
        "floor_views": [],
        **{f"w{w}": [] for w in WORKERS},
        "fills_w1": [],
        **{f"write_w{w}": [] for w in WRITE_WORKERS},
        "keeps_w1": [],
    }
    with Runtime(cpu_mask=CPU_MASK, name="pybdev-bench") as runtime:
        for round_no in range(rounds):
            samples["floor"].append(floor(seconds))
            samples["floor_views"].append(floor_with_views(seconds))
            for workers in WORKERS:
                samples[f"w{workers}"].append(served(runtime, workers, seconds, round_no))
            samples["fills_w1"].append(served(runtime, 1, seconds, round_no, backend=Fills()))
            for workers in WRITE_WORKERS:
                samples[f"write_w{workers}"].append(
                    served(runtime, workers, seconds, round_no, write=True)
                )
            samples["keeps_w1"].append(served(runtime, 1, seconds, round_no, backend=Keeps()))
    medians = {key: statistics.median(values) for key, values in samples.items()}
    return {
        "samples": samples,
        "medians": medians,
        "reactor_core": 0,
        "python_cores": pinned,
        "rounds": rounds,
        "seconds": seconds,
        "qd": QD,
        "io_size": IO_SIZE,
    }


def table(result: dict[str, Any]) -> str:
    medians = result["medians"]
    base = medians["floor"]
    views = medians.get("floor_views")  # absent from results before 2026-12-05
    lines = [
        "### Python-served bdev (readinto does nothing; read_many, 4 KiB, QD32, in-process)",
        "",
        f"Reactor on core {result['reactor_core']}; Python pinned to cores "
        f"{result['python_cores'] or 'any (one core only)'}. Median of {result['rounds']} rounds "
        f"of {result['seconds']} s.",
        "",
        "| workers | IOPS | IOPS per worker | vs the bare loop (goal >= 0.5x) "
        "| vs the loop with a view per call |",
        "| --- | --- | --- | --- | --- |",
        f"| bare loop calling readinto | {base:,.0f} | | 1.00x | |",
    ]
    if views:
        lines.append(
            f"| bare loop, a view of the I/O's buffer per call | {views:,.0f} | "
            f"| {views / base:.3f}x | 1.00x |"
        )
    for workers in WORKERS:
        iops = medians[f"w{workers}"]
        per_view = f"{iops / views:.2f}x" if views else ""
        lines.append(
            f"| {workers} | {iops:,.0f} | {iops / workers:,.0f} | {iops / base:.3f}x | {per_view} |"
        )
    # Absent from results before 2026-12-07.
    extra = [("1, readinto fills the buffer", "fills_w1", 1)]
    extra += [(f"{w}, write_many", f"write_w{w}", w) for w in WRITE_WORKERS]
    extra.append(("1, a backend that keeps a view", "keeps_w1", 1))
    for label, key, workers in extra:
        if key in medians:
            iops = medians[key]
            per_view = f"{iops / views:.2f}x" if views else ""
            lines.append(
                f"| {label} | {iops:,.0f} | {iops / workers:,.0f} | {iops / base:.3f}x "
                f"| {per_view} |"
            )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per figure")
    parser.add_argument("--json", type=Path, help="write the samples here ('-': stdout only)")
    args = parser.parse_args()
    if args.rounds < 1 or args.seconds <= 0:
        parser.error("--rounds must be >= 1 and --seconds > 0")
    result = measure(args.rounds, args.seconds)
    print_result(result, args.json, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
