"""Turn the raw samples into medians, ratios and goals; render tables, RESULTS.md and the plot."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from harness import (
    BLOCK_SIZE,
    MEM_SIZE_MB,
    NUM_BLOCKS,
    RETRIES,
    SLOW_LATENCY_US,
    THREADS,
    disturbed,
    median,
    spread,
)

FORM_LABELS = {
    "blocking": "blocking, 1 thread",
    "threads": f"blocking, {THREADS} threads",
    "futures": "futures",
    "asyncio": "asyncio",
    "batch": "batched (run_batch)",
    "many": "batched (read_many/write_many)",
    "amany": "asyncio batched (aread_many)",
}
# CPython's own cost of the same waiting, without I/O (not compared with bdevperf).
FLOOR_LABELS = {
    "floor_asyncio": "asyncio future round trip (create_future, call_soon(set_result), await)",
    "floor_futures": "concurrent.futures round trip, resolved by another thread",
}
OPS = {"read": "randread", "write": "randwrite"}
CALL_LABELS = {
    "empty": "empty timeit loop (`pass`), included in every row below",
    "lib_block_size": "`lib.spdk_bdev_get_block_size(bdev)`, function bound to a local",
    "ctypes_block_size": "ctypes `spdk_bdev_get_block_size(c_void_p)`, bound to a local",
    "lib_ticks": "`lib.spdk_get_ticks()`, bound to a local",
    "ctypes_ticks": "ctypes `spdk_get_ticks()`, bound to a local",
    "lib_attr_block_size": "`lib.spdk_bdev_get_block_size(bdev)`, looked up on `lib` each call",
    "ctypes_attr_block_size": "ctypes, looked up on the `CDLL` each call",
    "accessor_block_size": "`BlockDevice.block_size` (open device)",
}


def versions() -> dict[str, str]:
    """pyspdk_sys, SPDK and DPDK versions, asked of a separate process."""
    code = (
        "import json, pyspdk_sys as p; print(json.dumps({'pyspdk_sys': p.__version__, "
        "'spdk': p.SPDK_VERSION, 'dpdk': p.DPDK_VERSION}))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


# ---------------------------------------------------------------- summary


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f}%"


def _iops(value: float | None) -> str:
    if value is None:
        return "n/a"
    if value >= 1e6:
        return f"{value / 1e6:.2f}M"
    return f"{value / 1e3:.1f}k"


def _mib(kib: float | None) -> str:
    return "n/a" if kib is None else f"{kib / 1024:.0f}"


def _goal(name: str, target: str, measured: str, met: bool | None) -> dict[str, Any]:
    result = "not measured" if met is None else ("met" if met else "NOT met")
    return {"goal": name, "target": target, "measured": measured, "met": met, "result": result}


def summarise(raw: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """Medians (with spread) of every figure, ratios against the same run's references, goals."""
    calls: dict[str, list[float]] = defaultdict(list)
    for sample in raw["calls"]:
        for key, values in sample["ns_per_call"].items():
            calls[key].extend(values)
    call_stats = {key: spread(values) for key, values in calls.items()}
    empty = call_stats["empty"]["median"]
    # The loop's own cost comes off each call; an attribute read can cost less
    # than the loop's noise, so never below zero.
    net = {
        key: max(0.0, stats["median"] - empty)
        for key, stats in call_stats.items()
        if key != "empty"
    }
    call_ratios = {
        "ctypes_over_lib_block_size": net["ctypes_block_size"] / net["lib_block_size"],
        "ctypes_over_lib_ticks": net["ctypes_ticks"] / net["lib_ticks"],
        "ctypes_over_lib_attr_block_size": net["ctypes_attr_block_size"]
        / net["lib_attr_block_size"],
        "accessor_over_lib_block_size": net["accessor_block_size"] / net["lib_block_size"],
        "ctypes_over_lib_block_size_gross": call_stats["ctypes_block_size"]["median"]
        / call_stats["lib_block_size"]["median"],
        "accessor_over_lib_block_size_gross": call_stats["accessor_block_size"]["median"]
        / call_stats["lib_block_size"]["median"],
    }

    imports = {key: spread(values) for key, values in raw["imports"].items()}
    import_delta = imports["pyspdk_sys"]["median"] - imports["cffi"]["median"]

    ref_samples: dict[tuple[str, str, int], list[float]] = defaultdict(list)
    for test in raw["bdevperf"]:
        ref_samples[(test["bdev"], test["workload"], test["qd"])].append(test["iops"])
    reference = [
        {"bdev": bdev, "workload": workload, "qd": qd, "iops": spread(values)}
        for (bdev, workload, qd), values in ref_samples.items()
    ]
    ref_median = {key: median(values) for key, values in ref_samples.items()}

    io_samples: dict[tuple[str, str, str, int], list[float]] = defaultdict(list)
    for cell in raw["io"]:
        io_samples[(cell["bdev"], cell["op"], cell["form"], cell["qd"])].append(cell["iops"])
    io = []
    for (bdev, op, form, qd), values in io_samples.items():
        stats = spread(values)
        ref = ref_median.get((bdev, OPS[op], qd))
        io.append(
            {
                "bdev": bdev,
                "op": op,
                "form": form,
                "qd": qd,
                "iops": stats,
                "bdevperf_iops": ref,
                "ratio": stats["median"] / ref if ref else None,
            }
        )

    def memory(samples: list[dict[str, int]]) -> dict[str, float | None]:
        samples = [s for s in samples if s]
        return {
            key: median([s[key] for s in samples]) if samples else None
            for key in ("VmRSS", "VmHWM", "dpdk")
        }

    mem = {
        "python_idle_no_bdev": memory(raw["idle_no_bdev"]),
        "python_idle_null": memory(raw["idle_null"]),
        "python_after_io": memory(raw["memory_after_io"]),
        "bdevperf_idle_null": memory(raw["bdevperf_memory_idle"]),
        "bdevperf_running_null": memory(raw["bdevperf_memory_running"]),
    }
    bp_idle = mem["bdevperf_idle_null"]["VmRSS"]
    for entry in mem.values():
        entry["ratio_vs_bdevperf_idle"] = (
            entry["VmRSS"] / bp_idle if bp_idle and entry["VmRSS"] else None
        )

    def find(bdev: str, op: str, form: str, qd: int) -> dict[str, Any] | None:
        for entry in io:
            if (entry["bdev"], entry["op"], entry["form"], entry["qd"]) == (bdev, op, form, qd):
                return entry
        return None

    goals = [
        _goal(
            "raw `lib` call vs ctypes, call with arguments (spdk_bdev_get_block_size)",
            "ctypes / lib >= 1.5x",
            f"{call_ratios['ctypes_over_lib_block_size']:.2f}x "
            f"({net['lib_block_size']:.1f} vs {net['ctypes_block_size']:.1f} ns net)",
            call_ratios["ctypes_over_lib_block_size"] >= 1.5,
        ),
        _goal(
            "Python layer's accessor vs raw `lib` call (BlockDevice.block_size)",
            "accessor / lib <= 3x",
            f"{call_ratios['accessor_over_lib_block_size']:.2f}x "
            f"({net['accessor_block_size']:.1f} vs {net['lib_block_size']:.1f} ns net)",
            call_ratios["accessor_over_lib_block_size"] <= 3,
        ),
        _goal(
            "`import pyspdk_sys` over `import cffi` (whole process)",
            "<= 50 ms",
            f"{import_delta:.1f} ms",
            import_delta <= 50,
        ),
    ]
    for form, bdev, target in (
        ("many", "malloc", 0.80),
        ("many", "null", 0.50),
        ("futures", "malloc", 0.25),
        ("asyncio", "malloc", 0.25),
    ):
        entry = find(bdev, "read", form, 32)
        ratio = entry["ratio"] if entry else None
        if entry is None:
            measured = "n/a"
        elif ratio is None:
            measured = f"{_iops(entry['iops']['median'])} IOPS; no bdevperf figure"
        else:
            measured = (
                f"{_pct(ratio)} ({_iops(entry['iops']['median'])} vs "
                f"{_iops(entry['bdevperf_iops'])} IOPS)"
            )
        goals.append(
            _goal(
                f"{FORM_LABELS[form]}, {bdev} 4K randread QD32, vs bdevperf",
                f">= {target * 100:.0f}% of bdevperf",
                measured,
                None if ratio is None else ratio >= target,
            )
        )

    def ratio_goal(name: str, target: float, a: Any, b: Any) -> None:
        if a is None or b is None:
            goals.append(_goal(name, f">= {target}x", "n/a", None))
            return
        ratio = a["iops"]["median"] / b["iops"]["median"]
        goals.append(
            _goal(
                name,
                f">= {target}x",
                f"{ratio:.2f}x ({_iops(a['iops']['median'])} vs {_iops(b['iops']['median'])})",
                ratio >= target,
            )
        )

    ratio_goal(
        "asyncio `aread` QD32 vs CPython's asyncio floor QD32, malloc",
        0.7,
        find("malloc", "read", "asyncio", 32),
        find("malloc", "read", "floor_asyncio", 32),
    )
    ratio_goal(
        "asyncio `aread` QD1 vs blocking `read` QD1, malloc",
        0.5,
        find("malloc", "read", "asyncio", 1),
        find("malloc", "read", "blocking", 1),
    )
    for qd in (1, 32):
        ratio_goal(
            f"futures `read_async` QD{qd} vs concurrent.futures floor QD{qd}, malloc",
            0.7,
            find("malloc", "read", "futures", qd),
            find("malloc", "read", "floor_futures", qd),
        )
    ratio_goal(
        "`aread_many` vs `read_many`, QD32, malloc",
        0.9,
        find("malloc", "read", "amany", 32),
        find("malloc", "read", "many", 32),
    )
    reactors = _reactors(raw)
    reference_iops = median([t["iops"] for t in raw.get("bdevperf_reactors", [])])
    for form in ("many_16k", "many"):
        label = (
            f"`read_many` ({_MANY_FORMS[form]} per call) over 2 reactors vs "
            "`bdevperf -m 0x3 -C`, null, QD32 per core"
        )
        two_lanes = next(
            (r for r in reactors if r["form"] == form and r["lanes"] is None),
            None,
        )
        if two_lanes is None or not reference_iops:
            goals.append(_goal(label, ">= 0.9x", "n/a", None))
            continue
        ratio = two_lanes["iops"] / reference_iops
        goals.append(
            _goal(
                label,
                ">= 0.9x",
                f"{ratio:.2f}x ({_iops(two_lanes['iops'])} vs {_iops(reference_iops)})",
                ratio >= 0.9,
            )
        )
    idle = mem["python_idle_no_bdev"]["ratio_vs_bdevperf_idle"]
    goals.append(
        _goal(
            "idle resident size, default Runtime vs idle bdevperf",
            "<= 1.2x",
            f"{idle:.2f}x" if idle else "n/a",
            None if idle is None else idle <= 1.2,
        )
    )
    threads = find("malloc", "read", "threads", THREADS)
    threads_iops = threads["iops"]["median"] if threads else None
    goals.append(
        _goal(
            f"blocking from {THREADS} threads (QD {THREADS}), malloc 4K randread",
            ">= 150,000 IOPS",
            f"{threads_iops:,.0f} IOPS" if threads_iops else "n/a",
            None if threads_iops is None else threads_iops >= 150_000,
        )
    )
    latency: dict[str, dict[str, Any]] = {}
    rounds_of = [("bdevperf", [r for r in raw.get("bdevperf_latency", []) if r])]
    forms = sorted({form for r in raw.get("latency", []) for form in r})
    rounds_of += [(form, [r[form] for r in raw.get("latency", []) if form in r]) for form in forms]
    for name, samples in rounds_of:
        if samples:
            latency[name] = {
                key: median([sample[key] for sample in samples if sample.get(key) is not None])
                for key in ("p50", "p99", "p99.9", "mean")
            }
            latency[name]["quantiles"] = [
                median([sample["quantiles"][i] for sample in samples]) for i in range(101)
            ]
    return {
        "meta": meta,
        "waiting": _waiting(raw),
        "reactors": reactors,
        "bdevperf_reactors_iops": reference_iops,
        "latency_us": latency,
        "calls": call_stats,
        "calls_net_ns": net,
        "call_ratios": call_ratios,
        "imports_ms": imports,
        "import_delta_ms": import_delta,
        "import_breakdown": raw["import_breakdown"],
        "io": io,
        "bdevperf": reference,
        "memory_kib": mem,
        "goals": goals,
        "foreign_cpu": raw["foreign_cpu"],
        "disturbance": _disturbance(raw),
    }


