"""bench/kernel_peers.py's host side, without a guest: the ratios and the verdict it reports."""

from __future__ import annotations

import importlib.util
from types import ModuleType
from typing import Any

from conftest import PROJECT_DIR

SCRIPT = PROJECT_DIR / "bench" / "kernel_peers.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("kernel_peers", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(iops: float) -> dict[str, float]:
    return {
        "iops": iops,
        "p50_us": 1e6 / iops,
        "client_cpu_us_per_io": 1.0,
        "server_cpu_us_per_io": 2.0,
        "guest_cpu_us_per_io": 3.0,
    }


def _rounds(bench: ModuleType, per_round: list[dict[str, tuple[float, float]]]) -> dict[str, Any]:
    """Rounds where each device label has (QD1 IOPS, QD32 IOPS)."""
    return {
        "rounds": [
            {
                "devices": {
                    label: {"1": _row(figures[label][0]), "32": _row(figures[label][1])}
                    for label, _, _ in bench.DEVICES
                }
            }
            for figures in per_round
        ]
    }


def test_each_device_is_compared_with_nbdkit_python_round_by_round() -> None:
    bench = _load()
    labels = [label for label, _, _ in bench.DEVICES]
    assert bench.PYTHON_NBD in labels and bench.PYTHON_UBLK in labels
    base = {label: (100.0, 1000.0) for label in labels}
    rounds = [
        {**base, bench.PYTHON_UBLK: (150.0, 3000.0)},
        {**base, bench.PYTHON_NBD: (200.0, 500.0), bench.PYTHON_UBLK: (100.0, 500.0)},
        {**base, bench.PYTHON_UBLK: (300.0, 2500.0)},
    ]
    summary = bench.summarize(_rounds(bench, rounds))
    ublk = summary[bench.PYTHON_UBLK]
    # Median of the per-round ratios (3.0, 1.0, 2.5), not a ratio of medians.
    assert ublk["32"]["vs_nbdkit_python"] == 2.5
    assert (ublk["32"]["ratio_min"], ublk["32"]["ratio_max"]) == (1.0, 3.0)
    assert ublk["1"]["vs_nbdkit_python"] == 1.5  # ratios 1.5, 0.5, 3.0
    assert ublk["32"]["iops"] == 2500.0
    assert summary[bench.PYTHON_NBD]["32"]["vs_nbdkit_python"] == 1.0


def test_the_table_names_the_goal_and_says_whether_it_is_met() -> None:
    bench = _load()
    labels = [label for label, _, _ in bench.DEVICES]
    met = {label: (100.0, 1000.0) for label in labels} | {bench.PYTHON_UBLK: (90.0, 2100.0)}
    result = _rounds(bench, [met])
    result["summary"] = bench.summarize(result)
    text = bench.table(result)
    assert "2.10x" in text and text.rstrip().endswith("Absolute IOPS under TCG mean little.")
    assert ": met." in text
    short = {label: (100.0, 1000.0) for label in labels} | {bench.PYTHON_UBLK: (90.0, 1900.0)}
    result = _rounds(bench, [short])
    result["summary"] = bench.summarize(result)
    assert ": not met." in bench.table(result)
    # The header, its rule, and a row for every device at every depth.
    rows = [line for line in bench.table(result).splitlines() if line.startswith("| ")]
    assert len(rows) == 2 + len(bench.DEPTHS) * len(labels)
