"""vhost and nvmf helpers against hostile peers, wrong calls and stopped targets.

SPDK runs in its own processes here: a target spdk_tgt on core 1, an
initiator spdk_tgt (hugepages, single-file segments) on core 0, and Python
runtimes (transport_roles.py) on core 0 where Python must do the I/O. Fake
peers (test_transport_checks.FakePeer) run on threads of the test process.
Every call that once froze SPDK's thread or hung is timed and bounded.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cores import reactor_cores, reactor_mask
from processes import TEST_ARGS, new_process
from test_transport_checks import FakePeer
from test_transports import Role, free_port
from timing import time_bound, wake_lateness, worst_time

from conftest import ensure_hugepages, run_python, spdk_tool

TARGET_CORE = reactor_mask(0)
INITIATOR_CORE = reactor_mask(1)
INITIATOR_MB = 1024  # the initiator spdk_tgt
ROLE_MB = 256  # a Python initiator runtime
MiB = 1 << 20
HOST1 = "nqn.2016-06.io.spdk:host1"
HOST2 = "nqn.2016-06.io.spdk:host2"
_counter = iter(range(1_000_000))


def unique(prefix: str) -> str:
    return f"{prefix}{next(_counter)}"


def nqn_for(label: str) -> str:
    return f"nqn.2016-06.io.spdk:hostile-{label}-{next(_counter)}"


@pytest.fixture(scope="module")
def pages(spdk: Any) -> None:
    """Free 2 MiB hugepages (and a mount) for the initiator and one Python runtime."""
    ensure_hugepages(INITIATOR_MB + ROLE_MB)


@pytest.fixture(scope="module")
def tgt(spdk: Any) -> Iterator[Any]:
    """The target: spdk_tgt on reactor core slot 0 (cores.py), no hugepages."""
    with new_process(spdk_tool("spdk_tgt"), cpu_mask=TARGET_CORE, name="hostile-tgt") as proc:
        yield proc


@pytest.fixture(scope="module")
def ini(spdk: Any, pages: None) -> Iterator[Any]:
    """The initiator: spdk_tgt on slot 1, with hugepages in single-file segments (-g)."""
    with new_process(
        spdk_tool("spdk_tgt"),
        cpu_mask=INITIATOR_CORE,
        hugepages=True,
        mem_size_mb=INITIATOR_MB,
        args=(*TEST_ARGS, "-g"),
        name="hostile-ini",
    ) as proc:
        yield proc


@pytest.fixture
def malloc(tgt: Any) -> Iterator[Callable[..., str]]:
    """Make malloc bdevs on the target (16 MiB unless told), deleted afterwards."""
    from pyspdk_sys.bdev.manage import create_malloc

    made: list[str] = []

    def make(size: int = 16 * MiB) -> str:
        made.append(create_malloc(tgt, unique("Hostile"), size, 512))
        return made[-1]

    yield make
    for name in made:
        with contextlib.suppress(Exception):
            tgt.rpc("bdev_malloc_delete", {"name": name})


@pytest.fixture
def sockets(short_tmp: Path) -> Iterator[Callable[[str], str]]:
    """Fresh socket paths in a short directory."""
    made: list[str] = []

    def path(label: str) -> str:
        made.append(str(short_tmp / f"{label}-{next(_counter)}.sock"))
        return made[-1]

    yield path
    for item in made:
        with contextlib.suppress(OSError):
            os.unlink(item)


@pytest.fixture
def peers(short_tmp: Path) -> Iterator[Callable[..., FakePeer]]:
    made: list[FakePeer] = []

    def make(mode: str, unix: bool = True) -> FakePeer:
        path = str(short_tmp / f"fake-{next(_counter)}.sock") if unix else None
        made.append(FakePeer(mode, path))
        return made[-1]

    yield make
    for peer in made:
        peer.close()


def _refused(proc: Any) -> None:
    """An RPC to a stopped process: RuntimeStateError, at once."""
    from pyspdk_sys.errors import RuntimeStateError

    with pytest.raises(RuntimeStateError):
        proc.rpc("spdk_get_version")


def initiator_state(proc: Any) -> tuple[list[str], list[str]]:
    """The initiator's bdevs and virtio-scsi controllers: what an attach left behind."""
    bdevs = sorted(b["name"] for b in proc.rpc("bdev_get_bdevs"))
    scsi = sorted(d["name"] for d in proc.rpc("bdev_virtio_scsi_get_devices"))
    return bdevs, scsi


