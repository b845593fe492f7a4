"""`python -m pyspdk_sys --version` and a --help that lists every command and option."""

from __future__ import annotations

import subprocess
import sys
from typing import Any


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pyspdk_sys", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_version_names_the_package_and_the_library(spdk: Any) -> None:
    result = _cli("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        f"pyspdk_sys {spdk.__version__} (SPDK {spdk.SPDK_VERSION}, DPDK {spdk.DPDK_VERSION})"
    )


def test_help_lists_every_command_with_every_option(spdk: Any) -> None:
    import argparse

    from pyspdk_sys.__main__ import build_parser

    result = _cli("--help")
    assert result.returncode == 0, result.stderr
    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert commands.choices, "no commands found"
    for name, command in commands.choices.items():
        assert f"--- {name} ---" in result.stdout, name
        for action in command._actions:
            for option in action.option_strings:
                assert option in result.stdout, f"{name} {option} missing from --help"
