"""The QEMU guest harness (tests/guest_vm.py) and its preparation script, without booting."""

from __future__ import annotations

import subprocess
from pathlib import Path

import guest_vm
import pytest

from conftest import require_tool


def test_missing_guest_names_the_script(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(guest_vm, "GUEST_DIR", tmp_path)
    reason = guest_vm.missing()
    assert reason is not None
    assert "prepare.sh" in reason and str(tmp_path) in reason


def test_a_boot_that_never_reaches_userspace_is_retried_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    boots: list[str] = []

    def fake_once(script: str, timeout: float) -> guest_vm.Boot:
        boots.append(script)
        if len(boots) == 1:
            return guest_vm.Boot(None, "", "Kernel panic - not syncing", 3.0, 1)
        return guest_vm.Boot(0, "fine", f"{guest_vm.USERSPACE_UP}\ninit: done", 5.0, 1)

    monkeypatch.setattr(guest_vm, "_once", fake_once)
    boot = guest_vm.run("true")
    assert len(boots) == 2 and boot.rc == 0 and boot.attempts == 2
    assert "Kernel panic" in boot.serial  # the first boot's log is kept


def test_a_boot_that_ran_the_script_is_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    boots: list[str] = []

    def fake_once(script: str, timeout: float) -> guest_vm.Boot:
        boots.append(script)
        return guest_vm.Boot(1, "failed", f"{guest_vm.USERSPACE_UP}\n", 5.0, 1)

    monkeypatch.setattr(guest_vm, "_once", fake_once)
    boot = guest_vm.run("false")
    assert len(boots) == 1 and boot.rc == 1


def test_prepare_script_is_shellcheck_clean() -> None:
    require_tool("shellcheck")
    result = subprocess.run(
        ["shellcheck", str(guest_vm.PREPARE)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout


def test_prepare_script_documents_itself() -> None:
    result = subprocess.run(
        [str(guest_vm.PREPARE), "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0
    assert "PYSPDK_GUEST_DIR" in result.stdout
    bad = subprocess.run(
        [str(guest_vm.PREPARE), "--bogus"], capture_output=True, text=True, check=False
    )
    assert bad.returncode == 2