def alive(proc: Any) -> None:
    """SPDK's thread answers at once: nothing froze it."""
    started = time.monotonic()
    assert proc.rpc("spdk_get_version", timeout=10)["version"]
    assert time.monotonic() - started < 5


# ------------------------------------------------------------ vhost: peers that do not answer


@pytest.mark.parametrize("mode", ["silent", "half", "garbage", "close"])
def test_vhost_attach_to_a_peer_that_is_not_vhost_user(ini: Any, peers: Any, mode: str) -> None:
    """Issue: SPDK's virtio-user waits in a blocking recv() on its app thread, so a
    listener that never answers froze SPDK for good. Now attach asks first, from
    Python with a deadline, and SPDK is never handed such a socket."""
    from pyspdk_sys import vhost

    peer = peers(mode)
    path = peer.sock.getsockname()
    before = initiator_state(ini)
    answered = worst_time(lambda: ini.rpc("spdk_get_version"))  # the baseline
    started = time.monotonic()
    with pytest.raises(OSError) as caught:
        vhost.attach(ini, unique("Fake"), path, probe_timeout=1.0)
    elapsed = time.monotonic() - started
    print(f"\n{mode}: {caught.value!r} after {elapsed:.2f} s (an RPC: {answered:.3f} s)")
    assert path in str(caught.value)
    assert caught.value.errno in (errno.ETIMEDOUT, errno.EPROTO, errno.ECONNRESET)
    # The probe's deadline, plus what a few RPCs take here now.
    assert elapsed < time_bound(1.0, answered), (elapsed, answered)
    alive(ini)
    assert initiator_state(ini) == before


def test_vhost_attach_to_a_peer_that_stalls_after_the_probe(ini: Any, peers: Any) -> None:
    """A listener that answers the probe's questions and then stalls on GET_CONFIG:
    SPDK's thread waits for that reply in a blocking recv(), so the relay in front
    of it cuts the connection at the deadline, and SPDK goes on."""
    from pyspdk_sys import vhost

    peer = peers("stall-later")
    path = peer.sock.getsockname()
    before = initiator_state(ini)
    started = time.monotonic()
    with pytest.raises(TimeoutError) as caught:
        vhost.attach(ini, unique("Fake"), path, probe_timeout=1.0)
    elapsed = time.monotonic() - started
    assert caught.value.errno == errno.ETIMEDOUT
    assert path in str(caught.value) and "GET_CONFIG" in str(caught.value), caught.value
    assert elapsed < 1.0 * 2 + 5  # the probe's and the relay's deadlines, plus RPCs
    alive(ini)
    assert initiator_state(ini) == before


def test_vhost_probe_then_attach_to_spdk_target(
    tgt: Any, ini: Any, malloc: Any, sockets: Any
) -> None:
    """SPDK's vhost target takes the initiator's connection after the probes' own
    connections ended (attach itself probes first)."""
    from pyspdk_sys import vhost

    bdev = malloc(8 * MiB)
    path = sockets("probed")
    vhost.create_blk_controller(tgt, path, bdev)
    for _ in range(5):
        features, protocol = vhost.probe(path, timeout=3)
        assert features & (1 << 30) and protocol & (1 << 9)  # protocol features; config
    name = unique("Probed")
    assert vhost.attach(ini, name, path, queues=2) == [name]
    (entry,) = ini.rpc("bdev_get_bdevs", {"name": name})
    assert entry["num_blocks"] * entry["block_size"] == 8 * MiB
    (controller,) = tgt.rpc("vhost_get_controllers", {"name": vhost._find(tgt, path).name})
    assert len(controller["sessions"]) == 1  # the initiator's; the probes' are gone
    vhost.detach(ini, name)
    vhost.delete_controller(tgt, path)
    assert not os.path.exists(path)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("dev_type", ["blk", "scsi"])
def test_vhost_python_initiator_io_after_the_probe(
    tgt: Any, pages: None, malloc: Any, sockets: Any, dev_type: str
) -> None:
    """A Python runtime attaches (probe first) and its data round-trips, blk and scsi."""
    from pyspdk_sys import vhost

    path = sockets(dev_type)
    if dev_type == "blk":
        vhost.create_blk_controller(tgt, path, malloc(8 * MiB))
        expected = {"Init0": 8 * MiB}
    else:
        vhost.create_scsi_controller(tgt, path, {0: malloc(8 * MiB), 2: malloc(4 * MiB)})
        expected = {"Init0t0": 8 * MiB, "Init0t2": 4 * MiB}
    args = {"socket": path, "dev_type": dev_type, "cpu_mask": INITIATOR_CORE}
    role = Role("attach_io", {**args, "mem_size_mb": ROLE_MB})
    try:
        result = role.expect("RESULT", 180)
        assert role.finish() == 0, role.stderr()
    finally:
        role.kill()
    print(f"\n{dev_type}: {result}")
    assert result["error"] is None
    assert result["verified"] == {name: True for name in expected}
    assert result["sizes"] == expected
    vhost.delete_controller(tgt, path)


