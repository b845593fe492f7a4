"""ublk round trips in a QEMU guest whose kernel has ublk_drv (this host's has none).

One boot runs every check (tests/guest/ublk_checks.py, and the NVMe checks
of tests/test_nvme_guest.py: conftest's `guest` fixture) and each test here
asserts one of them. Without a prepared guest the tests skip and say how to
prepare it; PYSPDK_REQUIRE_GUEST=1 turns that skip into a failure.
"""

from __future__ import annotations

from typing import Any

import pytest

from conftest import guest_check

# One boot under TCG (the session's `guest` fixture, shared with the NVMe
# checks) takes minutes, and a boot that never reaches userspace is retried
# once (guest_vm.run).
pytestmark = pytest.mark.timeout(1200)


def check(guest: dict[str, dict[str, Any]], name: str) -> str:
    return guest_check(guest, name)


def test_spdk_starts_in_the_guest(guest: dict[str, dict[str, Any]]) -> None:
    check(guest, "spdk_start")


def test_two_disks_one_with_two_queues(guest: dict[str, dict[str, Any]]) -> None:
    detail = check(guest, "start_disks")
    assert "num_queues=2" in detail


def test_malloc_backed_disk_round_trip(guest: dict[str, dict[str, Any]]) -> None:
    assert "verified through /dev/ublkb0" in check(guest, "malloc_round_trip")


def test_python_served_disk_round_trip(guest: dict[str, dict[str, Any]]) -> None:
    assert "verified through /dev/ublkb1" in check(guest, "python_round_trip")


def test_backend_exception_reaches_dd_as_eio(guest: dict[str, dict[str, Any]]) -> None:
    assert "Input/output error" in check(guest, "backend_exception_is_eio")


def test_taken_id_is_refused(guest: dict[str, dict[str, Any]]) -> None:
    assert "already in use" in check(guest, "id_in_use")


def test_stop_disk_with_io_in_flight(guest: dict[str, dict[str, Any]]) -> None:
    detail = check(guest, "stop_with_io_in_flight")
    assert "reader ended" in detail and "writer ended" in detail


def test_a_disk_left_by_a_crashed_server_is_recovered(guest: dict[str, dict[str, Any]]) -> None:
    assert "recovered by this process" in check(guest, "recover_after_crash")


def test_interrupt_mode_serves_ublk_without_user_copy(guest: dict[str, dict[str, Any]]) -> None:
    """bench/kernel_peers.py's configuration: data through both disks, reactor in interrupt mode."""
    detail = check(guest, "interrupt_mode_without_user_copy")
    assert "verified through /dev/ublkb7" in detail and "verified through /dev/ublkb8" in detail
    assert "reactor in interrupt mode [True]" in detail
