"""The benchmark's figures are ratios against a reference measured in the same run:
without bdevperf, or with a bdevperf that fails, bench/run.py fails instead of
saving ratios to nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import PROJECT_DIR


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(PROJECT_DIR / "bench" / "run.py"), "--quick", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_bench_fails_without_its_reference(spdk: Any, tmp_path: Path) -> None:
    done = _run("--bdevperf", str(tmp_path / "no-bdevperf"), "--json", str(tmp_path / "r.json"))
    assert done.returncode == 1
    assert "bdevperf, the reference, cannot run" in done.stderr
    assert not (tmp_path / "r.json").exists()


@pytest.mark.timeout(150)
def test_bench_fails_when_its_reference_fails(spdk: Any, tmp_path: Path) -> None:
    fake = tmp_path / "bdevperf"
    fake.write_text("#!/bin/sh\necho 'this bdevperf cannot start' >&2\nexit 1\n")
    fake.chmod(0o755)
    done = _run("--bdevperf", str(fake), "--json", str(tmp_path / "r.json"))
    assert done.returncode == 1
    assert "bdevperf, the reference, failed" in done.stderr
    assert "this bdevperf cannot start" in done.stderr
    assert not (tmp_path / "r.json").exists()