# ------------------------------------------------------------ vhost: initiator memory


def test_vhost_initiator_process_on_hugepages_attaches(
    spdk: Any, tgt: Any, pages: None, malloc: Any, sockets: Any
) -> None:
    """SpdkProcess(hugepages=True) starts spdk_tgt with single-file segments, as a
    Runtime on hugepages: a usable vhost-user initiator."""
    from pyspdk_sys import vhost

    path = sockets("mem-ok")
    vhost.create_blk_controller(tgt, path, malloc(8 * MiB))
    with new_process(
        spdk_tool("spdk_tgt"), cpu_mask=INITIATOR_CORE, name="hostile-mem-ok", hugepages=True
    ) as proc:
        assert "--single-file-segments" in proc.command()
        names = vhost.attach(proc, "V0", path)
        assert names and all(n in initiator_state(proc)[0] for n in names)
        vhost.detach(proc, "V0")
    vhost.delete_controller(tgt, path)


def test_vhost_initiator_without_hugepages_is_refused(
    spdk: Any, tgt: Any, pages: None, malloc: Any, sockets: Any
) -> None:
    """Issue: without hugepages the attach succeeded and every I/O hung (and so did
    stopping SPDK). Refused up front now, before SPDK is asked; nothing is made."""
    from pyspdk_sys import vhost
    from pyspdk_sys.errors import HugepagesError

    path = sockets("mem")
    vhost.create_blk_controller(tgt, path, malloc(8 * MiB))
    with new_process(spdk_tool("spdk_tgt"), cpu_mask=INITIATOR_CORE, name="hostile-mem") as proc:
        before = initiator_state(proc)
        with pytest.raises(HugepagesError, match="needs hugepages") as caught:
            vhost.attach(proc, "V0", path)
        assert "Runtime(hugepages=True)" in str(caught.value)
        assert initiator_state(proc) == before
    vhost.delete_controller(tgt, path)


@pytest.mark.timeout(240)
def test_vhost_python_initiator_without_hugepages_is_refused_and_leaves(
    tgt: Any, malloc: Any, sockets: Any
) -> None:
    """The same from a Runtime(hugepages=False): a clear error, no bdev, and leaving
    the `with` takes as long as any stop (it once hung for good)."""
    from pyspdk_sys import vhost

    path = sockets("nohuge")
    vhost.create_blk_controller(tgt, path, malloc(8 * MiB))
    args = {"socket": path, "hugepages": False, "cpu_mask": INITIATOR_CORE}
    role = Role("attach_io", {**args, "mem_size_mb": ROLE_MB})
    try:
        result = role.expect("RESULT", 180)
        assert role.finish(60) == 0, role.stderr()
    finally:
        role.kill()
    print(f"\nno hugepages: {result}")
    assert result["error"].startswith("HugepagesError: a vhost-user initiator needs hugepages")
    assert "Runtime(hugepages=True)" in result["error"]
    assert result["bdevs"] == [] and result["verified"] == {}
    assert result["seconds_to_leave"] < 30
    vhost.delete_controller(tgt, path)


# ------------------------------------------------------------ vhost: wrong calls


def test_vhost_attach_with_the_wrong_dev_type(
    tgt: Any, ini: Any, malloc: Any, sockets: Any
) -> None:
    """A virtio-scsi initiator on a vhost-blk controller once made no bdev, raised
    nothing and flooded the log; a blk one on vhost-scsi failed with EINVAL."""
    from pyspdk_sys import vhost

    blk, scsi = sockets("blk"), sockets("scsi")
    vhost.create_blk_controller(tgt, blk, malloc(8 * MiB))
    vhost.create_scsi_controller(tgt, scsi, {0: malloc(8 * MiB)})
    before = initiator_state(ini)
    with pytest.raises(ValueError, match=r"not virtio-scsi.*dev_type='blk'"):
        vhost.attach(ini, unique("Wrong"), blk, dev_type="scsi")
    with pytest.raises(ValueError, match=r"device config.*dev_type='scsi'"):
        vhost.attach(ini, unique("Wrong"), scsi, dev_type="blk")
    assert initiator_state(ini) == before
    alive(ini)
    vhost.delete_controller(tgt, blk)
    vhost.delete_controller(tgt, scsi)


