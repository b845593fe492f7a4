"""NVMe checks run inside the QEMU guest (see tests/test_nvme_guest.py), one boot for all.

The harness gave the guest three emulated controllers (devices.json): A, one
namespace; B, in an NVM subsystem, two namespaces at 512-byte and 4-KiB
blocks; C, one namespace, for the hot-remove. The kernel's nvme driver takes
them first; the checks move them with pyspdk_sys.nvme, then attach them to
SPDK in this process, send them NVMe commands of their own (passthrough and
pyspdk_sys.nvme_commands: Identify, SMART, features, raw I/O, deallocate,
Format NVM), and break them: error injection, a reset and an I/O timeout
with I/O in flight, and a hot-remove (QMP device_del from the host).
QEMU's I/O throttling (block_set_io_throttle, over QMP) keeps I/O in flight.

Prints one JSON line per check (host.emit). Ends with os._exit: the guest
powers off right after, and a full teardown only costs time under TCG.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from typing import Any

import host

from pyspdk_sys import hugepages, nvme
from pyspdk_sys import nvme_commands as cmds
from pyspdk_sys.bdev import BlockDevice, bdev_info, list_bdevs, open_bdev
from pyspdk_sys.errors import DeviceBusyError, DeviceNotFoundError, IoError, NvmeError
from pyspdk_sys.process import SpdkProcess
from pyspdk_sys.runtime import Runtime

MNT = "/tmp/mnt-a"
# NVMe status codes the checks expect (NVMe base specification).
SCT_GENERIC, SCT_MEDIA = 0, 2
ABORTED_BY_REQUEST, ABORTED_SQ_DELETION = "0/0x7", "0/0x8"
SC_UNRECOVERED_READ = 0x81
SC_WRITE_FAULT = 0x80
OPC_WRITE, OPC_READ = 0x01, 0x02
QEMU_NQN = "nqn.2019-08.org.qemu"
QEMU_TEMPERATURE = 323  # kelvin: what QEMU's SMART log always reports


def run(*command: str, timeout: float = 120) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise OSError(f"{' '.join(command)}: exit {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def wait_until(what: str, test: Any, timeout: float = 30) -> float:
    start = time.monotonic()
    while not test():
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"{what}: not within {timeout} s")
        time.sleep(0.05)
    return time.monotonic() - start


def throttle(drive: str, iops: int) -> None:
    """QEMU serves at most `iops` commands a second on `drive` (0: no limit)."""
    limits = {"bps": 0, "bps_rd": 0, "bps_wr": 0, "iops": iops, "iops_rd": 0, "iops_wr": 0}
    answer = host.qmp("block_set_io_throttle", {"device": drive, **limits})
    assert "return" in answer, answer


def outcome(future: Future[Any], timeout: float) -> str:
    """'ok', or the failure's NVMe status as 'sct/sc', or its errno name."""
    try:
        future.result(timeout)
    except IoError as exc:
        if exc.errno == errno.EIO:
            return f"{exc.nvme_sct}/{exc.nvme_sc:#x}"
        return errno.errorcode.get(exc.errno or 0, str(exc.errno))
    return "ok"


def pattern(tag: int, size: int) -> bytes:
    return bytes([tag]) * 8 + os.urandom(size - 8)


