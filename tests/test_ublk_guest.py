"""ublk round trips in a QEMU guest whose kernel has ublk_drv (this host's has none).

One boot runs every check (tests/guest/ublk_checks.py) and each test here
asserts one of them. Without a prepared guest the tests skip and say how to
prepare it; PYSPDK_REQUIRE_GUEST=1 turns that skip into a failure.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import guest_vm
import pytest

CHECKS = Path(__file__).resolve().parent / "guest" / "ublk_checks.py"

# One boot under TCG takes minutes, and a boot that never reaches userspace is
# retried once (guest_vm.run: up to 240 s each).
pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def guest(spdk: Any) -> dict[str, dict[str, Any]]:
    reason = guest_vm.missing()
    if reason is not None:
        if guest_vm.REQUIRE_GUEST:
            pytest.fail(f"PYSPDK_REQUIRE_GUEST=1 but {reason}", pytrace=False)
        pytest.skip(reason)
    # The guest imports the pyspdk_sys this process imported (its directory is shared
    # with the guest), wherever that comes from: an installation or PYTHONPATH.
    import pyspdk_sys

    where = shlex.quote(str(Path(pyspdk_sys.__file__).resolve().parents[1]))
    boot = guest_vm.run(f"export PYTHONPATH={where}\n" + guest_vm.python_command(CHECKS))
    if boot.rc is None:
        pytest.fail(
            f"the guest did not run the checks ({boot.attempts} boots, {boot.seconds:.0f} s); "
            f"serial log:\n{boot.serial[-4000:]}",
            pytrace=False,
        )
    results = {}
    for line in boot.output.splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            results[entry["check"]] = entry
    results["_boot"] = {"seconds": boot.seconds, "attempts": boot.attempts, "output": boot.output}
    print(f"guest: {boot.attempts} boot(s), {boot.seconds:.1f} s in all")
    return results


def check(guest: dict[str, dict[str, Any]], name: str) -> str:
    found = guest.get(name)
    assert found is not None, f"check {name} did not run; guest output:\n{guest['_boot']['output']}"
    assert found["ok"], found["detail"]
    print(f"{name}: {found['seconds']} s: {found['detail']}")
    return str(found["detail"])


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