def test_vhost_attach_name_taken_and_detach_unknown(
    tgt: Any, ini: Any, malloc: Any, sockets: Any
) -> None:
    from pyspdk_sys import vhost
    from pyspdk_sys.errors import DeviceNotFoundError

    path = sockets("taken")
    vhost.create_blk_controller(tgt, path, malloc(8 * MiB))
    name = unique("Taken")
    assert vhost.attach(ini, name, path) == [name]
    with pytest.raises(FileExistsError, match=name):
        vhost.attach(ini, name, path)
    vhost.detach(ini, name)
    with pytest.raises(DeviceNotFoundError, match=name):
        vhost.detach(ini, name)
    vhost.delete_controller(tgt, path)


def test_vhost_delete_controller_with_an_initiator_connected(
    tgt: Any, ini: Any, malloc: Any, sockets: Any
) -> None:
    """SPDK's vhost_delete_controller does not answer while an initiator is
    connected (it retries until the initiator goes, then deletes): the RPC
    timed out after 60 s and the controller vanished later. Refused now."""
    from pyspdk_sys import vhost

    path = sockets("busy")
    controller = vhost.create_blk_controller(tgt, path, malloc(8 * MiB))
    name = unique("Busy")
    vhost.attach(ini, name, path)
    started = time.monotonic()
    with pytest.raises(OSError, match="initiator is connected") as caught:
        vhost.delete_controller(tgt, path)
    assert caught.value.errno == errno.EBUSY
    assert time.monotonic() - started < vhost._BUSY_SECONDS + 4
    assert vhost.list_controllers(tgt).count(controller) == 1
    vhost.detach(ini, name)
    vhost.delete_controller(tgt, path)  # the detached session goes within a second
    assert controller not in vhost.list_controllers(tgt)
    assert not os.path.exists(path)


def test_vhost_create_controller_refusals(tgt: Any, malloc: Any, sockets: Any, peers: Any) -> None:
    """Each refusal names its cause (SPDK: "No such device", "Invalid argument",
    "Operation not permitted") and leaves no controller behind."""
    from pyspdk_sys import nvmf, vhost
    from pyspdk_sys.errors import DeviceNotFoundError

    before = vhost.list_controllers(tgt)
    with pytest.raises(DeviceNotFoundError, match="'Nope'"):
        vhost.create_blk_controller(tgt, sockets("x"), "Nope")
    with pytest.raises(DeviceNotFoundError, match="'Nope'"):
        vhost.create_scsi_controller(tgt, sockets("x"), {1: "Nope"})
    elsewhere = reactor_cores(1)[0]  # the initiator's core: the target has no reactor there
    with pytest.raises(ValueError, match=f"names core {elsewhere}, where the target runs no"):
        vhost.create_blk_controller(tgt, sockets("x"), malloc(), cpumask=INITIATOR_CORE)
    listened = peers("silent").sock.getsockname()
    with pytest.raises(FileExistsError, match="a program is listening"):
        vhost.create_blk_controller(tgt, listened, malloc())
    served = malloc()
    nqn = nqn_for("claimed")
    nvmf.serve(tgt, nqn, [served], port=free_port())
    try:
        with pytest.raises(OSError, match="claimed") as caught:
            vhost.create_blk_controller(tgt, sockets("x"), served)
        assert caught.value.errno == errno.EBUSY
    finally:
        nvmf.delete_subsystem(tgt, nqn)
    assert vhost.list_controllers(tgt) == before


