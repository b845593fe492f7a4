"""bench/harness.py's shared pieces that shape every figure: the QD1 timing loops
(what is timed, what is left out as warm-up) and how a section script reports."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import time
from pathlib import Path
from types import ModuleType

import pytest

from conftest import PROJECT_DIR


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("harness", PROJECT_DIR / "bench" / "harness.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


harness = _load()
SLOW_S = 0.005  # the warm-up calls' time: far above a fast call's


def test_qd1_samples_times_each_call_and_leaves_out_the_warm_up() -> None:
    seen: list[int] = []

    def call(offset: int) -> None:
        if len(seen) < 10:  # the first tenth: the warm-up
            time.sleep(SLOW_S)
        seen.append(offset)

    samples = harness.qd1_samples(call, [7, 8, 9], 100)
    assert seen == [(7, 8, 9)[i % 3] for i in range(110)]
    assert len(samples) == 100 and samples == sorted(samples)
    assert max(samples) < SLOW_S * 1e9, "a warm-up call was counted"


def test_qd1_samples_async_awaits_each_call_before_the_next() -> None:
    seen: list[int] = []
    running = 0

    async def call(offset: int) -> None:
        nonlocal running
        running += 1
        assert running == 1, "two calls in flight at QD1"
        await asyncio.sleep(SLOW_S if len(seen) < 2 else 0)
        seen.append(offset)
        running -= 1

    samples = asyncio.run(harness.qd1_samples_async(call, [1, 2], 20))
    assert seen == [(1, 2)[i % 2] for i in range(22)]
    assert len(samples) == 20 and samples == sorted(samples)
    assert max(samples) < SLOW_S * 1e9, "a warm-up call was counted"


@pytest.mark.parametrize("target", [None, "-", "file"])
def test_print_result_prints_the_table_or_json_alone(
    target: str | None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = {"ratio": 2.5}
    path = None if target is None else Path("-") if target == "-" else tmp_path / "r.json"
    harness.print_result(result, path, lambda r: f"TABLE {r['ratio']}")
    out = capsys.readouterr().out
    if target == "-":
        assert json.loads(out) == result  # JSON alone: run.py parses the whole output
    else:
        assert out == "TABLE 2.5\n"
    if target == "file":
        assert path is not None and json.loads(path.read_text()) == result
