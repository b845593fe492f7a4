"""The CI script and the suite's time limits: a green run must mean SPDK was tested,
and a hang must end as a failure that shows where every thread was."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from conftest import PROJECT_DIR


def test_ci_fails_without_a_fat_library(tmp_path: Path) -> None:
    env = {**os.environ, "PYSPDK_FAT_PREFIXES": str(tmp_path / "nothing-here")}
    env.pop("PYSPDK_CI_WITHOUT_SPDK", None)
    done = subprocess.run(
        ["bash", str(PROJECT_DIR / ".ci" / "run")],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert f"no fat library under: {tmp_path / 'nothing-here'}" in done.stderr
    assert "PYSPDK_CI_WITHOUT_SPDK=1" in done.stderr
    assert "all passed" not in done.stdout


def test_a_hanging_test_fails_within_its_limit_with_every_stack(tmp_path: Path) -> None:
    (tmp_path / "test_hang.py").write_text(
        textwrap.dedent(
            """
            import threading

            def test_hangs():
                stuck = threading.Event()
                helper = threading.Thread(target=stuck.wait, name="helper-waits-forever")
                helper.daemon = True
                helper.start()
                stuck.wait()
            """
        )
    )
    # The project's own settings (pyproject.toml) apply: only the limit is lowered.
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "--timeout",
            "2",
            "--rootdir",
            str(PROJECT_DIR),
            "-c",
            str(PROJECT_DIR / "pyproject.toml"),
            str(tmp_path / "test_hang.py"),
        ],
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "1 failed" in out
    assert "Timeout" in out
    assert "helper-waits-forever" in out  # the other thread's stack is shown too


def test_every_test_has_a_default_limit(pytestconfig) -> None:
    """pyproject.toml gives every test a limit; no test can stall CI for ever."""
    assert 0 < float(pytestconfig.getini("timeout")) <= 600
    assert pytestconfig.getini("timeout_method") == "signal"
