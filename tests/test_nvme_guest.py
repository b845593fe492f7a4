"""NVMe over PCIe in the QEMU guest: emulated controllers, SPDK's userspace driver.

One boot (conftest's `guest` fixture, shared with the ublk checks) runs every
check of tests/guest/nvme_checks.py, and each test here asserts one of them;
each prints the time its check took in the guest. Without a prepared guest
the tests skip and say how to prepare it; PYSPDK_REQUIRE_GUEST=1 turns that
skip into a failure.
"""

from __future__ import annotations

from typing import Any

import pytest

from conftest import guest_check

pytestmark = pytest.mark.timeout(1200)

Guest = dict[str, dict[str, Any]]


def test_modules_hugepages_and_the_kernels_disks(guest: Guest) -> None:
    assert "uio_pci_generic" in guest_check(guest, "nvme_setup")


def test_list_devices_and_the_cli(guest: Guest) -> None:
    table = guest_check(guest, "list_devices")
    assert "0000:00:10.0" in table and "1b36:0010" in table and "nvme" in table


def test_bind_refuses_mounted_and_swap_namespaces(guest: Guest) -> None:
    detail = guest_check(guest, "bind_refuses_in_use")
    assert "is mounted on /tmp/mnt-a" in detail and "is swap" in detail


def test_bind_refuses_vfio_without_iommu_and_a_non_root_caller(guest: Guest) -> None:
    detail = guest_check(guest, "bind_refuses_vfio_and_non_root")
    assert "no IOMMU group" in detail and "needs root" in detail


def test_bind_and_unbind_keep_the_data(guest: Guest) -> None:
    assert "file system intact" in guest_check(guest, "bind_and_unbind")


def test_spdk_starts_with_pci(guest: Guest) -> None:
    guest_check(guest, "nvme_spdk_start")


def test_attach_namespaces_at_both_block_sizes(guest: Guest) -> None:
    detail = guest_check(guest, "attach_and_round_trip")
    assert "'Bn2': (4096," in detail


def test_attach_refusals_name_the_address(guest: Guest) -> None:
    detail = guest_check(guest, "attach_refusals")
    assert "0000:00:1e.0" in detail and "bind it to a userspace driver" in detail.lower()


def test_passthru_identify_controller_is_qemus(guest: Guest) -> None:
    detail = guest_check(guest, "passthru_identify_controller")
    assert "A: 'pyspdk0001' 'QEMU NVMe Ctrl'" in detail and "B: 'pyspdk0002'" in detail


def test_passthru_identify_namespace_gives_each_block_size(guest: Guest) -> None:
    detail = guest_check(guest, "passthru_identify_namespace")
    assert "'An1': (1, 512," in detail and "'Bn2': (2, 4096," in detail


def test_passthru_smart_log_counts_the_commands(guest: Guest) -> None:
    assert "(+10), writes" in guest_check(guest, "passthru_smart_log")


def test_passthru_number_of_queues(guest: Guest) -> None:
    detail = guest_check(guest, "passthru_number_of_queues")
    assert "= 0x003f003f: 64 SQs, 64 CQs" in detail and "Command Sequence Error" in detail


def test_passthru_invalid_opcode_is_an_nvme_error(guest: Guest) -> None:
    detail = guest_check(guest, "passthru_invalid_opcode")
    assert "Invalid Command Opcode (SCT 0, SC 0x01)" in detail


def test_passthru_raw_write_then_read(guest: Guest) -> None:
    assert "in the image" in guest_check(guest, "passthru_raw_write_read")


def test_passthru_dataset_management_deallocates(guest: Guest) -> None:
    assert "read back as zeroes, the others kept" in guest_check(guest, "passthru_deallocate")


def test_passthru_format_nvm_changes_the_block_size(guest: Guest) -> None:
    detail = guest_check(guest, "passthru_format_nvm")
    assert "block size 4096" in detail and "its data erased" in detail


def test_error_injection_gives_exactly_the_injected_status(guest: Guest) -> None:
    detail = guest_check(guest, "error_injection_exact_status")
    assert "NVMe status type 2, code 129" in detail  # media error, unrecovered read


def test_reset_with_io_in_flight(guest: Guest) -> None:
    assert "acknowledged ones read back" in guest_check(guest, "reset_with_io_in_flight")


def test_io_timeout_and_its_action(guest: Guest) -> None:
    assert "the late ones failed aborted (0/0x" in guest_check(guest, "io_timeout_and_action")


def test_an_spdk_process_attaches_too(guest: Guest) -> None:
    assert "attached B as [('P', '0000:00:11.0', ('Pn1', 'Pn2'))]" in guest_check(
        guest, "spdk_process_attach"
    )


def test_hot_remove_with_io_in_flight(guest: Guest) -> None:
    detail = guest_check(guest, "hot_remove_with_io_in_flight")
    assert "acknowledged writes are in the image" in detail


def test_the_check_scripts_ran_to_their_end(guest: Guest) -> None:
    """A script that died (not a failed check) adds a check named after it."""
    import guest_vm

    for script in guest_vm.CHECK_SCRIPTS:
        assert script.name not in guest, guest[script.name]["detail"]
    timings = {k: v["seconds"] for k, v in guest.items() if not k.startswith("_")}
    print("guest check times (s):", timings)
