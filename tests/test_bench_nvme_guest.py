"""bench/nvme_guest.py's host side, without a guest: the ratios it reports."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from types import ModuleType

from conftest import PROJECT_DIR

SCRIPT = PROJECT_DIR / "bench" / "nvme_guest.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("nvme_guest", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_each_form_is_compared_with_bdevperf_at_its_own_depth() -> None:
    bench = _load()
    figures = [  # bdevperf QD1, QD32; blocking, read_many, asyncio
        (100.0, 1000.0, 50.0, 800.0, 100.0),
        (200.0, 1000.0, 80.0, 900.0, 300.0),
        (100.0, 500.0, 60.0, 500.0, 100.0),
    ]
    rounds = [
        {"bdevperf": {"1": q1, "32": q32}, "python": {"blocking": b, "read_many": m, "asyncio": a}}
        for q1, q32, b, m, a in figures
    ]
    table = bench.summarize({"rounds": rounds})
    assert list(table) == ["blocking", "read_many", "asyncio"]
    assert table["blocking"]["qd"] == 1 and table["asyncio"]["qd"] == 32
    # Median of the per-round ratios (0.5, 0.4, 0.6), not a ratio of medians.
    assert table["blocking"]["ratio"] == 0.5
    assert (table["blocking"]["ratio_min"], table["blocking"]["ratio_max"]) == (0.4, 0.6)
    assert table["read_many"]["ratio"] == 0.9 and table["read_many"]["bdevperf_iops"] == 1000.0
    assert table["asyncio"]["ratio"] == 0.2


def test_bad_arguments_are_refused() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--rounds", "0"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and "must be positive" in done.stderr
