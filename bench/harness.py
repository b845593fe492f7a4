"""What the benchmark's parts share: device sizes, configs, tools, statistics."""

from __future__ import annotations

import array
import contextlib
import hashlib
import importlib.util
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

BENCH_DIR = Path(__file__).resolve().parent
MEM_SIZE_MB = 1024
"""SPDK's memory without hugepages, for the Python runtime and bdevperf alike."""

BLOCK_SIZE = 4096
NUM_BLOCKS = 32768
"""128 MiB devices: a 1 GiB malloc bdev does not fit in 1024 MiB of no_huge memory."""

IO_SIZE = 4096
BDEVS = {"malloc": "Malloc0", "null": "Null0"}
_CREATE = {"malloc": "bdev_malloc_create", "null": "bdev_null_create"}

SWEEP_QDS = (1, 2, 4, 8, 16, 32, 64, 128)
TABLE_QDS = (1, 32)
THREADS = 8
"""Threads of the multi-threaded blocking form; each keeps one I/O outstanding."""


def bdev_config(kinds: Iterable[str]) -> dict[str, Any]:
    """A JSON config (SPDK's subsystems format) creating one bdev per kind."""
    methods = [
        {
            "method": _CREATE[kind],
            "params": {"name": BDEVS[kind], "num_blocks": NUM_BLOCKS, "block_size": BLOCK_SIZE},
        }
        for kind in kinds
    ]
    return {"subsystems": [{"subsystem": "bdev", "config": methods}]}


SLOW_LATENCY_US = 100
"""The waiting benchmark's delay bdev: read and write latency longer than any spin worth doing."""


def waiting_config() -> dict[str, Any]:
    """A malloc bdev, and a delay bdev of SLOW_LATENCY_US over a second malloc bdev."""
    config = bdev_config(["malloc"])
    methods = config["subsystems"][0]["config"]
    methods.append(
        {
            "method": "bdev_malloc_create",
            "params": {"name": "Malloc1", "num_blocks": NUM_BLOCKS, "block_size": BLOCK_SIZE},
        }
    )
    latency = {
        f"{kind}_{op}_latency": SLOW_LATENCY_US
        for kind in ("avg", "p99")
        for op in ("read", "write")
    }
    methods.append(
        {
            "method": "bdev_delay_create",
            "params": {"name": "Delay0", "base_bdev_name": "Malloc1", **latency},
        }
    )
    return config


def memory_kib(pid: int | str = "self") -> dict[str, int]:
    """Resident memory of a process in KiB: VmRSS, VmHWM (peak) and dpdk.

    `dpdk` is the resident part of DPDK's memory (without hugepages, the
    mappings of the "/memfd:nohuge" file), read from /proc/<pid>/smaps.
    """
    found: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0])
    dpdk = 0
    in_dpdk = False
    with open(f"/proc/{pid}/smaps") as smaps:
        for line in smaps:
            first = line.split(maxsplit=1)[0]
            if "-" in first and not first.endswith(":"):
                in_dpdk = "nohuge" in line
            elif in_dpdk and first == "Rss:":
                dpdk += int(line.split()[1])
    found["dpdk"] = dpdk
    return found


def process_cpu_seconds(pid: int | str = "self") -> float:
    """CPU time of a running process so far (utime + stime: every thread, ended ones too)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """Busy time of every CPU of this machine so far (/proc/stat: all but idle and iowait)."""
    with open("/proc/stat") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is inside user)
    return (sum(fields[:3]) + sum(fields[5:8])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU time other processes used while we measured (they skew the figures).

    Busy time of the whole machine from /proc/stat, less this process's and its
    finished children's (os.times) and that of the running processes `pids`
    (/proc/<pid>/stat): what is left was someone else's, for example another
    SPDK application busy-polling the reactor's core.
    """

    def __init__(self, pids: Sequence[int] = ()) -> None:
        self.pids = list(pids)
        self._start = self._read()

    def _read(self) -> tuple[float, float]:
        busy = machine_busy_seconds()
        times = os.times()
        own = times.user + times.system + times.children_user + times.children_system
        for pid in self.pids:
            with contextlib.suppress(OSError, IndexError, ValueError):  # it ended
                own += process_cpu_seconds(pid)
        return busy, own

    def foreign_seconds(self) -> float:
        """CPU seconds other processes used since this meter started."""
        busy, own = self._read()
        return max(0.0, (busy - self._start[0]) - (own - self._start[1]))