@pytest.mark.timeout(240)
def test_vhost_scsi_controller_luns(tgt: Any, ini: Any, malloc: Any, sockets: Any) -> None:
    """create_scsi_controller with LUNs, add_scsi_lun and remove_scsi_lun, seen from
    list_controllers and by an initiator attached with dev_type="scsi" (hot-add
    and hot-remove)."""
    from pyspdk_sys import vhost
    from pyspdk_sys.errors import DeviceNotFoundError

    a, b, c = malloc(8 * MiB), malloc(4 * MiB), malloc(2 * MiB)
    path = sockets("luns")
    controller = vhost.create_scsi_controller(tgt, path, {3: b, 0: a})
    assert isinstance(controller, vhost.Controller)
    assert (controller.socket, controller.kind, controller.bdevs) == (path, "scsi", (a, b))
    name = unique("Scsi")
    assert vhost.attach(ini, name, path, dev_type="scsi", queues=2) == [f"{name}t0", f"{name}t3"]
    sizes = {e["name"]: e["num_blocks"] * e["block_size"] for e in ini.rpc("bdev_get_bdevs")}
    assert sizes[f"{name}t0"] == 8 * MiB and sizes[f"{name}t3"] == 4 * MiB
    assert name in initiator_state(ini)[1]

    def initiator_bdevs() -> set[str]:
        return {e["name"] for e in ini.rpc("bdev_get_bdevs") if e["name"].startswith(name)}

    def wait_for(expected: set[str]) -> None:
        deadline = time.monotonic() + 10
        while initiator_bdevs() != expected and time.monotonic() < deadline:
            time.sleep(0.1)
        assert initiator_bdevs() == expected

    vhost.add_scsi_lun(tgt, path, c, target_num=5)
    assert vhost._find(tgt, path).bdevs == (a, b, c)
    wait_for({f"{name}t0", f"{name}t3", f"{name}t5"})
    vhost.remove_scsi_lun(tgt, path, target_num=0)
    assert vhost._find(tgt, path).bdevs == (b, c)
    wait_for({f"{name}t3", f"{name}t5"})

    with pytest.raises(FileExistsError, match=r"SCSI target 3 .* has a LUN"):
        vhost.add_scsi_lun(tgt, path, a, target_num=3)
    with pytest.raises(LookupError, match=r"SCSI target 0 .* has no LUN"):
        vhost.remove_scsi_lun(tgt, path, target_num=0)
    with pytest.raises(DeviceNotFoundError, match="'Nope'"):
        vhost.add_scsi_lun(tgt, path, "Nope", target_num=1)
    with pytest.raises(LookupError, match="no vhost controller"):
        vhost.add_scsi_lun(tgt, sockets("none"), a, target_num=1)
    blk = sockets("blk-not-scsi")
    vhost.create_blk_controller(tgt, blk, a)
    with pytest.raises(ValueError, match="vhost-blk, not vhost-scsi"):
        vhost.add_scsi_lun(tgt, blk, c, target_num=1)
    with pytest.raises(ValueError, match="vhost-blk, not vhost-scsi"):
        vhost.remove_scsi_lun(tgt, blk, target_num=0)
    assert vhost._find(tgt, path).bdevs == (b, c)

    vhost.detach(ini, name)
    assert initiator_bdevs() == set()
    vhost.delete_controller(tgt, path)
    vhost.delete_controller(tgt, blk)


# ------------------------------------------------------------ nvmf: ports and peers


@pytest.mark.parametrize("address", ["127.0.0.1", "::1"])
def test_nvmf_serve_on_a_port_another_program_holds(tgt: Any, malloc: Any, address: str) -> None:
    """Issue: SPDK answered "Invalid parameters". Now: the address and port, in use
    by another program; and no subsystem is left behind."""
    from pyspdk_sys import nvmf

    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family) as holder:
        holder.bind((address, 0))
        holder.listen()
        port = holder.getsockname()[1]
        nqn = nqn_for("held")
        with pytest.raises(OSError, match="in use by another program") as caught:
            nvmf.serve(tgt, nqn, [malloc()], address=address, port=port)
    print(f"\n{caught.value}")
    assert caught.value.errno == errno.EADDRINUSE
    assert f"address {address} port {port}" in str(caught.value)
    assert nqn not in [s.nqn for s in nvmf.list_subsystems(tgt)]


def test_nvmf_attach_to_a_closed_port(ini: Any) -> None:
    """Issue: "Input/output error", naming neither address nor port."""
    from pyspdk_sys import nvmf

    port = free_port()
    before = ini.rpc("bdev_nvme_get_controllers")
    started = time.monotonic()
    with pytest.raises(ConnectionRefusedError) as caught:
        nvmf.attach(ini, unique("Closed"), "127.0.0.1", port, nqn_for("closed"))
    elapsed = time.monotonic() - started
    print(f"\n{caught.value} ({elapsed:.2f} s)")
    assert f"nothing listens on 127.0.0.1:{port} (connection refused)" in str(caught.value)
    assert elapsed < 5
    assert ini.rpc("bdev_nvme_get_controllers") == before


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", ["silent", "garbage", "close"])
def test_nvmf_attach_to_a_peer_that_is_not_nvme_tcp(ini: Any, peers: Any, mode: str) -> None:
    """SPDK gives up on its own (at once, or after its 10 s ICResp timeout) with
    "Input/output error"; the error now says the peer does not speak NVMe/TCP."""
    from pyspdk_sys import nvmf

    peer = peers(mode, unix=False)
    started = time.monotonic()
    with pytest.raises(OSError, match="does not speak NVMe/TCP") as caught:
        nvmf.attach(ini, unique("Fake"), "127.0.0.1", peer.port, nqn_for("fake"))
    elapsed = time.monotonic() - started
    print(f"\n{mode}: {caught.value} ({elapsed:.2f} s)")
    assert f"127.0.0.1:{peer.port}" in str(caught.value)
    assert elapsed < 10 + nvmf.PROBE_SECONDS + 5
    alive(ini)


