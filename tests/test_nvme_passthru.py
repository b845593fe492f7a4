"""NVMe commands of one's own: BlockDevice.nvme_admin / nvme_io and the typed helpers.

The NVMe bdev here is NVMe over TCP: an spdk_tgt process serves a malloc
namespace, and the session runtime attaches it. SPDK's target answers the
admin commands it implements (Identify, Get Log Page, Get/Set Features) and
translates NVM commands to its bdev, which is all these tests need; the
same calls on PCIe controllers run in the guest (tests/guest).
"""

from __future__ import annotations

import asyncio
import os
import struct
from collections.abc import Iterator
from typing import Any

import pytest
from processes import new_process
from test_transports import free_port

from conftest import spdk_tool

SERIAL = "PYSPDK0042"
BLOCKS = 16384  # 8 MiB of 512-byte blocks
NQN = "nqn.2016-06.io.spdk:passthru"


@pytest.fixture(scope="module")
def nvme(runtime: Any) -> Iterator[Any]:
    """An open NVMe/TCP bdev of a malloc namespace served by another SPDK process."""
    from pyspdk_sys import nvmf
    from pyspdk_sys.bdev import create_malloc

    with new_process(spdk_tool("spdk_tgt"), name="passthru-tgt") as target:
        create_malloc(target, "PassMalloc", BLOCKS * 512, 512)
        port = free_port()
        nvmf.serve(target, NQN, ["PassMalloc"], port=port, serial=SERIAL)
        (name,) = nvmf.attach(runtime, "Pass", "127.0.0.1", port, NQN)
        try:
            with runtime.open_bdev(name) as dev:
                yield dev
        finally:
            nvmf.detach(runtime, "Pass")


def test_identify_controller_and_namespace(nvme: Any) -> None:
    from pyspdk_sys import nvme_commands as cmds

    controller = cmds.identify_controller(nvme)
    assert controller.serial == SERIAL
    assert controller.model == "SPDK bdev Controller"
    assert controller.subnqn == NQN
    assert controller.nn >= 1 and controller.vid != 0
    assert controller.version[0] >= 1
    assert cmds.namespace_id(nvme) == 1
    namespace = cmds.identify_namespace(nvme)
    assert namespace.nsid == 1
    assert namespace.size == namespace.capacity == BLOCKS
    assert namespace.block_size == 512 == nvme.block_size
    assert namespace.formats[namespace.format_index].block_size == 512


def test_raw_identify_fills_a_plain_buffer_and_a_dma_buffer(runtime: Any, nvme: Any) -> None:
    from pyspdk_sys.bdev import DmaBuffer, NvmeCompletion

    plain = bytearray(4096)
    assert nvme.nvme_admin(0x06, cdw10=1, data=plain) == NvmeCompletion(0)
    with DmaBuffer(runtime, 4096) as dma:
        nvme.nvme_admin(0x06, cdw10=1, data=dma)
        assert bytes(dma.view) == bytes(plain)
    assert plain[4:14] == SERIAL.encode()


def test_an_invalid_opcode_is_an_nvme_error_with_its_status(nvme: Any) -> None:
    from pyspdk_sys.errors import IoError, NvmeError

    with pytest.raises(NvmeError) as caught:
        nvme.nvme_admin(0xC0)
    error = caught.value
    assert (error.sct, error.sc) == (0, 1)
    assert error.name == "Invalid Command Opcode"
    assert "Invalid Command Opcode" in str(error) and nvme.name in str(error)
    assert isinstance(error, IoError) and error.dnr is None
    assert nvme.read(0, 512) is not None  # the device goes on


def test_features_and_log_pages(nvme: Any) -> None:
    from pyspdk_sys import nvme_commands as cmds

    queues = cmds.get_features(nvme, 0x07)  # Number of Queues: 0-based counts
    assert queues == nvme.nvme_admin(0x0A, cdw10=0x07).cdw0
    assert queues & 0xFFFF >= 0 and queues >> 16 >= 0 and queues != 0
    smart = cmds.smart_log(nvme)
    assert len(smart.raw) == 512
    assert 0 <= smart.percentage_used <= 255
    page = cmds.get_log_page(nvme, 0x02, 512)
    assert page[:2] == smart.raw[:2]  # warnings and the low temperature byte agree
    with pytest.raises(ValueError, match="multiple of 4"):
        cmds.get_log_page(nvme, 0x02, 510)


def test_nvm_commands_write_read_and_deallocate(nvme: Any) -> None:
    from pyspdk_sys import nvme_commands as cmds

    data = os.urandom(1024)
    block = 64
    nvme.nvme_io(0x01, cdw10=block, cdw12=1, data=data)  # Write, 2 blocks (0-based NLB)
    assert nvme.read(block * 512, 1024) == data
    back = bytearray(1024)
    nvme.nvme_io(0x02, cdw10=block, cdw12=1, data=back)  # Read
    assert back == data
    cmds.dataset_management(nvme, [(block, 1)])
    assert nvme.read(block * 512, 512) == bytes(512)  # malloc's unmap zeroes
    assert nvme.read(block * 512 + 512, 512) == data[512:]
    with pytest.raises(ValueError, match="run past the end"):
        cmds.dataset_management(nvme, [(BLOCKS - 1, 2)])


