"""pyspdk-sys benchmarks: one command runs them all, against references measured alongside.

    python3 bench/run.py            # 5 rounds, about 15 minutes on 2 cores
    python3 bench/run.py --quick    # 3 short rounds, under 3 minutes
    python3 bench/run.py --save     # also rewrite the committed RESULTS.md and plots

Prints the tables and writes bench/results/results.json (every sample; not
tracked by git). Only with --save does it rewrite the tracked files,
bench/RESULTS.md and the plots. See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import interrupt
import kernel_peers
import peers
import pybdev
import report
from bdevperf_ref import BdevperfError, run_reference
from harness import (
    BDEVS,
    BENCH_DIR,
    SWEEP_QDS,
    TABLE_QDS,
    THREADS,
    CpuMeter,
    cpu_model,
    find_bdevperf,
    package_fingerprint,
    run_worker,
    source_state,
)

QUICK_SWEEP_QDS = (1, 4, 8, 32, 128)
WRITE_QDS = (1, THREADS, 32)
"""randwrite depths: the table's, plus the 8-thread blocking form's."""


def io_cells(sweep: tuple[int, ...]) -> list[dict[str, Any]]:
    """Every Python block I/O measurement of one round, in the order it runs."""
    cells: list[dict[str, Any]] = []
    for bdev in BDEVS:
        for op, depths in (("read", sweep), ("write", TABLE_QDS)):
            cells.append({"bdev": bdev, "op": op, "form": "blocking", "qd": 1})
            cells.append({"bdev": bdev, "op": op, "form": "threads", "qd": THREADS})
            for form in ("futures", "asyncio", "batch", "many"):
                cells.extend({"bdev": bdev, "op": op, "form": form, "qd": qd} for qd in depths)
    # The asyncio batches, and CPython's own floors for the futures and asyncio forms.
    cells.extend({"bdev": "malloc", "op": "read", "form": "amany", "qd": qd} for qd in (1, 32))
    for form in ("floor_asyncio", "floor_futures"):
        cells.extend({"bdev": "malloc", "op": "read", "form": form, "qd": qd} for qd in (1, 32))
    return cells


WAIT_POLICIES = ("adaptive", "spin 50 us", "futex")
WAIT_SHAPES = (
    ("malloc", "threads", 1),
    ("malloc", "threads", 4),
    ("malloc", "threads", 16),
    ("malloc", "many", 1),
    ("malloc", "many", 32),
    ("slow", "threads", 1),
    ("slow", "threads", 16),
    ("slow", "many", 32),
)
"""Blocking reads from 1-16 threads and read_many at QD1 and QD32, on a fast and a slow bdev."""


def waiting_cells() -> list[dict[str, Any]]:
    """Each waiting policy on each shape, the policies of one shape side by side in time."""
    return [
        {"bdev": bdev, "form": form, "qd": qd, "policy": policy}
        for bdev, form, qd in WAIT_SHAPES
        for policy in WAIT_POLICIES
    ]


REACTORS_MASK = "0x3"
REACTOR_CELLS: list[dict[str, Any]] = [
    # depth 64: 32 per core, as bdevperf -q 32 runs on each core with -C.
    {"bdev": "null", "form": "many", "qd": 64, "lanes": None},
    {"bdev": "null", "form": "many", "qd": 64, "lanes": 1},
    {"bdev": "null", "form": "many_16k", "qd": 64, "lanes": None},
    {"bdev": "null", "form": "many_16k", "qd": 64, "lanes": 1},
    {"bdev": "malloc", "form": "threads", "qd": THREADS, "lanes": None},
    {"bdev": "malloc", "form": "threads", "qd": THREADS, "lanes": 1},
]
"""Two reactors (cpu_mask 0x3): read_many and blocking threads, over a lane per core and one."""


def reference_tests(sweep: tuple[int, ...]) -> list[tuple[str, int]]:
    """bdevperf tests of one round for one bdev: the read sweep and the write depths."""
    return [("randread", qd) for qd in sweep] + [("randwrite", qd) for qd in WRITE_QDS]


def time_command(code: str) -> float:
    """Wall time of `python -c code` as a whole process, in ms."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return (time.perf_counter() - start) * 1000