def _waiting(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """Per shape (bdev, form, QD): each policy's median IOPS and Python CPU per I/O."""
    iops: dict[tuple[str, str, int], dict[str, list[float]]] = defaultdict(
        lambda: defaultdict(list)
    )
    cpu: dict[tuple[str, str, int], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for cell in raw.get("waiting", []):
        shape = (cell["bdev"], cell["form"], cell["qd"])
        iops[shape][cell["policy"]].append(cell["iops"])
        if cell["python_cpu_us_per_io"] is not None:
            cpu[shape][cell["policy"]].append(cell["python_cpu_us_per_io"])
    rows = []
    for shape, by_policy in iops.items():
        medians = {policy: statistics.median(values) for policy, values in by_policy.items()}
        adaptive = medians.get("adaptive")
        best_fixed = max(
            (value for policy, value in medians.items() if policy != "adaptive"), default=0.0
        )
        rows.append(
            {
                "bdev": shape[0],
                "form": shape[1],
                "qd": shape[2],
                "iops": medians,
                "cpu_us_per_io": {
                    policy: statistics.median(values) for policy, values in cpu[shape].items()
                },
                "adaptive_vs_best_fixed": adaptive / best_fixed
                if adaptive is not None and best_fixed > 0
                else None,
            }
        )
    return rows


_MANY_FORMS = {"many": "1024", "many_16k": "16384"}
"""read_many forms of the two-reactor cells: I/Os per call."""


def _reactors(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """Per two-reactor cell (bdev, form, QD, lanes): the median IOPS of the rounds."""
    by_cell: dict[tuple[str, str, int, int | None], list[float]] = defaultdict(list)
    for cell in raw.get("reactors", []):
        by_cell[(cell["bdev"], cell["form"], cell["qd"], cell["lanes"])].append(cell["iops"])
    return [
        {"bdev": bdev, "form": form, "qd": qd, "lanes": lanes, "iops": statistics.median(values)}
        for (bdev, form, qd, lanes), values in by_cell.items()
    ]


def _reactors_table(summary: dict[str, Any]) -> str:
    rows = summary.get("reactors") or []
    if not rows:
        return ""
    reference = summary.get("bdevperf_reactors_iops")
    body = [
        [
            f"{row['bdev']}, "
            + (
                f"`read_many` ({_MANY_FORMS[row['form']]} per call)"
                if row["form"] in _MANY_FORMS
                else "blocking threads"
            )
            + f", {row['qd']}",
            "one per core" if row["lanes"] is None else str(row["lanes"]),
            _iops(row["iops"]),
        ]
        for row in rows
    ]
    if reference:
        body.append(["null, `bdevperf -m 0x3 -C -q 32` (32 per core)", "", _iops(reference)])
    return (
        "\n### Two reactors (cpu_mask 0x3): 4K randread IOPS, medians of rounds\n\n"
        "Both cores poll, so Python is not pinned and shares them with the reactors. "
        "QD is `read_many`'s depth over all lanes, or the threads.\n\n"
        + _table(["bdev, form, QD", "lanes", "IOPS"], body)
    )


def _waiting_table(summary: dict[str, Any]) -> str:
    rows = summary.get("waiting") or []
    if not rows:
        return ""
    policies = list(rows[0]["iops"])
    body = []
    for row in rows:
        label = "blocking threads" if row["form"] == "threads" else "`read_many`"
        body.append(
            [
                f"{row['bdev']}, {label}, {row['qd']}",
                *[
                    f"{_iops(row['iops'].get(p))} ({row['cpu_us_per_io'].get(p, 0):.1f})"
                    for p in policies
                ],
                ""
                if row["adaptive_vs_best_fixed"] is None
                else f"{row['adaptive_vs_best_fixed']:.2f}x",
            ]
        )
    worst = []
    for policy in policies:
        shares = [
            row["iops"][policy] / max(row["iops"].values())
            for row in rows
            if policy in row["iops"] and max(row["iops"].values()) > 0
        ]
        cpu = [row["cpu_us_per_io"][policy] for row in rows if policy in row["cpu_us_per_io"]]
        worst.append(
            [
                policy,
                f"{min(shares):.2f}x" if shares else "n/a",
                f"{max(cpu):.1f}" if cpu else "n/a",
            ]
        )
    return (
        "\n### Waiting policies: IOPS (Python CPU us per I/O), 4K randread; medians of rounds\n\n"
        f"`slow` is a delay bdev of {SLOW_LATENCY_US} us over malloc; QD is the threads, or "
        "`read_many`'s depth. `adaptive` is the default (`spin_us=None`).\n\n"
        + _table(["bdev, form, QD", *policies, "adaptive / best fixed"], body)
        + "\n\nEach policy at its worst: its lowest share of the best IOPS of a row, and its "
        "highest Python CPU per I/O.\n\n"
        + _table(["policy", "worst share of the best", "most CPU us per I/O"], worst)
    )


def _disturbance(raw: dict[str, Any]) -> dict[str, int]:
    """How many measurements others' CPU use made us retry, and how many stayed disturbed."""
    counts = {}
    for key in ("io", "bdevperf"):
        samples = raw[key]
        counts[f"{key}_samples"] = len(samples)
        counts[f"{key}_retried"] = sum(1 for s in samples if s["attempts"] > 1)
        counts[f"{key}_still_disturbed"] = sum(
            1 for s in samples if disturbed(s["foreign_cpu_s"], s.get("seconds", 1.0))
        )
    counts["call_retries"] = sum(sample["retries"] for sample in raw["calls"])
    return counts


# ---------------------------------------------------------------- tables


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def render(summary: dict[str, Any]) -> str:
    """Every table, as Markdown (readable as plain text too)."""
    meta = summary["meta"]
    out = []
    n_calls = len(summary["calls"]["empty"]["samples"])
    out.append(f"### Goals (one SPDK core, cpu_mask 0x1; medians of {meta['rounds']} rounds)\n")
    out.append(
        _table(
            ["goal", "target", "measured", "result"],
            [[g["goal"], g["target"], g["measured"], g["result"]] for g in summary["goals"]],
        )
    )

    out.append(f"\n### Call overhead (ns per call, median of {n_calls} timeit runs)\n")
    net = summary["calls_net_ns"]
    rows = []
    for key, label in CALL_LABELS.items():
        stats = summary["calls"][key]
        rows.append(
            [
                label,
                f"{stats['median']:.1f}",
                "" if key == "empty" else f"{net[key]:.1f}",
                f"{stats['min']:.1f}..{stats['max']:.1f}",
            ]
        )
    out.append(_table(["call", "ns/call", "net of loop", "min..max"], rows))
    ratios = summary["call_ratios"]
    out.append("")
    out.append(
        _table(
            ["comparison (net of loop)", "ratio"],
            [
                [
                    "ctypes / lib, spdk_bdev_get_block_size(bdev)",
                    f"{ratios['ctypes_over_lib_block_size']:.2f}x "
                    f"(gross {ratios['ctypes_over_lib_block_size_gross']:.2f}x)",
                ],
                ["ctypes / lib, spdk_get_ticks()", f"{ratios['ctypes_over_lib_ticks']:.2f}x"],
                [
                    "ctypes / lib, looked up each call",
                    f"{ratios['ctypes_over_lib_attr_block_size']:.2f}x",
                ],
                [
                    "BlockDevice.block_size / lib call",
                    f"{ratios['accessor_over_lib_block_size']:.2f}x "
                    f"(gross {ratios['accessor_over_lib_block_size_gross']:.2f}x)",
                ],
            ],
        )
    )

    imports = summary["imports_ms"]
    runs = len(imports["pass"]["samples"])
    out.append(f"\n### Import (whole `python -c` process, ms, median of {runs} runs)\n")
    out.append(
        _table(
            ["command", "median ms", "min..max"],
            [
                [
                    f'`python -c "{code}"`',
                    f"{imports[key]['median']:.1f}",
                    f"{imports[key]['min']:.1f}..{imports[key]['max']:.1f}",
                ]
                for key, code in (
                    ("pass", "pass"),
                    ("cffi", "import cffi"),
                    ("pyspdk_sys", "import pyspdk_sys"),
                )
            ]
            + [["`import pyspdk_sys` - `import cffi`", f"{summary['import_delta_ms']:.1f}", ""]],
        )
    )
    slow = ", ".join(
        f"{row['module']} {row['self_us'] / 1000:.1f}" for row in summary["import_breakdown"][:5]
    )
    out.append(f"\nSlowest modules by own import time (`-X importtime`, ms, one run): {slow}.")

    out.append(_io_tables(summary))
    floors = [e for e in summary["io"] if e["form"] in FLOOR_LABELS]
    if floors:
        out.append(
            "\n### CPython's floors (no I/O; same process and run; round trips per second)\n"
        )
        floors.sort(key=lambda e: (e["form"], e["qd"]))
        out.append(
            _table(
                ["floor", "QD", "per second", "min..max"],
                [
                    [
                        FLOOR_LABELS[e["form"]],
                        str(e["qd"]),
                        _iops(e["iops"]["median"]),
                        f"{_iops(e['iops']['min'])}..{_iops(e['iops']['max'])}",
                    ]
                    for e in floors
                ],
            )
        )
    out.append(_sweep_tables(summary))
    out.append(_memory_table(summary))
    out.append(_latency_table(summary))
    out.append(_waiting_table(summary))
    out.append(_reactors_table(summary))
    return "\n".join(out)


LATENCY_LABELS = {
    "bdevperf": "bdevperf (percentiles: the bdev layer's histogram; mean: bdevperf's own)",
    "blocking": "blocking `read`",
    "futures": "`read_async().result()`",
    "asyncio": "`await aread`",
    "batch": "`run_batch` of one",
}


def _latency_table(summary: dict[str, Any]) -> str:
    latency = summary.get("latency_us") or {}
    if not latency:
        return ""
    rows = [
        [
            LATENCY_LABELS.get(name, name),
            f"{figures['p50']:.1f}",
            f"{figures['p99']:.1f}",
            f"{figures['p99.9']:.1f}",
            "" if figures["mean"] is None else f"{figures['mean']:.1f}",
        ]
        for name, figures in latency.items()
    ]
    return (
        "\n### Latency at QD1, malloc 4K randread (us; medians of rounds; "
        "the Python forms end to end per call)\n\n"
        + _table(["form", "p50", "p99", "p99.9", "mean"], rows)
    )


def plot_latency(summary: dict[str, Any], path: Path) -> bool:
    """The QD1 latency distribution of each form beside bdevperf's; False without matplotlib."""
    latency = summary.get("latency_us") or {}
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    if not latency:
        return False
    fig, ax = plt.subplots(figsize=(8, 5))
    fractions = [i / 100 for i in range(101)]
    for name, figures in latency.items():
        ax.plot(figures["quantiles"], fractions, label=LATENCY_LABELS.get(name, name))
    ax.set_xscale("log")
    ax.set_xlabel("latency (us, log scale)")
    ax.set_ylabel("fraction of I/Os at or below")
    meta = summary["meta"]
    ax.set_title(f"QD1 4 KiB randread latency, malloc, {meta['date']}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _io_tables(summary: dict[str, Any]) -> str:
    out = []
    meta = summary["meta"]
    ref_note = "" if meta["bdevperf"] else " (bdevperf missing: no ratios)"
    out.append(
        f"\n### Block I/O, 4 KiB, QD 1 and 32 (IOPS, median of {meta['rounds']} rounds; "
        f"vs bdevperf at the same QD, same run){ref_note}\n"
    )
    order = {form: i for i, form in enumerate(FORM_LABELS)}
    for bdev in ("malloc", "null"):
        for op in ("read", "write"):
            entries = [
                e
                for e in summary["io"]
                if e["bdev"] == bdev
                and e["op"] == op
                and e["form"] in FORM_LABELS
                and (e["qd"] in (1, 32) or e["form"] == "threads")
            ]
            entries.sort(key=lambda e: (order[e["form"]], e["qd"]))
            rows = [
                [
                    FORM_LABELS[e["form"]],
                    str(e["qd"]),
                    _iops(e["iops"]["median"]),
                    f"{_iops(e['iops']['min'])}..{_iops(e['iops']['max'])}",
                    _iops(e["bdevperf_iops"]),
                    _pct(e["ratio"]),
                ]
                for e in entries
            ]
            out.append(f"\n{bdev} bdev, {OPS[op]}:\n")
            out.append(_table(["form", "QD", "IOPS", "min..max", "bdevperf", "of bdevperf"], rows))
    return "\n".join(out)


def _sweep_tables(summary: dict[str, Any]) -> str:
    out = []
    qds = summary["meta"]["sweep_qds"]
    out.append("\n### randread 4 KiB: IOPS by queue depth (% of bdevperf at that QD)\n")
    forms = ("futures", "asyncio", "batch", "many")
    for bdev in ("malloc", "null"):
        cells = {
            (e["form"], e["qd"]): e
            for e in summary["io"]
            if e["bdev"] == bdev and e["op"] == "read"
        }
        refs = {
            r["qd"]: r["iops"]["median"]
            for r in summary["bdevperf"]
            if r["bdev"] == bdev and r["workload"] == "randread"
        }
        rows = []
        for qd in qds:
            row = [str(qd)]
            blocking = cells.get(("blocking", qd)) or cells.get(("threads", qd))
            row.append(
                f"{_iops(blocking['iops']['median'])} ({_pct(blocking['ratio'])})"
                if blocking
                else ""
            )
            for form in forms:
                entry = cells.get((form, qd))
                row.append(
                    f"{_iops(entry['iops']['median'])} ({_pct(entry['ratio'])})" if entry else ""
                )
            row.append(_iops(refs.get(qd)))
            rows.append(row)
        out.append(
            f"\n{bdev} bdev (blocking: 1 thread at QD 1, {THREADS} threads at QD {THREADS}):\n"
        )
        out.append(_table(["QD", "blocking", *forms, "bdevperf"], rows))
    return "\n".join(out)


def _memory_table(summary: dict[str, Any]) -> str:
    mem = summary["memory_kib"]
    labels = {
        "python_idle_no_bdev": "Python runtime, idle, no bdev",
        "python_idle_null": "Python runtime, idle, null bdev",
        "python_after_io": "Python runtime after the I/O round (malloc + null, all forms)",
        "bdevperf_idle_null": "bdevperf -z, idle, null bdev",
        "bdevperf_running_null": "bdevperf, running null randread QD 32",
    }
    rows = []
    for key, label in labels.items():
        entry = mem[key]
        other = (
            entry["VmRSS"] - entry["dpdk"]
            if entry["VmRSS"] is not None and entry["dpdk"] is not None
            else None
        )
        ratio = entry["ratio_vs_bdevperf_idle"]
        rows.append(
            [
                label,
                _mib(entry["VmRSS"]),
                _mib(entry["dpdk"]),
                _mib(other),
                "n/a" if ratio is None else f"{ratio:.2f}x",
            ]
        )
    head = f"\n### Resident memory (MiB, median; no_huge, mem_size {MEM_SIZE_MB} MiB, one core)\n\n"
    return head + _table(
        ["process", "VmRSS", "DPDK memory (memfd:nohuge)", "rest", "vs bdevperf idle"], rows
    )


# ---------------------------------------------------------------- RESULTS.md and plot


def markdown(summary: dict[str, Any], tables: str) -> str:
    """bench/RESULTS.md: the machine, the settings, then the tables."""
    meta = summary["meta"]
    pinned = meta["pinned_to"]
    d = summary["disturbance"]
    lines = [
        "# pyspdk-sys benchmark results",
        "",
        "Written by `python3 bench/run.py` (see [README.md](README.md)); rerun it to refresh.",
        "",
        f"- Date: {meta['date']}",
        f"- CPU: {meta['cpu_model']}, {meta['cores']} cores (SPDK's reactor busy-polls core 0)",
        f"- Python {meta['python']}, pyspdk_sys {meta['pyspdk_sys']} (installed package "
        f"{', '.join(meta['package_fingerprints'])}; repository at {meta['source']}), "
        f"SPDK {meta['spdk']}, DPDK {meta['dpdk']}"
        + (
            " - WARNING: the package was reinstalled during the run"
            if len(meta["package_fingerprints"]) > 1
            else ""
        ),
        f"- Command: `{meta['command']}`, wall time {meta['wall_seconds']:.0f} s; other "
        f"processes used {meta['foreign_cpu_seconds']:.1f} CPU-s meanwhile (by round: "
        + ", ".join(f"{r['foreign_cpu_s']:.1f}" for r in summary["foreign_cpu"])
        + ")",
        f"- {meta['rounds']} rounds; each Python I/O figure runs {meta['seconds_per_cell']} s "
        f"after {meta['warmup_per_cell']} s of warm-up, each bdevperf test 1 s after one "
        "discarded warm-up test per process",
        f"- Devices: malloc and null bdevs of {NUM_BLOCKS} x {BLOCK_SIZE} B, created by a JSON "
        f"config; no hugepages, mem_size {MEM_SIZE_MB} MiB, cpu_mask 0x1, for both sides",
        f"- Disturbance: other processes' CPU use made {d['io_retried']} of {d['io_samples']} "
        f"Python I/O samples and {d['bdevperf_retried']} of {d['bdevperf_samples']} bdevperf "
        f"samples run again (up to {RETRIES} times); {d['io_still_disturbed']} and "
        f"{d['bdevperf_still_disturbed']} stayed disturbed",
        "- Python threads pinned to "
        + (f"CPU {', '.join(map(str, pinned))}, off the reactor's core" if pinned else "no CPU")
        + "; bdevperf: `"
        + ("bdevperf" if meta["bdevperf"] else "missing")
        + " --no-huge -s 1024 -m 0x1 -z`, tests over JSON-RPC",
        "",
        tables,
        "",
    ]
    return "\n".join(lines)


def plot(summary: dict[str, Any], path: Path) -> bool:
    """IOPS against queue depth, randread, one panel per bdev; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    meta = summary["meta"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 5), sharey=False)
    styles = {
        "futures": "tab:blue",
        "asyncio": "tab:orange",
        "batch": "tab:green",
        "many": "tab:red",
    }
    for ax, bdev in zip(axes, ("malloc", "null"), strict=True):
        reads = [e for e in summary["io"] if e["bdev"] == bdev and e["op"] == "read"]
        for form, colour in styles.items():
            points = sorted((e["qd"], e["iops"]) for e in reads if e["form"] == form)
            if not points:
                continue
            qds = [qd for qd, _ in points]
            ax.plot(
                qds, [s["median"] for _, s in points], "o-", color=colour, label=FORM_LABELS[form]
            )
            ax.fill_between(
                qds,
                [s["min"] for _, s in points],
                [s["max"] for _, s in points],
                color=colour,
                alpha=0.15,
            )
        for form, marker in (("blocking", "s"), ("threads", "D")):
            for e in reads:
                if e["form"] == form:
                    ax.plot(
                        [e["qd"]],
                        [e["iops"]["median"]],
                        marker,
                        color="tab:red" if form == "blocking" else "tab:purple",
                        markersize=8,
                        label=FORM_LABELS[form],
                    )
        refs = sorted(
            (r["qd"], r["iops"])
            for r in summary["bdevperf"]
            if r["bdev"] == bdev and r["workload"] == "randread"
        )
        if refs:
            qds = [qd for qd, _ in refs]
            ax.plot(qds, [s["median"] for _, s in refs], "k--^", label="bdevperf (SPDK, C)")
            ax.fill_between(
                qds, [s["min"] for _, s in refs], [s["max"] for _, s in refs], color="k", alpha=0.08
            )
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(meta["sweep_qds"])
        ax.set_xticklabels([str(q) for q in meta["sweep_qds"]])
        ax.set_xlabel("queue depth (I/Os in flight)")
        ax.set_ylabel("IOPS")
        ax.set_title(f"{bdev} bdev, 4 KiB randread, one SPDK core")
        ax.grid(True, which="both", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=9, frameon=False)
    fig.suptitle(
        f"pyspdk-sys vs bdevperf - {meta['cpu_model']}, {meta['cores']} cores, {meta['date']} "
        f"(median of {meta['rounds']} rounds, band = min..max)",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