def disturbed(foreign_cpu_s: float, seconds: float) -> bool:
    """Whether others took enough CPU during a measurement to retry it."""
    return foreign_cpu_s > 0.05 + 0.1 * seconds


RETRIES = 2
"""Retries of a disturbed measurement, after a pause of 1 s, then 2 s."""


def measured(
    measure: Callable[[], tuple[T, float]], pids: Sequence[int] = ()
) -> tuple[T, float, int]:
    """Run `measure` (returning a result and its seconds), retried while disturbed.

    The result of the last attempt, the foreign CPU seconds during it, and
    the number of attempts.
    """
    attempt = 0
    while True:
        attempt += 1
        meter = CpuMeter(pids)
        result, seconds = measure()
        foreign = meter.foreign_seconds()
        if not disturbed(foreign, seconds) or attempt > RETRIES:
            return result, foreign, attempt
        time.sleep(attempt)


def package_fingerprint() -> str:
    """A short hash of the installed pyspdk_sys (its .py files and compiled module).

    Others may reinstall the package while the benchmark runs; differing
    fingerprints between workers say so.
    """
    spec = importlib.util.find_spec("pyspdk_sys")
    if spec is None or spec.origin is None:
        return "not installed"
    digest = hashlib.sha256()
    for path in sorted(Path(spec.origin).parent.iterdir()):
        if path.is_file() and path.suffix in (".py", ".so"):
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def source_state() -> str:
    """The repository's commit and whether src/ or cdefs/ differ from it, if in git."""
    root = BENCH_DIR.parent
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "src", "cdefs"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "not a git checkout"
    return head + (" with uncommitted changes in src/ or cdefs/" if dirty else "")