def main() -> None:
    devices = {d["id"]: d for d in host.devices()["nvme"]}
    a, b, c = (devices[k]["address"] for k in ("nvme0", "nvme1", "nvme2"))
    drive = {k: f"{k}n1" for k in devices}
    state: dict[str, Any] = {}

    def setup() -> str:
        order = (host.MODULES / "order").read_text().split()
        loaded = host.insmod(*order)
        took = wait_until(
            "the kernel's nvme driver made the disks",
            lambda: all(nvme.pci_device(x).block_devices for x in (a, b, c)),
        )
        hugepages.reserve(1024)
        hugepages.mount()
        return f"loaded {' '.join(loaded)}; the kernel's disks appeared in {took:.1f} s"

    if not host.emit("nvme_setup", setup):
        os._exit(1)

    def listing() -> str:
        found = nvme.list_devices()
        assert [d.address for d in found] == [a, b, c], found
        assert {(d.ids, d.driver) for d in found} == {("1b36:0010", "nvme")}, found
        disks = [len(d.block_devices) for d in found]
        assert disks == [1, 2, 1], found
        cli = subprocess.run(
            [sys.executable, "-m", "pyspdk_sys", "devices", "--json"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        report = json.loads(cli.stdout)
        assert [(r["address"], r["driver"]) for r in report] == [(x, "nvme") for x in (a, b, c)]
        table = subprocess.run(
            [sys.executable, "-m", "pyspdk_sys", "devices"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        state["disk_a"] = found[0].block_devices[0]
        state["disk_b2"] = found[1].block_devices[1]
        return table.strip()

    host.emit("list_devices", listing)

    def refuse_in_use() -> str:
        disk_a, disk_b2 = f"/dev/{state['disk_a']}", f"/dev/{state['disk_b2']}"
        run("mkfs.ext4", "-q", "-F", disk_a)
        os.makedirs(MNT, exist_ok=True)
        run("mount", disk_a, MNT)
        with open(f"{MNT}/kept", "w") as out:
            out.write("written through the kernel's nvme driver\n")
        refusals = []
        try:
            try:
                nvme.bind(a, "uio_pci_generic")
                raise AssertionError("a controller with a mounted namespace was bound")
            except DeviceBusyError as exc:
                assert exc.users == (f"{state['disk_a']} is mounted on {MNT}",), exc.users
                refusals.append(str(exc))
        finally:
            run("umount", MNT)
        run("mkswap", disk_b2)
        run("swapon", disk_b2)
        try:
            try:
                nvme.bind(b, "uio_pci_generic")
                raise AssertionError("a controller with a swap namespace was bound")
            except DeviceBusyError as exc:
                assert exc.users == (f"{state['disk_b2']} is swap ({disk_b2})",), exc.users
                refusals.append(str(exc))
        finally:
            run("swapoff", disk_b2)
        assert [d.driver for d in nvme.list_devices()] == ["nvme"] * 3
        return " | ".join(refusals)

    host.emit("bind_refuses_in_use", refuse_in_use)

    def refuse_others() -> str:
        try:
            nvme.bind(a, "vfio-pci")
            raise AssertionError("vfio-pci took a device without an IOMMU")
        except OSError as exc:
            assert exc.errno == errno.ENODEV and "no IOMMU group" in str(exc), exc
            vfio = str(exc)
        code = (
            "import os, sys\nfrom pyspdk_sys import nvme\nos.setgid(65534); os.setuid(65534)\n"
            "try:\n    nvme.bind(sys.argv[1])\nexcept PermissionError as exc:\n    print(exc)\n"
        )
        dropped = subprocess.run(
            [sys.executable, "-c", code, a], capture_output=True, text=True, timeout=60
        )
        assert dropped.returncode == 0 and "needs root" in dropped.stdout, dropped
        assert nvme.pci_device(a).driver == "nvme"
        return f"{vfio} | as nobody: {dropped.stdout.strip()}"

    host.emit("bind_refuses_vfio_and_non_root", refuse_others)

    def bind_unbind() -> str:
        times = []
        for x in (a, b):
            begin = time.monotonic()
            moved = nvme.bind(x, "uio_pci_generic")
            times.append(time.monotonic() - begin)
            assert moved.driver == "uio_pci_generic" and moved.block_devices == (), moved
        back = nvme.unbind(a)
        assert back.driver == "nvme", back
        took = wait_until("A's disk back", lambda: nvme.pci_device(a).block_devices)
        disk = nvme.pci_device(a).block_devices[0]
        run("mount", "-o", "ro", f"/dev/{disk}", MNT)
        try:
            with open(f"{MNT}/kept") as kept:
                assert kept.read() == "written through the kernel's nvme driver\n"
        finally:
            run("umount", MNT)
        nvme.bind(a, "uio_pci_generic")
        assert [d.driver for d in nvme.list_devices()] == ["uio_pci_generic"] * 2 + ["nvme"]
        return (
            f"A and B bound to uio_pci_generic in {times[0]:.2f} s and {times[1]:.2f} s; A back "
            f"to nvme, its file system intact ({took:.1f} s for the disk), and bound again"
        )

    host.emit("bind_and_unbind", bind_unbind)

    started: list[Runtime] = []

    def start() -> str:
        started.append(Runtime(hugepages=True, pci=True, mem_size_mb=256).start())
        return "Runtime(hugepages=True, pci=True, mem_size_mb=256)"

    if not host.emit("nvme_spdk_start", start):
        os._exit(1)
    rt = started[0]

    def attach() -> str:
        names = {"A": nvme.attach_pcie(rt, "A", a, num_io_queues=2)}
        names["B"] = nvme.attach_pcie(rt, "B", b)
        assert names == {"A": ["An1"], "B": ["Bn1", "Bn2"]}, names
        sizes = {
            n: (bdev_info(rt, n).block_size, bdev_info(rt, n).num_blocks)
            for n in ("An1", "Bn1", "Bn2")
        }
        mib = devices["nvme0"]["mib"] << 20
        assert sizes == {
            "An1": (512, mib // 512),
            "Bn1": (512, mib // 512),
            "Bn2": (4096, mib // 4096),
        }, sizes
        listed = {
            (x.name, x.trtype, x.address, x.state, x.bdevs) for x in nvme.list_controllers(rt)
        }
        assert listed == {
            ("A", "PCIe", a, "enabled", ("An1",)),
            ("B", "PCIe", b, "enabled", ("Bn1", "Bn2")),
        }, listed
        # Each namespace keeps its own data: the same offsets, different bytes.
        written = {}
        for name in ("An1", "Bn1", "Bn2"):
            dev = open_bdev(rt, name)
            try:
                for offset in (0, 1 << 20, mib - 8192):
                    data = pattern(len(written), 8192)
                    dev.write(offset, data)
                    written[(name, offset)] = data
                if name == "Bn2":
                    try:
                        dev.write(512, b"x" * 512)
                        raise AssertionError("a 512-byte write to a 4-KiB namespace went through")
                    except ValueError as exc:
                        assert "block size 4096" in str(exc), exc
            finally:
                dev.close()
        for (name, offset), data in written.items():
            dev = open_bdev(rt, name)
            try:
                assert dev.read(offset, len(data)) == data, (name, offset)
            finally:
                dev.close()
        return f"A -> ['An1'], B -> ['Bn1', 'Bn2'] {sizes}; {len(written)} writes read back"

    host.emit("attach_and_round_trip", attach)

    def refusals() -> str:
        said = []
        for call, kind, words in (
            (
                lambda: nvme.attach_pcie(rt, "A2", a),
                FileExistsError,
                f"{a} is already attached as 'A'",
            ),
            (lambda: nvme.attach_pcie(rt, "A", c), FileExistsError, "named 'A' already exists"),
            (
                lambda: nvme.attach_pcie(rt, "Z", "0000:00:1e.0"),
                DeviceNotFoundError,
                "0000:00:1e.0",
            ),
            (
                lambda: nvme.attach_pcie(rt, "C", c),
                DeviceBusyError,
                "the kernel's nvme driver has it",
            ),
            (
                lambda: nvme.attach_pcie(rt, "C", c, timeout_us=1000),
                ValueError,
                "change only while no NVMe controller is attached; attached now: A, B",
            ),
            (lambda: nvme.unbind(a), DeviceBusyError, f"process {os.getpid()} "),
            (
                lambda: nvme.detach(rt, "nope"),
                DeviceNotFoundError,
                "no NVMe controller named 'nope'",
            ),
        ):
            try:
                call()
                raise AssertionError(f"no {kind.__name__} ({words})")
            except kind as exc:
                assert words in str(exc), f"{kind.__name__}: {exc}"
                said.append(f"{type(exc).__name__}: {exc}")
        assert [x.name for x in nvme.list_controllers(rt)] == ["A", "B"]
        assert nvme.pci_device(c).driver == "nvme"
        return "\n".join(said)

    host.emit("attach_refusals", refusals)

    def opened(name: str) -> BlockDevice:
        return open_bdev(rt, name)

    def identify_ctrl() -> str:
        with opened("An1") as dev, opened("Bn2") as dev_b:
            found = {x: cmds.identify_controller(d) for x, d in (("A", dev), ("B", dev_b))}
        for x, key in (("A", "nvme0"), ("B", "nvme1")):
            ident = found[x]
            assert (ident.serial, ident.model) == (devices[key]["serial"], "QEMU NVMe Ctrl"), ident
            assert (ident.vid, ident.ssvid) == (0x1B36, 0x1AF4), ident
        assert found["A"].nn == 256 and found["B"].nn == 256, (found["A"].nn, found["B"].nn)
        # QEMU names a controller's subsystem after its serial, or after nvme-subsys's nqn.
        assert found["A"].subnqn == f"{QEMU_NQN}:{devices['nvme0']['serial']}", found["A"]
        assert found["B"].subnqn == f"{QEMU_NQN}:{devices['nvme1']['subsystem']}", found["B"]
        a_id = found["A"]
        return (
            f"A: {a_id.serial!r} {a_id.model!r} fw {a_id.firmware!r} NVMe {a_id.version} "
            f"mdts {a_id.mdts} oacs {a_id.oacs:#x} oncs {a_id.oncs:#x} subnqn {a_id.subnqn!r}; "
            f"B: {found['B'].serial!r} in {found['B'].subnqn!r}"
        )

    host.emit("passthru_identify_controller", identify_ctrl)

    def identify_ns() -> str:
        said = {}
        mib = devices["nvme1"]["mib"] << 20
        for name in ("An1", "Bn1", "Bn2"):
            with opened(name) as dev:
                ns = cmds.identify_namespace(dev)
                assert ns.block_size == dev.block_size, (name, ns.block_size, dev.block_size)
                assert ns.size == ns.capacity == mib // ns.block_size, (ns.size, ns.capacity)
                assert ns.metadata_size == 0, ns.metadata_size
                said[name] = (ns.nsid, ns.block_size, ns.format_index, len(ns.formats))
        assert {n: v[:2] for n, v in said.items()} == {
            "An1": (1, 512),
            "Bn1": (1, 512),
            "Bn2": (2, 4096),
        }, said
        with opened("Bn1") as dev:  # B's other namespace, by nsid, through Bn1
            assert cmds.identify_namespace(dev, 2).block_size == 4096
        return f"(nsid, block size, format in use, formats): {said}"

    host.emit("passthru_identify_namespace", identify_ns)

    def smart() -> str:
        with opened("An1") as dev:
            before = cmds.smart_log(dev)
            for i in range(10):
                dev.read(i * 4096, 4096)
            dev.write(0, b"s" * 4096)
            log = cmds.smart_log(dev)
        assert len(log.raw) == 512 and log.critical_warning == 0, log.critical_warning
        assert log.temperature_kelvin == QEMU_TEMPERATURE, log.temperature_kelvin
        assert (log.media_errors, log.percentage_used) == (0, 0), (
            log.media_errors,
            log.percentage_used,
        )
        # The counters count the commands SPDK sent: the 10 reads and the write.
        reads = log.host_read_commands - before.host_read_commands
        writes = log.host_write_commands - before.host_write_commands
        assert (reads, writes) == (10, 1), (reads, writes)
        return (
            f"temperature {log.temperature_kelvin} K; host reads {log.host_read_commands} "
            f"(+{reads}), writes {log.host_write_commands} (+{writes}); data units read "
            f"{log.data_units_read}, written {log.data_units_written}"
        )

    host.emit("passthru_smart_log", smart)

    def queues() -> str:
        with opened("An1") as dev:
            value = cmds.get_features(dev, 0x07)  # Number of Queues
            # 0-based counts: submission queues in bits 15:0, completion queues in 31:16
            nsqa, ncqa = (value & 0xFFFF) + 1, (value >> 16) + 1
            # A was attached with num_io_queues=2: SPDK asked for 2, the controller
            # allocates what it has (QEMU: max_ioqpairs, 64), SPDK uses at most 2.
            assert nsqa == ncqa == 64, (nsqa, ncqa)
            try:  # allowed only before the I/O queues exist
                cmds.set_features(dev, 0x07, 0x00010001)
                raise AssertionError("Set Features Number of Queues after queue creation went")
            except NvmeError as exc:
                assert (exc.sct, exc.sc) == (0, 0x0C), exc  # Command Sequence Error
                refused = str(exc)
            assert cmds.get_features(dev, 0x07) == value
        return f"get_features(0x07) = {value:#010x}: {nsqa} SQs, {ncqa} CQs; {refused}"

    host.emit("passthru_number_of_queues", queues)

    def bad_opcode() -> str:
        with opened("An1") as dev:
            try:
                dev.nvme_admin(0xC0)
                raise AssertionError("admin opcode 0xC0 succeeded")
            except NvmeError as exc:
                assert (exc.sct, exc.sc, exc.name) == (0, 1, "Invalid Command Opcode"), exc
                said = str(exc)
            assert dev.read(0, 512)  # the device goes on
        return said

    host.emit("passthru_invalid_opcode", bad_opcode)

    def raw_io() -> str:
        block = 4096  # 2 MiB into An1, beyond what the other checks write
        data = os.urandom(4096)
        with opened("An1") as dev:
            dev.nvme_io(OPC_WRITE, cdw10=block, cdw12=7, data=data)  # 8 blocks, NLB 0-based
            assert dev.read(block * 512, 4096) == data
            back = bytearray(4096)
            dev.nvme_io(OPC_READ, cdw10=block + 4, cdw12=3, data=back)  # the last 4 blocks
            assert back[:2048] == data[2048:], "nvme_io read gave other bytes"
        assert host.read_image(drive["nvme0"], block * 512, 4096) == data
        return "an 8-block nvme_io write read back by read(), by nvme_io and in the image"

    host.emit("passthru_raw_write_read", raw_io)

    def deallocate() -> str:
        first = 6144  # 3 MiB into An1; 4-KiB aligned ranges: the image's holes are 4 KiB
        with opened("An1") as dev:
            assert cmds.identify_controller(dev).oncs & 0x4, "no Dataset Management"
            dlfeat = cmds.identify_namespace(dev).raw[33] & 0x7
            assert dlfeat == 1, f"DLFEAT {dlfeat}: deallocated blocks do not read as zeroes"
            dev.write(first * 512, b"d" * 16384)
            cmds.dataset_management(dev, [(first, 8), (first + 16, 8)])
            got = dev.read(first * 512, 16384)
        kept = b"d" * 4096
        assert got == bytes(4096) + kept + bytes(4096) + kept, got[::512]
        assert host.read_image(drive["nvme0"], first * 512, 4096) == bytes(4096)
        return "blocks 0-7 and 16-23 of 32 deallocated read back as zeroes, the others kept"

    host.emit("passthru_deallocate", deallocate)

    def formatting() -> str:
        with opened("Bn1") as dev:
            ident = cmds.identify_controller(dev)
            assert ident.oacs & 0x2, f"QEMU does not offer Format NVM (OACS {ident.oacs:#x})"
            ns = cmds.identify_namespace(dev)
            sizes = [f.block_size for f in ns.formats]
            plain = {
                f.block_size: i
                for i, f in reversed(list(enumerate(ns.formats)))
                if f.metadata_size == 0
            }
            assert {512, 4096} <= set(plain), ns.formats
            dev.write(0, b"f" * 4096)
            begin = time.monotonic()
            cmds.format_nvm(dev, plain[4096])
            took = time.monotonic() - begin
            after = cmds.identify_namespace(dev)
            got = (after.block_size, after.size)
            assert got == (4096, ns.size // 8), got
            cmds.format_nvm(dev, plain[512])
            back = cmds.identify_namespace(dev)
            now = (back.block_size, back.size, back.format_index)
            assert now == (512, ns.size, ns.format_index), now
            erased = dev.read(0, 4096)
        assert erased == bytes(4096), "the data outlived the format"
        return (
            f"formats {sizes}; Bn1 formatted to LBA format {plain[4096]} ({took:.2f} s): "
            f"block size {after.block_size}, {after.size} blocks; back to {plain[512]}: "
            f"{back.block_size}, {back.size} blocks; its data erased"
        )

    host.emit("passthru_format_nvm", formatting)

    def injection() -> str:
        dev = open_bdev(rt, "An1")  # before the injection: it applies to existing queues
        try:
            said = []
            # SPDK retries a failed I/O 3 times (bdev_retry_count): 3 failures are absorbed.
            nvme.inject_error(rt, "A", opc=OPC_READ, sct=SCT_MEDIA, sc=SC_UNRECOVERED_READ, count=3)
            dev.read(0, 4096)
            nvme.inject_error(rt, "A", opc=OPC_READ, sct=SCT_MEDIA, sc=SC_UNRECOVERED_READ, count=4)
            try:
                dev.read(0, 4096)
                raise AssertionError("the injected read error did not reach Python")
            except IoError as exc:
                assert (exc.errno, exc.nvme_sct, exc.nvme_sc) == (errno.EIO, 2, 0x81), exc
                said.append(str(exc))
            dev.read(0, 4096)  # used up
            nvme.inject_error(rt, "A", opc=OPC_WRITE, sct=SCT_MEDIA, sc=SC_WRITE_FAULT, count=4)
            try:
                dev.write(4096, b"w" * 4096)
                raise AssertionError("the injected write error did not reach Python")
            except IoError as exc:
                assert (exc.nvme_sct, exc.nvme_sc) == (2, 0x80), exc
                said.append(str(exc))
            nvme.inject_error(
                rt, "A", opc=OPC_READ, sct=SCT_GENERIC, sc=0x04, count=4, hold_us=250_000
            )
            begin = time.monotonic()
            try:
                dev.read(0, 4096)
                raise AssertionError("the held read did not fail")
            except IoError as exc:
                held = time.monotonic() - begin
                assert (exc.nvme_sct, exc.nvme_sc) == (0, 0x04) and held >= 1.0, (exc, held)
                said.append(f"held 4 x 0.25 s: failed after {held:.2f} s: {exc}")
            nvme.inject_error(
                rt, "A", opc=OPC_READ, sct=SCT_MEDIA, sc=SC_UNRECOVERED_READ, count=100
            )
            nvme.clear_injected_errors(rt, "A", opc=OPC_READ)
            dev.read(0, 4096)
            return "\n".join(said)
        finally:
            dev.close()

    host.emit("error_injection_exact_status", injection)

    def reset_in_flight() -> str:
        dev = open_bdev(rt, "An1")
        try:
            size, count = 4096, 8
            base = 8 << 20
            old = [pattern(0xA0 + i, size) for i in range(count)]
            new = [pattern(0xB0 + i, size) for i in range(count)]
            for i in range(count):
                dev.write(base + i * size, old[i])
            throttle(drive["nvme0"], 2)
            futures = [dev.write_async(base + i * size, new[i]) for i in range(count)]
            time.sleep(0.3)
            pending = sum(not f.done() for f in futures)
            assert pending >= 2, f"only {pending} writes in flight"
            begin = time.monotonic()
            nvme.reset_controller(rt, "A")
            took = time.monotonic() - begin
            ends = [outcome(f, 30) for f in futures]
            ended = time.monotonic() - begin
            throttle(drive["nvme0"], 0)
            failed = [e for e in ends if e != "ok"]
            assert failed, f"no write failed across the reset: {ends}"
            for i, end in enumerate(ends):
                got = dev.read(base + i * size, size)
                if end == "ok":
                    assert got == new[i], f"acknowledged write {i} lost across the reset"
                else:
                    assert got in (old[i], new[i]), f"write {i} ({end}) left other bytes"
            dev.write(0, b"r" * 4096)
            assert dev.read(0, 4096) == b"r" * 4096
            state_now = {x.name: x.state for x in nvme.list_controllers(rt)}["A"]
            assert state_now == "enabled", state_now
            return (
                f"{pending} of {count} writes in flight; reset took {took:.2f} s; all ended "
                f"{ended:.2f} s after it: {ends}; acknowledged ones read back, I/O after works"
            )
        finally:
            with_timeout = threading.Thread(target=lambda: throttle(drive["nvme0"], 0))
            with_timeout.start()
            with_timeout.join(30)
            dev.close()

    host.emit("reset_with_io_in_flight", reset_in_flight)

    def timeout_action() -> str:
        # timeout_us and its action are SPDK-wide: detach every controller first.
        for name in ("A", "B"):
            assert nvme.detach(rt, name) is True
        assert nvme.list_controllers(rt) == []
        assert nvme.attach_pcie(rt, "A", a, timeout_us=1_000_000, action_on_timeout="abort") == [
            "An1"
        ]
        dev = open_bdev(rt, "An1")
        try:
            throttle(drive["nvme0"], 1)
            begin = time.monotonic()
            futures = [dev.read_async(i * 4096, 4096) for i in range(6)]
            ends = []
            for f in futures:
                ends.append((outcome(f, 30), round(time.monotonic() - begin, 2)))
            throttle(drive["nvme0"], 0)
            failed = [(e, t) for e, t in ends if e != "ok"]
            assert failed, f"no read timed out: {ends}"
            assert all(t >= 1.0 for _, t in failed), f"a read failed before the timeout: {ends}"
            # QEMU cannot abort a command it holds, so SPDK resets the controller: the
            # reads end aborted, "by request" (v26.01) or "due to SQ deletion" (v26.05).
            statuses = {e for e, _ in failed}
            assert statuses <= {ABORTED_BY_REQUEST, ABORTED_SQ_DELETION}, ends
            assert dev.read(0, 4096)  # the controller works again
            return (
                f"reads (QEMU at 1 command/s, timeout 1 s, action abort): {ends}; the late "
                f"ones failed aborted ({', '.join(sorted(statuses))})"
            )
        finally:
            dev.close()
            nvme.detach(rt, "A")

    host.emit("io_timeout_and_action", timeout_action)

    def in_a_process() -> str:
        """The same helpers on spdk_tgt in its own process (core 1; this one has core 0)."""
        begin = time.monotonic()
        with SpdkProcess(
            hugepages=True, pci=True, cpu_mask="0x2", args=("--disable-cpumask-locks",)
        ) as proc:
            started = time.monotonic() - begin
            assert nvme.attach_pcie(proc, "P", b, num_io_queues=1) == ["Pn1", "Pn2"]
            listed = [(x.name, x.address, x.bdevs) for x in nvme.list_controllers(proc)]
            assert listed == [("P", b, ("Pn1", "Pn2"))], listed
            users = nvme.in_use(b)
            assert len(users) == 1 and "/dev/uio" in users[0], users
            assert nvme.list_controllers(rt) == []  # the other process's, not this one's
            nvme.reset_controller(proc, "P")
            assert nvme.detach(proc, "P") is True
            assert nvme.in_use(b) == []
        return f"spdk_tgt started in {started:.1f} s; attached B as {listed}; held: {users}"

    host.emit("spdk_process_attach", in_a_process)

    def hot_remove() -> str:
        nvme.bind(c, "uio_pci_generic")
        # Back to no timeout, as SPDK starts (no controller is attached now).
        assert nvme.attach_pcie(rt, "C", c, timeout_us=0, action_on_timeout="none") == ["Cn1"]
        dev = open_bdev(rt, "Cn1")
        size, count = 4096, 6
        kept = [pattern(0xC0 + i, size) for i in range(count)]
        for i in range(count):
            dev.write(i * size, kept[i])  # acknowledged before the removal
        throttle(drive["nvme2"], 2)
        late = [pattern(0xD0 + i, size) for i in range(count)]
        futures = [dev.write_async((count + i) * size, late[i]) for i in range(count)]
        futures += [dev.read_async(i * size, size) for i in range(count)]
        time.sleep(0.3)
        pending = sum(not f.done() for f in futures)
        assert pending >= 2, f"only {pending} I/Os in flight"
        begin = time.monotonic()
        answer = host.qmp("device_del", {"id": "nvme2"})
        assert "return" in answer, answer
        ends = [outcome(f, 60) for f in futures]
        ended = time.monotonic() - begin
        assert any(e != "ok" for e in ends), f"no in-flight I/O failed: {ends}"
        try:
            dev.read(0, size)
            raise AssertionError("a read after the removal succeeded")
        except IoError as exc:
            after = str(exc)
        gone = wait_until("Cn1 gone", lambda: "Cn1" not in {x.name for x in list_bdevs(rt)})
        removed = wait_until(
            "the PCI device gone", lambda: not os.path.exists(f"/sys/bus/pci/devices/{c}")
        )
        detached = nvme.detach(rt, "C", missing_ok=True)
        assert nvme.list_controllers(rt) == []
        begin_close = time.monotonic()
        dev.close()
        closed = time.monotonic() - begin_close
        # Every write SPDK acknowledged is in the image, as the host reads it.
        for i in range(count):
            assert host.read_image(drive["nvme2"], i * size, size) == kept[i], i
        for i, end in enumerate(ends[:count]):
            if end == "ok":
                got = host.read_image(drive["nvme2"], (count + i) * size, size)
                assert got == late[i], f"acknowledged write {i} is not in the image"
        return (
            f"{pending} I/Os in flight at device_del; all ended within {ended:.2f} s: {ends}; "
            f"a later read: {after}; Cn1 gone after {gone:.2f} s, the PCI device after "
            f"{removed:.2f} s; detach(missing_ok) -> {detached}; close took {closed:.2f} s; "
            "acknowledged writes are in the image"
        )

    host.emit("hot_remove_with_io_in_flight", hot_remove)
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