def measure_imports(runs: int) -> dict[str, list[float]]:
    """Whole-process wall time of three commands, interleaved, `runs` times each."""
    commands = {"pass": "pass", "cffi": "import cffi", "pyspdk_sys": "import pyspdk_sys"}
    for code in commands.values():
        time_command(code)  # warm the page cache
    samples: dict[str, list[float]] = {key: [] for key in commands}
    for _ in range(runs):
        for key, code in commands.items():
            samples[key].append(time_command(code))
    return samples


def import_breakdown() -> list[dict[str, Any]]:
    """`python -X importtime -c 'import pyspdk_sys'`: the slowest modules (cumulative us)."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import pyspdk_sys"],
        capture_output=True,
        text=True,
        check=True,
    )
    rows = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        self_us, cumulative_us, name = (part.strip() for part in line[12:].split("|"))
        rows.append(
            {"module": name.strip(), "self_us": int(self_us), "cumulative_us": int(cumulative_us)}
        )
    rows.sort(key=lambda row: row["self_us"], reverse=True)
    return rows[:8]


def log(message: str) -> None:
    """Progress, on stderr."""
    print(message, file=sys.stderr, flush=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="3 short rounds and a shorter QD sweep"
    )
    parser.add_argument("--rounds", type=int, help="rounds (default 5, --quick 3)")
    parser.add_argument(
        "--no-pybdev", action="store_true", help="skip the Python-served bdev section (pybdev.py)"
    )
    parser.add_argument(
        "--seconds", type=float, help="timed seconds per Python I/O cell (default 0.8, --quick 0.4)"
    )
    parser.add_argument(
        "--bdevperf",
        help="bdevperf to compare with (else $PYSPDK_BDEVPERF, else pkg-config spdk_fat toolsdir)",
    )
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="leave Python threads free to run on the reactor's core",
    )
    parser.add_argument(
        "--import-runs", type=int, help="runs of each import command (default 20, --quick 10)"
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=BENCH_DIR / "results" / "results.json",
        help="where to write every sample",
    )
    parser.add_argument(
        "--from-json",
        type=Path,
        help="measure nothing: render the tables, RESULTS.md and the plot from a results.json",
    )
    parser.add_argument(
        "--transports",
        action="store_true",
        help="also run bench/transports.py (vhost-user and NVMe/TCP against bdevperf)",
    )
    parser.add_argument(
        "--save",
        action="store_true",
        help="rewrite the tracked bench/RESULTS.md and plots (by default they are left alone)",
    )
    parser.add_argument(
        "--nvme-guest",
        action="store_true",
        help="also run bench/nvme_guest.py (boots the QEMU guest: minutes; ratios to bdevperf)",
    )
    parser.add_argument(
        "--no-save",
        action="store_true",
        help="the default: leave bench/RESULTS.md and the plots alone (kept for old commands)",
    )
    parser.add_argument(
        "--no-peers",
        action="store_true",
        help="skip the head-to-head with nbdkit's python plugin (peers.py)",
    )
    parser.add_argument(
        "--kernel-peers",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the kernel clients in the QEMU guest, /dev/nbd0 to nbdkit against ublk to "
        "PythonBdev (kernel_peers.py: a boot and minutes; default: on, off with --quick)",
    )
    parser.add_argument(
        "--no-interrupt",
        action="store_true",
        help="skip the interrupt-mode section (interrupt.py)",
    )
    args = parser.parse_args()
    if args.kernel_peers is None:
        args.kernel_peers = not args.quick
    args.rounds = args.rounds or (3 if args.quick else 5)
    args.seconds = args.seconds or (0.4 if args.quick else 0.8)
    args.import_runs = args.import_runs or (10 if args.quick else 20)
    if args.rounds < 1 or args.seconds <= 0 or args.import_runs < 1:
        parser.error("--rounds, --seconds and --import-runs must be positive")
    if args.save and args.no_save:
        parser.error("--save and --no-save contradict each other")
    return args


def measure_pybdev(args: argparse.Namespace) -> dict[str, Any]:
    """bench/pybdev.py in its own process (SPDK starts once per process): its samples."""
    rounds = 2 if args.quick else 3
    proc = subprocess.run(
        [sys.executable, str(BENCH_DIR / "pybdev.py"), "--rounds", str(rounds), "--json", "-"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"pybdev.py failed ({proc.returncode}):\n{tail}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def run_section(script: str, options: list[str], timeout: float) -> dict[str, Any]:
    """bench/<script> in its own process with `options` and --json -: its samples.

    Its log goes to our stderr; its last stdout line is the JSON.
    """
    command = [sys.executable, str(BENCH_DIR / script), *options, "--json", "-"]
    proc = subprocess.run(command, stdout=subprocess.PIPE, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{script} failed ({proc.returncode}); its log is above")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def measure_interrupt(args: argparse.Namespace) -> dict[str, Any]:
    """bench/interrupt.py (it starts one process per mode)."""
    rounds, seconds, count, idle = (1, 0.5, 2_000, 2.0) if args.quick else (3, 1.0, 10_000, 3.0)
    options = ["--rounds", str(rounds), "--seconds", str(seconds)]
    return run_section("interrupt.py", [*options, "--count", str(count), "--idle", str(idle)], 1800)


def measure_peers(args: argparse.Namespace) -> dict[str, Any]:
    """bench/peers.py: nbdkit and SPDK serving one Python backend."""
    rounds, seconds = (1, 2) if args.quick else (3, 5)
    return run_section("peers.py", ["--rounds", str(rounds), "--seconds", str(seconds)], 1800)


def measure_kernel_peers(args: argparse.Namespace) -> dict[str, Any]:
    """bench/kernel_peers.py: it boots the guest and runs there."""
    rounds, seconds = (1, 2) if args.quick else (3, 4)
    options = ["--rounds", str(rounds), "--seconds", str(seconds)]
    return run_section("kernel_peers.py", options, 3600)


def _reference(bdevperf: str, *args: Any, **options: Any) -> dict[str, Any]:
    """run_reference, or the end of the run: a ratio without its reference means nothing."""
    try:
        return run_reference(bdevperf, *args, **options)
    except BdevperfError as exc:
        raise SystemExit(f"run.py: bdevperf, the reference, failed: {exc}") from None


def measure(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every round, the imports, and what the run was: (raw samples, metadata)."""
    began = time.perf_counter()
    sweep = QUICK_SWEEP_QDS if args.quick else SWEEP_QDS
    cells = io_cells(sweep)
    warmup = args.seconds / 4
    bdevperf, origin = find_bdevperf(args.bdevperf)
    if not bdevperf:
        # Every goal is a ratio against a reference measured in the same run.
        raise SystemExit(f"run.py: bdevperf, the reference, cannot run: {origin}")
    log(f"bdevperf: {bdevperf} (from {origin}); a first run to see that it works")
    _reference(bdevperf, "null", [("randread", 1)], 1, False)
    ref_tests = reference_tests(sweep)
    raw: dict[str, Any] = {
        "io": [],
        "bdevperf": [],
        "calls": [],
        "idle_no_bdev": [],
        "idle_null": [],
        "memory_after_io": [],
        "bdevperf_memory_idle": [],
        "bdevperf_memory_running": [],
        "pinned_to": None,
        "foreign_cpu": [],
        "latency": [],
        "bdevperf_latency": [],
        "waiting": [],
        "reactors": [],
        "bdevperf_reactors": [],
    }
    fingerprints = {package_fingerprint()}
    whole_run = CpuMeter()
    quiet = CpuMeter()
    time.sleep(1.0)
    if quiet.foreign_seconds() > 0.2:
        log(
            f"WARNING: other processes are using {quiet.foreign_seconds():.1f} CPU-s per second "
            "on this machine; the figures will be disturbed"
        )
    for round_no in range(1, args.rounds + 1):
        meter = CpuMeter()
        round_began = time.perf_counter()
        estimate = len(cells) * (args.seconds + warmup)
        log(
            f"round {round_no}/{args.rounds}: Python block I/O, {len(cells)} cells "
            f"(~{estimate:.0f} s)"
        )
        request = {
            "seconds": args.seconds,
            "warmup": warmup,
            "pin": not args.no_pin,
            "cells": cells,
        }
        reply = run_worker(["io"], request, timeout=estimate * 3 + 120)
        fingerprints.add(reply["fingerprint"])
        raw["io"].extend({**cell, "round": round_no} for cell in reply["cells"])
        raw["memory_after_io"].append(reply["memory_kib_after_io"])
        raw["pinned_to"] = reply["pinned_to"]
        for kind in BDEVS:
            log(
                f"round {round_no}/{args.rounds}: bdevperf on {kind}, {len(ref_tests)} tests "
                f"(~{len(ref_tests) + 3} s)"
            )
            ref = _reference(bdevperf, kind, ref_tests, 1, sample_memory=kind == "null")
            raw["bdevperf"].extend({**test, "round": round_no} for test in ref["tests"])
            if ref["latency"]:
                raw["bdevperf_latency"].append(ref["latency"])
            if kind == "null":
                raw["bdevperf_memory_idle"].append(ref["memory_idle"])
                raw["bdevperf_memory_running"].append(ref["memory_running"])
        log(f"round {round_no}/{args.rounds}: QD1 latency of each form")
        count = 5_000 if args.quick else 20_000
        latency = run_worker(["latency"], {"count": count}, timeout=600)
        fingerprints.add(latency["fingerprint"])
        raw["latency"].append(latency["forms"])
        waits = waiting_cells()
        stages = (
            ("waiting", waits, f"waiting policies, {len(waits)} cells"),
            ("reactors", REACTOR_CELLS, f"two reactors ({REACTORS_MASK}), Python and bdevperf"),
        )
        for stage, stage_cells, what in stages:
            log(f"round {round_no}/{args.rounds}: {what}")
            result = run_worker(
                [stage],
                {"seconds": args.seconds, "warmup": warmup, "cells": stage_cells},
                timeout=len(stage_cells) * (args.seconds + warmup) * 3 + 120,
            )
            fingerprints.add(result["fingerprint"])
            raw[stage].extend({**cell, "round": round_no} for cell in result["cells"])
        ref = _reference(bdevperf, "null", [("randread", 32)], 1, False, cpu_mask=REACTORS_MASK)
        raw["bdevperf_reactors"].extend({**test, "round": round_no} for test in ref["tests"])
        log(f"round {round_no}/{args.rounds}: call overhead and idle memory")
        number = 300_000 if args.quick else 1_000_000
        calls = run_worker(
            ["calls"], {"number": number, "repeats": 2, "pin": not args.no_pin}, timeout=300
        )
        fingerprints.add(calls["fingerprint"])
        raw["calls"].append(calls)
        raw["idle_no_bdev"].append(run_worker(["idle"], {"bdevs": [], "settle": 0.5}, timeout=120))
        raw["idle_null"].append(
            run_worker(["idle"], {"bdevs": ["null"], "settle": 0.5}, timeout=120)
        )
        foreign = meter.foreign_seconds()
        round_wall = time.perf_counter() - round_began
        raw["foreign_cpu"].append(
            {"round": round_no, "wall_s": round_wall, "foreign_cpu_s": foreign}
        )
        if foreign > 0.1 * round_wall:
            log(
                f"WARNING: other processes used {foreign:.1f} CPU-s during this "
                f"{round_wall:.0f} s round: its figures are disturbed (the median of all "
                "rounds tolerates one or two such rounds)"
            )
    if not args.no_pybdev:
        log("Python-served bdev: bench/pybdev.py (~60 s)")
        raw["pybdev"] = measure_pybdev(args)
    if not args.no_interrupt:
        log("interrupt mode beside polling: bench/interrupt.py (~1 minute, --quick ~20 s)")
        raw["interrupt"] = measure_interrupt(args)
    if not args.no_peers:
        log("nbdkit's python plugin against PythonBdev: bench/peers.py (~2 minutes, --quick ~30 s)")
        raw["peers"] = measure_peers(args)
    if args.kernel_peers:
        log("kernel clients in the guest: bench/kernel_peers.py (a boot, ~10 minutes)")
        raw["kernel_peers"] = measure_kernel_peers(args)
    log(f"imports: {args.import_runs} runs of each command")
    raw["imports"] = measure_imports(args.import_runs)
    raw["import_breakdown"] = import_breakdown()

    fingerprints.add(package_fingerprint())
    if len(fingerprints) > 1:
        log(
            "WARNING: pyspdk_sys was reinstalled while the benchmark ran "
            f"(fingerprints {sorted(fingerprints)}): its rounds measured different code"
        )
    wall = time.perf_counter() - began
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "command": "python3 bench/run.py" + (" --quick" if args.quick else ""),
        "argv": sys.argv[1:],
        "rounds": args.rounds,
        "seconds_per_cell": args.seconds,
        "warmup_per_cell": warmup,
        "bdevperf": bdevperf,
        "bdevperf_origin": origin,
        "pinned_to": raw["pinned_to"],
        "sweep_qds": list(sweep),
        "wall_seconds": wall,
        "foreign_cpu_seconds": whole_run.foreign_seconds(),
        "package_fingerprints": sorted(fingerprints),
        "source": source_state(),
    }
    meta.update(report.versions())
    return raw, meta