def cpu_model() -> str:
    """The CPU model name /proc/cpuinfo gives, or 'unknown'."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return "unknown"


def find_bdevperf(option: str | None) -> tuple[str | None, str]:
    """bdevperf's path and where it came from, or None and why it was not found.

    Looked for in order: --bdevperf, $PYSPDK_BDEVPERF, then the `toolsdir`
    variable of the spdk_fat pkg-config file (build.sh installs it there).
    """
    for origin, candidate in (
        ("--bdevperf", option),
        ("PYSPDK_BDEVPERF", os.environ.get("PYSPDK_BDEVPERF")),
    ):
        if candidate:
            if os.access(candidate, os.X_OK) and Path(candidate).is_file():
                return candidate, origin
            return None, f"{origin} names {candidate!r}, which is not an executable file"
    if shutil.which("pkg-config") is None:
        return None, "no --bdevperf, no PYSPDK_BDEVPERF and no pkg-config to find spdk_fat"
    try:
        toolsdir = subprocess.run(
            ["pkg-config", "--variable=toolsdir", "spdk_fat"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except subprocess.CalledProcessError:
        return None, "pkg-config does not know spdk_fat (set --bdevperf or PYSPDK_BDEVPERF)"
    candidate = str(Path(toolsdir) / "bdevperf") if toolsdir else ""
    if candidate and os.access(candidate, os.X_OK):
        return candidate, "pkg-config spdk_fat toolsdir"
    return None, (
        f"no bdevperf in spdk_fat's toolsdir {toolsdir!r} (was the library built with "
        "--no-tools?); set --bdevperf or PYSPDK_BDEVPERF"
    )


def median(values: Sequence[float]) -> float | None:
    """The median, or None for no values."""
    return statistics.median(values) if values else None


def spread(values: Sequence[float]) -> dict[str, Any]:
    """Median, min, max and the samples themselves."""
    if not values:
        return {"median": None, "min": None, "max": None, "samples": []}
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "samples": list(values),
    }


def run_worker(args: Sequence[str], payload: Any, timeout: float) -> Any:
    """Run bench/pyside.py in a new process (SPDK starts once per process); its JSON reply."""
    proc = subprocess.run(
        [sys.executable, str(BENCH_DIR / "pyside.py"), *args],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"pyside.py {' '.join(args)} failed ({proc.returncode}):\n{tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


LATENCY_POINTS = (50.0, 99.0, 99.9)
"""Percentiles reported for QD1 latency."""


def percentiles_us(sorted_ns: Sequence[int]) -> dict[str, Any]:
    """p50/p99/p99.9 (microseconds) of sorted latencies, and 101 quantiles for a CDF plot."""
    n = len(sorted_ns)

    def at(fraction: float) -> float:
        return sorted_ns[min(n - 1, int(fraction * n))] / 1000

    return {
        **{f"p{point:g}": at(point / 100) for point in LATENCY_POINTS},
        "mean": sum(sorted_ns) / n / 1000,
        "quantiles": [at(i / 100) for i in range(101)],
        "count": n,
    }


def histogram_percentiles_us(reply: dict[str, Any]) -> dict[str, Any]:
    """The same figures from SPDK's bdev histogram (`bdev_get_histogram`'s reply).

    The histogram counts ticks in buckets: for each range r (min_range..max_range)
    2**granularity buckets, bucket i of range r holding values below
    2**(r + g - 1) + (i + 1) * 2**(r - 1) (for r > 0; below i + 1 for r = 0).
    A percentile is read as the upper edge of the bucket that reaches it.
    """
    import base64

    raw = base64.b64decode(reply["histogram"])
    counts = array.array("Q", raw)
    if sys.byteorder != "little":
        counts.byteswap()
    granularity = int(reply["granularity"])
    per_range = 1 << granularity
    ticks_per_us = int(reply["tsc_rate"]) / 1e6
    edges = []
    for position in range(len(counts)):
        rng = int(reply["min_range"]) + position // per_range
        index = position % per_range + 1
        edge = (1 << (rng + granularity - 1)) + (index << (rng - 1)) if rng > 0 else index
        edges.append(edge / ticks_per_us)
    total = sum(counts)
    if total == 0:
        raise ValueError("the bdev histogram counted no I/O")

    def at(fraction: float) -> float:
        target = max(1, math.ceil(fraction * total))
        so_far = 0
        for edge, count in zip(edges, counts, strict=True):
            so_far += count
            if so_far >= target:
                return edge
        return edges[-1]

    return {
        **{f"p{point:g}": at(point / 100) for point in LATENCY_POINTS},
        "quantiles": [at(i / 100) for i in range(101)],
        "count": total,
    }


def qd1_samples(call: Callable[[int], object], offsets: Sequence[int], count: int) -> list[int]:
    """ns of each of `count` calls of call(offset), one at a time, sorted; as many again
    as a tenth of `count` run first to warm up and are left out."""
    clock = time.perf_counter_ns
    samples = []
    for i in range(count + count // 10):
        offset = offsets[i % len(offsets)]
        start = clock()
        call(offset)
        samples.append(clock() - start)
    return sorted(samples[count // 10 :])


async def qd1_samples_async(
    call: Callable[[int], Awaitable[object]], offsets: Sequence[int], count: int
) -> list[int]:
    """qd1_samples for a coroutine function: each call awaited before the next."""
    clock = time.perf_counter_ns
    samples = []
    for i in range(count + count // 10):
        offset = offsets[i % len(offsets)]
        start = clock()
        await call(offset)
        samples.append(clock() - start)
    return sorted(samples[count // 10 :])


def print_result(
    result: dict[str, Any], json_path: Path | None, table: Callable[[dict[str, Any]], str]
) -> None:
    """How a section script ends: `--json -` prints the JSON alone (run.py reads it);
    otherwise the table, and the JSON written to json_path if one is given."""
    if json_path is not None and str(json_path) == "-":
        print(json.dumps(result))
        return
    print(table(result))
    if json_path is not None:
        json_path.write_text(json.dumps(result, indent=1) + "\n")