# ------------------------------------------------------------ nvmf: hosts, namespaces, serials


def test_nvmf_hosts(tgt: Any, ini: Any, malloc: Any) -> None:
    """serve(hosts=...) and allow_host: who may connect. Issue: a host named twice
    gave "Internal error" (spdk_nvmf_subsystem_add_host_ext: -EINVAL for a host
    already there); refused up front now."""
    from pyspdk_sys import nvmf

    nqn, port = nqn_for("hosts"), free_port()
    bdev = malloc()
    with pytest.raises(ValueError, match="twice"):
        nvmf.serve(tgt, nqn, [bdev], port=port, hosts=[HOST1, HOST1])
    assert nqn not in [s.nqn for s in nvmf.list_subsystems(tgt)]
    subsystem = nvmf.serve(tgt, nqn, [bdev], port=port, hosts=[HOST1])
    assert isinstance(subsystem, nvmf.Subsystem)
    assert (subsystem.allow_any_host, subsystem.hosts) == (False, (HOST1,))
    with pytest.raises(FileExistsError, match="already admits"):
        nvmf.allow_host(tgt, nqn, HOST1)
    with pytest.raises(LookupError, match="no NVMe-oF subsystem"):
        nvmf.allow_host(tgt, nqn_for("missing"), HOST1)

    refused = unique("Refused")
    with pytest.raises(ConnectionError, match="does not admit that host") as caught:
        nvmf.attach(ini, refused, "127.0.0.1", port, nqn, hostnqn=HOST2)
    assert f"127.0.0.1:{port}" in str(caught.value) and HOST2 in str(caught.value)
    nvmf.allow_host(tgt, nqn, HOST2)
    assert nvmf._subsystem(tgt, nqn).hosts == (HOST2, HOST1)
    name = unique("Admitted")
    assert nvmf.attach(ini, name, "127.0.0.1", port, nqn, hostnqn=HOST2) == [f"{name}n1"]
    nvmf.detach(ini, name)
    nvmf.delete_subsystem(tgt, nqn)


def test_nvmf_attach_to_a_namespace_already_held(tgt: Any, ini: Any, malloc: Any) -> None:
    """Issue: a second controller to a namespace the initiator already holds (here
    through a second listener) returned [] without a word: SPDK cannot register a
    second bdev with the namespace's UUID. Now FileExistsError naming the holder,
    and the second controller is not left attached."""
    from pyspdk_sys import nvmf

    nqn, port, port2 = nqn_for("held"), free_port(), free_port()
    nvmf.serve(tgt, nqn, [malloc()], port=port)
    nvmf.add_listener(tgt, nqn, "127.0.0.1", port2)
    first = unique("First")
    assert nvmf.attach(ini, first, "127.0.0.1", port, nqn) == [f"{first}n1"]
    second = unique("Second")
    with pytest.raises(FileExistsError, match=f"already a bdev here: '{first}n1'"):
        nvmf.attach(ini, second, "127.0.0.1", port2, nqn)
    with pytest.raises(FileExistsError, match=f"'{first}' is already connected"):
        nvmf.attach(ini, second, "127.0.0.1", port, nqn)  # the same path again
    with pytest.raises(FileExistsError, match=f"named '{first}' already exists"):
        nvmf.attach(ini, first, "127.0.0.1", port2, nqn)
    names = [c["name"] for c in ini.rpc("bdev_nvme_get_controllers")]
    assert first in names and second not in names
    nvmf.detach(ini, first)
    nvmf.delete_subsystem(tgt, nqn)