def publish(raw: dict[str, Any], meta: dict[str, Any], args: argparse.Namespace) -> None:
    """Print the tables; write results.json (unless it is the input); with --save,
    RESULTS.md and the plots (tracked files)."""
    summary = report.summarise(raw, meta)
    tables = report.render(summary)
    if raw.get("pybdev"):
        tables += "\n\n" + pybdev.table(raw["pybdev"]) + "\n"
    if raw.get("interrupt"):
        tables += "\n\n" + interrupt.table(raw["interrupt"]) + "\n"
    if raw.get("peers"):
        tables += "\n\n" + peers.table(raw["peers"]) + "\n"
    if raw.get("kernel_peers"):
        tables += "\n\n" + kernel_peers.table(raw["kernel_peers"]) + "\n"
    print(tables)
    if args.from_json is None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"meta": meta, "summary": summary, "raw": raw}, indent=1))
        log(f"wrote {args.json}")
    if args.save:
        (BENCH_DIR / "RESULTS.md").write_text(report.markdown(summary, tables))
        log(f"wrote {BENCH_DIR / 'RESULTS.md'}")
        if report.plot_latency(summary, BENCH_DIR / "latency_qd1.png"):
            log(f"wrote {BENCH_DIR / 'latency_qd1.png'}")
        plotted = report.plot(summary, BENCH_DIR / "iops_vs_qd.png")
        log(
            f"wrote {BENCH_DIR / 'iops_vs_qd.png'}"
            if plotted
            else "matplotlib missing: no plot (pip install matplotlib)"
        )


def main() -> int:
    args = parse_args()
    if args.from_json is not None:
        saved = json.loads(args.from_json.read_text())
        publish(saved["raw"], saved["meta"], args)
        return 0
    raw, meta = measure(args)
    publish(raw, meta, args)
    log(f"wall time {meta['wall_seconds']:.0f} s")
    if args.nvme_guest:
        out = args.json.with_name("nvme_guest.json")
        command = [sys.executable, str(BENCH_DIR / "nvme_guest.py"), "--json", str(out)]
        if subprocess.run(command, check=False).returncode != 0:
            return 1
    if args.transports:
        out = args.json.with_name("transports.json")
        command = [sys.executable, str(BENCH_DIR / "transports.py"), "--json", str(out)]
        return subprocess.run(command, check=False).returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