def test_future_and_asyncio_forms(nvme: Any) -> None:
    expected = nvme.nvme_admin(0x0A, cdw10=0x07).cdw0
    assert nvme.nvme_admin_async(0x0A, cdw10=0x07).result(30).cdw0 == expected
    data = os.urandom(512)
    nvme.nvme_io_async(0x01, cdw10=80, data=data).result(30)

    async def main() -> tuple[Any, bytearray]:
        back = bytearray(512)
        got = await asyncio.wait_for(nvme.anvme_admin(0x0A, cdw10=0x07), 30)
        await asyncio.wait_for(nvme.anvme_io(0x02, cdw10=80, data=back), 30)
        return got, back

    got, back = asyncio.run(main())
    assert got.cdw0 == expected and back == data
    with pytest.raises(TypeError, match="unexpected NVMe command fields"):
        nvme.nvme_admin_async(0x0A, cdw9=1)


def test_bad_commands_are_refused_before_spdk(runtime: Any, nvme: Any, malloc: str) -> None:
    from pyspdk_sys.errors import NvmeError

    for kwargs, error, message in [
        ({"opcode": 256}, ValueError, "opcode"),
        ({"opcode": -1}, ValueError, "opcode"),
        ({"opcode": 0x06, "cdw10": 1 << 32}, ValueError, "cdw10"),
        ({"opcode": 0x06, "nsid": -1}, ValueError, "nsid"),
        ({"opcode": 0x06, "data": "text"}, TypeError, "bytes-like"),
        ({"opcode": 0x06, "data": b"\0" * 4096}, TypeError, "writable"),  # a read into bytes
        ({"opcode": 0xC0, "data": bytearray(16)}, ValueError, "transfers no data"),
        ({"opcode": 0x06, "data": bytearray(0)}, ValueError, "at least one byte"),
    ]:
        opcode = kwargs.pop("opcode")
        with pytest.raises(error, match=message):
            nvme.nvme_admin(opcode, **kwargs)
    assert nvme.gate.holds == []
    with runtime.open_bdev(malloc) as plain, pytest.raises(NotImplementedError, match="nvme_admin"):
        plain.nvme_admin(0x06, cdw10=1, data=bytearray(4096))
    with pytest.raises(NvmeError):  # Format NVM: SPDK's target does not offer it
        from pyspdk_sys import nvme_commands as cmds

        cmds.format_nvm(nvme, 0)


def test_identify_parsers_read_the_specified_offsets(spdk: Any) -> None:
    from pyspdk_sys.nvme_commands import ControllerIdentity, NamespaceIdentity, SmartLog

    data = bytearray(4096)
    struct.pack_into("<HH", data, 0, 0x1B36, 0x1AF4)
    data[4:24] = b"SN123".ljust(20)
    data[24:64] = b"Model X".ljust(40)
    data[64:72] = b"1.0".ljust(8)
    data[77] = 5
    struct.pack_into("<I", data, 80, 0x00010400)
    struct.pack_into("<I", data, 516, 3)
    struct.pack_into("<H", data, 520, 0x4)
    identity = ControllerIdentity.parse(data)
    assert (identity.vid, identity.ssvid, identity.serial, identity.model) == (
        0x1B36,
        0x1AF4,
        "SN123",
        "Model X",
    )
    assert identity.mdts == 5 and identity.version == (1, 4, 0) and identity.nn == 3
    assert identity.oncs == 0x4
    ns = bytearray(4096)
    struct.pack_into("<QQQ", ns, 0, 1000, 900, 10)
    ns[25] = 1  # two formats
    ns[26] = 1  # the second in use
    struct.pack_into("<HBB", ns, 128, 0, 9, 0)
    struct.pack_into("<HBB", ns, 132, 8, 12, 2)
    parsed = NamespaceIdentity.parse(7, ns)
    assert (parsed.size, parsed.capacity, parsed.utilization) == (1000, 900, 10)
    assert len(parsed.formats) == 2 and parsed.format_index == 1
    assert (parsed.block_size, parsed.metadata_size) == (4096, 8)
    smart = bytearray(512)
    smart[0] = 0x2
    struct.pack_into("<H", smart, 1, 310)
    smart[3] = 100
    struct.pack_into("<Q", smart, 128, 1234)
    log = SmartLog.parse(smart)
    assert (log.critical_warning, log.temperature_kelvin, log.available_spare) == (0x2, 310, 100)
    assert log.power_on_hours == 1234


def test_set_features_then_get_features(nvme: Any) -> None:
    from pyspdk_sys import nvme_commands as cmds
    from pyspdk_sys.nvme_commands import LbaFormat

    before = cmds.get_features(nvme, 0x0B)  # Asynchronous Event Configuration
    try:
        cmds.set_features(nvme, 0x0B, before ^ 0x100)
        assert cmds.get_features(nvme, 0x0B) == before ^ 0x100
    finally:
        cmds.set_features(nvme, 0x0B, before)
    assert cmds.get_features(nvme, 0x0B) == before
    assert isinstance(cmds.identify_namespace(nvme).formats[0], LbaFormat)