def test_nvmf_default_serials_differ(tgt: Any, ini: Any, malloc: Any) -> None:
    """Issue: every serve() gave its subsystem the same serial number."""
    from pyspdk_sys import nvmf

    port = free_port()
    nqns = [nqn_for("serial") for _ in range(3)]
    serials = [nvmf.serve(tgt, nqn, [malloc()], port=port).serial for nqn in nqns]
    explicit = nvmf.serve(tgt, nqn_for("serial"), [malloc()], port=port, serial="MY SERIAL 1")
    assert explicit.serial == "MY SERIAL 1"
    assert serials == [nvmf.default_serial(nqn) for nqn in nqns]
    assert len(set(serials)) == 3
    assert all(len(s) <= 20 and s.isascii() and s.isprintable() for s in serials)
    name = unique("Serial")
    (bdev,) = nvmf.attach(ini, name, "127.0.0.1", port, nqns[1])
    (entry,) = ini.rpc("bdev_get_bdevs", {"name": bdev})
    assert entry["driver_specific"]["nvme"][0]["ctrlr_data"]["serial_number"] == serials[1]
    nvmf.detach(ini, name)
    for nqn in [*nqns, explicit.nqn]:
        nvmf.delete_subsystem(tgt, nqn)


@pytest.mark.timeout(240)
def test_nvmf_target_helpers_on_their_own(spdk: Any, ini: Any) -> None:
    """create_transport, create_subsystem, add_namespace, add_listener,
    add_discovery_listener, list_subsystems, delete_subsystem: what each promises,
    on a fresh target."""
    from pyspdk_sys import nvmf
    from pyspdk_sys.bdev.manage import create_malloc
    from pyspdk_sys.errors import DeviceNotFoundError

    with new_process(spdk_tool("spdk_tgt"), cpu_mask=TARGET_CORE, name="hostile-own") as t:
        for i in range(4):
            create_malloc(t, f"Own{i}", (8 + i) * MiB, 512)
        assert nvmf.create_transport(t, max_queue_depth=64, in_capsule_data_size=8192)
        (transport,) = t.rpc("nvmf_get_transports")
        assert (transport["max_queue_depth"], transport["in_capsule_data_size"]) == (64, 8192)
        assert nvmf.create_transport(t) is False
        assert nvmf.create_transport(t, max_queue_depth=64) is False
        with pytest.raises(FileExistsError):
            nvmf.create_transport(t, exist_ok=False)
        with pytest.raises(ValueError, match="max_queue_depth=64"):
            nvmf.create_transport(t, max_queue_depth=32)

        nqn = nqn_for("own")
        nvmf.create_subsystem(t, nqn, model="Hostile Model", max_namespaces=2)
        with pytest.raises(FileExistsError, match="already has a subsystem"):
            nvmf.create_subsystem(t, nqn)
        assert nvmf.add_namespace(t, nqn, "Own0") == 1
        with pytest.raises(ValueError, match="nsid 3 is past the 2 namespaces"):
            nvmf.add_namespace(t, nqn, "Own1", nsid=3)
        with pytest.raises(FileExistsError, match=r"namespace 1 .* is taken"):
            nvmf.add_namespace(t, nqn, "Own1", nsid=1)
        assert nvmf.add_namespace(t, nqn, "Own1", nsid=2) == 2
        with pytest.raises(ValueError, match="maximum of 2 namespaces"):
            nvmf.add_namespace(t, nqn, "Own2")
        with pytest.raises(FileExistsError, match="'Own0' is already namespace 1"):
            nvmf.add_namespace(t, nqn, "Own0")
        with pytest.raises(DeviceNotFoundError, match="'Nope'"):
            nvmf.add_namespace(t, nqn, "Nope")
        with pytest.raises(LookupError, match="no NVMe-oF subsystem"):
            nvmf.add_namespace(t, nqn_for("missing"), "Own2")

        port, discovery_port = free_port(), free_port()
        nvmf.add_listener(t, nqn, "127.0.0.1", port)
        with pytest.raises(FileExistsError, match=f"already listens on 127.0.0.1:{port}"):
            nvmf.add_listener(t, nqn, "127.0.0.1", port)
        with pytest.raises(OSError, match="not an address of this machine") as caught:
            nvmf.add_listener(t, nqn, "192.0.2.1", port)  # TEST-NET-1: nobody's
        assert caught.value.errno == errno.EADDRNOTAVAIL
        with pytest.raises(LookupError, match="no NVMe-oF subsystem"):
            nvmf.add_listener(t, nqn_for("missing"), "127.0.0.1", port)
        nvmf.add_discovery_listener(t, "127.0.0.1", discovery_port)

        subsystems = {s.nqn: s for s in nvmf.list_subsystems(t)}
        assert set(subsystems) == {nvmf.DISCOVERY_NQN, nqn}
        assert subsystems[nvmf.DISCOVERY_NQN].listeners == (("TCP", "127.0.0.1", discovery_port),)
        own = subsystems[nqn]
        assert own.namespaces == {1: "Own0", 2: "Own1"}
        assert own.listeners == (("TCP", "127.0.0.1", port),)
        assert (own.serial, own.model, own.max_namespaces) == (
            nvmf.default_serial(nqn),
            "Hostile Model",
            2,
        )
        assert (own.allow_any_host, own.hosts) == (True, ())

        # The discovery listener answers: SPDK's discovery finds the subsystem.
        name = unique("Disc")
        ini.rpc(
            "bdev_nvme_start_discovery",
            {
                "name": name,
                "trtype": "tcp",
                "adrfam": "ipv4",
                "traddr": "127.0.0.1",
                "trsvcid": str(discovery_port),
                "wait_for_attach": True,
            },
        )
        try:
            found = sorted(
                e["num_blocks"] * e["block_size"]
                for e in ini.rpc("bdev_get_bdevs")
                if e["name"].startswith(name)
            )
            assert found == [8 * MiB, 9 * MiB]
        finally:
            ini.rpc("bdev_nvme_stop_discovery", {"name": name})

        nvmf.delete_subsystem(t, nqn)
        assert [s.nqn for s in nvmf.list_subsystems(t)] == [nvmf.DISCOVERY_NQN]
        with pytest.raises(LookupError, match="no NVMe-oF subsystem"):
            nvmf.delete_subsystem(t, nqn)


# ------------------------------------------------------------ after the target stopped


@pytest.mark.timeout(120)
def test_helpers_after_the_target_stopped(spdk: Any, sockets: Any, peers: Any) -> None:
    """An SpdkProcess that stopped: every helper says so at once (ProcessExitedError),
    none waits or touches a peer."""
    from pyspdk_sys import nvmf, vhost
    from pyspdk_sys.errors import RuntimeStateError

    proc = new_process(spdk_tool("spdk_tgt"), cpu_mask=INITIATOR_CORE, name="hostile-gone")
    proc.start()
    proc.stop()
    peer = peers("vhost")
    # The baseline: a refused call, or the scheduler's lateness if that is longer.
    refused = max(worst_time(lambda: _refused(proc)), wake_lateness())
    calls = [
        lambda: vhost.list_controllers(proc),
        lambda: vhost.create_blk_controller(proc, sockets("gone"), "M0"),
        lambda: vhost.create_scsi_controller(proc, sockets("gone")),
        lambda: vhost.delete_controller(proc, sockets("gone")),
        lambda: vhost.attach(proc, "V0", peer.sock.getsockname()),
        lambda: vhost.detach(proc, "V0"),
        lambda: nvmf.create_transport(proc),
        lambda: nvmf.serve(proc, nqn_for("gone"), ["M0"], port=free_port()),
        lambda: nvmf.list_subsystems(proc),
        lambda: nvmf.delete_subsystem(proc, nqn_for("gone")),
        lambda: nvmf.attach(proc, "N0", "127.0.0.1", free_port(), nqn_for("gone")),
        lambda: nvmf.detach(proc, "N0"),
    ]
    for call in calls:
        started = time.monotonic()
        with pytest.raises(RuntimeStateError):
            call()
        assert time.monotonic() - started < time_bound(0, refused), refused
    assert peer.served == 0


@pytest.mark.timeout(120)
def test_helpers_after_the_runtime_stopped(spdk: Any) -> None:
    """The same for a Runtime (in a fresh interpreter: SPDK starts once a process)."""
    code = """
from pyspdk_sys import nvmf, vhost
from pyspdk_sys.errors import RuntimeStateError
from pyspdk_sys.runtime import Runtime
from cores import reactor_mask

with Runtime(cpu_mask=reactor_mask(), mem_size_mb=256) as rt:
    pass
for call in (
    lambda: vhost.list_controllers(rt),
    lambda: vhost.create_scsi_controller(rt, "/tmp/pyspdk-stopped-runtime.sock"),
    lambda: vhost.detach(rt, "V0"),
    lambda: nvmf.list_subsystems(rt),
    lambda: nvmf.attach(rt, "N0", "127.0.0.1", 4420, "nqn.2016-06.io.spdk:x"),
):
    try:
        call()
    except RuntimeStateError as exc:
        print("refused:", exc)
    except Exception as exc:
        print("other:", type(exc).__name__, exc)
"""
    result = run_python(code, timeout=90)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    print("\n" + "\n".join(lines))
    assert [line.split(":")[0] for line in lines] == ["refused"] * 5
