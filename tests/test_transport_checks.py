"""vhost and nvmf helpers refuse bad arguments before any RPC leaves Python, and the
probes they run on peers (vhost-user, NVMe/TCP) against fake peers, from Python alone."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from timing import time_bound, wake_lateness

NQN = "nqn.2016-06.io.spdk:x"
HOST = "nqn.2016-06.io.spdk:host1"


class Recorder:
    """A Target that records every call and answers none."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def rpc(self, method: str, params: Any = None, timeout: float = 60.0) -> Any:
        self.calls.append(method)
        raise AssertionError(f"{method} reached the target")


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"ctrlr_loss_timeout_sec": -2}, ValueError, "ctrlr_loss_timeout_sec"),
        ({"ctrlr_loss_timeout_sec": 0, "reconnect_delay_sec": 1}, ValueError, "must be 0"),
        ({"ctrlr_loss_timeout_sec": 5, "reconnect_delay_sec": 0}, ValueError, "at least 1"),
        ({"ctrlr_loss_timeout_sec": 5, "reconnect_delay_sec": 6}, ValueError, "not exceed"),
        (
            {"ctrlr_loss_timeout_sec": 5, "reconnect_delay_sec": 2, "fast_io_fail_timeout_sec": 1},
            ValueError,
            "not be less",
        ),
        (
            {"ctrlr_loss_timeout_sec": 5, "reconnect_delay_sec": 1, "fast_io_fail_timeout_sec": 6},
            ValueError,
            "not exceed",
        ),
        ({"reconnect_delay_sec": True}, TypeError, "reconnect_delay_sec"),
        ({"hostnqn": "host"}, ValueError, "hostnqn"),
    ],
)
def test_nvmf_attach_checks_reconnect_options(
    spdk: Any, kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    from pyspdk_sys import nvmf

    target = Recorder()
    with pytest.raises(error, match=match):
        nvmf.attach(target, "N0", "127.0.0.1", 4420, "nqn.2016-06.io.spdk:x", **kwargs)
    assert target.calls == []


def test_nvmf_checks_names_addresses_ports(spdk: Any) -> None:
    from pyspdk_sys import nvmf

    target = Recorder()
    with pytest.raises(ValueError, match="nqn"):
        nvmf.create_subsystem(target, "not-an-nqn")
    with pytest.raises(ValueError, match="discovery"):
        nvmf.create_subsystem(target, nvmf.DISCOVERY_NQN)
    with pytest.raises(ValueError, match="serial"):
        nvmf.create_subsystem(target, "nqn.2016-06.io.spdk:x", serial="s" * 21)
    with pytest.raises(ValueError, match="address"):
        nvmf.add_listener(target, "nqn.2016-06.io.spdk:x", "localhost", 4420)
    with pytest.raises(ValueError, match="port"):
        nvmf.add_listener(target, "nqn.2016-06.io.spdk:x", "127.0.0.1", 0)
    with pytest.raises(TypeError, match="bdevs"):
        nvmf.serve(target, "nqn.2016-06.io.spdk:x", "Malloc0")
    with pytest.raises(TypeError, match="Runtime or an SpdkProcess"):
        nvmf.detach(object(), "N0")  # type: ignore[arg-type]
    assert target.calls == []


def test_vhost_checks_paths_and_options(spdk: Any, tmp_path: Path) -> None:
    from pyspdk_sys import vhost

    target = Recorder()
    with pytest.raises(ValueError, match="at most 107"):
        vhost.create_blk_controller(target, "/" + "d" * 120, "Malloc0")
    with pytest.raises(ValueError, match="directory"):  # the shared check_socket_path
        vhost.create_blk_controller(target, tmp_path / "missing" / "s.sock", "Malloc0")
    (tmp_path / "file").write_text("")
    with pytest.raises(FileExistsError, match="not a socket"):
        vhost.create_blk_controller(target, tmp_path / "file", "Malloc0")
    with pytest.raises(ValueError, match="dev_type"):
        vhost.attach(target, "V0", tmp_path / "s.sock", dev_type="net")
    with pytest.raises(ValueError, match="queues"):
        vhost.attach(target, "V0", tmp_path / "s.sock", queues=0)
    with pytest.raises(FileNotFoundError, match="no vhost socket"):
        vhost.attach(target, "V0", tmp_path / "s.sock")
    with pytest.raises(ValueError, match="target number"):
        vhost.create_scsi_controller(target, tmp_path / "s.sock", {8: "Malloc0"})
    assert target.calls == []


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda v, t, p: v.attach(t, "V0", p, dev_type=1), TypeError, "dev_type must be a str"),
        (lambda v, t, p: v.attach(t, "V0", p, queues=257), ValueError, "queues"),
        (lambda v, t, p: v.attach(t, "V0", p, queues=2.0), TypeError, "queues"),
        (lambda v, t, p: v.attach(t, "V0", p, queue_size=100), ValueError, "power of two"),
        (lambda v, t, p: v.attach(t, "V0", p, queue_size=4), ValueError, "queue_size"),
        (lambda v, t, p: v.attach(t, "V0", p, queue_size=2048), ValueError, "queue_size"),
        (lambda v, t, p: v.attach(t, "V0", p, probe_timeout=0), ValueError, "probe_timeout"),
        (lambda v, t, p: v.attach(t, "V0", p, probe_timeout="1"), TypeError, "probe_timeout"),
        (lambda v, t, p: v.attach(t, 7, p), TypeError, "name"),
        (lambda v, t, p: v.attach(t, "", p), ValueError, "name"),
        (lambda v, t, p: v.attach(t, "V0", 3), TypeError, "socket_path"),
        (lambda v, t, p: v.create_blk_controller(t, p, 5), TypeError, "bdev"),
        (lambda v, t, p: v.create_blk_controller(t, p, "M", cpumask="3"), ValueError, "cpumask"),
        (lambda v, t, p: v.create_scsi_controller(t, p, ["M"]), TypeError, "luns must map"),
        (lambda v, t, p: v.create_scsi_controller(t, p, {True: "M"}), TypeError, "target number"),
        (lambda v, t, p: v.create_scsi_controller(t, p, {0: 5}), TypeError, r"luns\[0\]"),
        (lambda v, t, p: v.add_scsi_lun(t, p, "M", target_num=8), ValueError, "target_num"),
        (lambda v, t, p: v.remove_scsi_lun(t, p, target_num=-1), ValueError, "target_num"),
        (lambda v, t, p: v.detach(t, None), TypeError, "name"),
        (lambda v, t, p: v.probe(p, timeout=float("nan")), ValueError, "timeout"),
    ],
)
def test_vhost_refuses_wrong_types_and_ranges(
    spdk: Any, tmp_path: Path, call: Any, error: type[Exception], match: str
) -> None:
    """Each names the parameter, before any RPC and before touching the socket."""
    from pyspdk_sys import vhost

    target = Recorder()
    with pytest.raises(error, match=match):
        call(vhost, target, tmp_path / "s.sock")
    assert target.calls == []


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda n, t: n.serve(t, NQN, ["M"], hosts=HOST), TypeError, "hosts must be an iterable"),
        (lambda n, t: n.serve(t, NQN, ["M"], hosts=[HOST, HOST]), ValueError, "twice"),
        (lambda n, t: n.serve(t, NQN, ["M"], hosts=["host"]), ValueError, "host NQN"),
        (lambda n, t: n.serve(t, NQN, ["M", "M"]), ValueError, "names a bdev twice"),
        (lambda n, t: n.serve(t, NQN, ["M", 3]), TypeError, "bdev"),
        (lambda n, t: n.serve(t, NQN, ["M"], serial=12), TypeError, "serial"),
        (lambda n, t: n.serve(t, NQN, ["M"], serial="é"), ValueError, "serial"),
        (lambda n, t: n.serve(t, NQN, ["M"], port=65536), ValueError, "port"),
        (lambda n, t: n.serve(t, NQN, ["M"], port="4420"), TypeError, "port"),
        (lambda n, t: n.serve(t, NQN, ["M"], address=None), TypeError, "address"),
        (lambda n, t: n.serve(t, NQN, ["M"], discovery=1), TypeError, "discovery"),
        (lambda n, t: n.serve(t, n.DISCOVERY_NQN, ["M"]), ValueError, "discovery NQN"),
        (lambda n, t: n.create_subsystem(t, NQN, hosts=[HOST, HOST]), ValueError, "twice"),
        (lambda n, t: n.create_subsystem(t, NQN, model="m" * 41), ValueError, "model"),
        (lambda n, t: n.create_subsystem(t, NQN, max_namespaces=0), ValueError, "max_names"),
        (lambda n, t: n.create_transport(t, bogus=1), ValueError, "unknown TCP transport"),
        (lambda n, t: n.create_transport(t, exist_ok=None), TypeError, "exist_ok"),
        (lambda n, t: n.allow_host(t, NQN, 5), TypeError, "host"),
        (lambda n, t: n.add_namespace(t, NQN, "M", nsid=0), ValueError, "nsid"),
        (lambda n, t: n.add_namespace(t, NQN, "M", nsid=0xFFFFFFFF), ValueError, "nsid"),
        (lambda n, t: n.add_namespace(t, NQN, b"M"), TypeError, "bdev"),
        (lambda n, t: n.add_discovery_listener(t, "::g", 4420), ValueError, "address"),
        (lambda n, t: n.delete_subsystem(t, n.DISCOVERY_NQN), ValueError, "discovery"),
        (lambda n, t: n.attach(t, "N0", "127.0.0.1", 0, NQN), ValueError, "port"),
        (lambda n, t: n.attach(t, "N0", "127.0.0.1", 4420, "x"), ValueError, "nqn"),
        (lambda n, t: n.detach(t, 0), TypeError, "name"),
        (lambda n, t: n.default_serial("x"), ValueError, "nqn"),
    ],
)
def test_nvmf_refuses_wrong_types_and_ranges(
    spdk: Any, call: Any, error: type[Exception], match: str
) -> None:
    from pyspdk_sys import nvmf

    target = Recorder()
    with pytest.raises(error, match=match):
        call(nvmf, target)
    assert target.calls == []


def test_nvmf_default_serials_are_distinct_and_valid(spdk: Any) -> None:
    """Issue: every serve() gave the same serial; each NQN now gets its own."""
    from pyspdk_sys import nvmf

    nqns = [f"nqn.2016-06.io.spdk:disk{i}" for i in range(200)] + [NQN, HOST]
    serials = [nvmf.default_serial(nqn) for nqn in nqns]
    assert len(set(serials)) == len(serials)
    for serial in serials:
        assert 1 <= len(serial) <= 20 and serial.isascii() and serial.isprintable()
    assert nvmf.default_serial(NQN) == nvmf.default_serial(NQN)  # stable across runs


# ------------------------------------------------------------ peers, from Python alone

_HEADER = struct.Struct("<III")
BLK_FEATURES = 0x15C007646  # what SPDK's vhost-blk target offers (v26.01)
BLK_PROTOCOL = 0x11EBF


class FakePeer:
    """A listener that plays a vhost-user target, an NVMe/TCP target, or neither.

    It serves one connection at a time, as some vhost-user targets do, and
    counts the connections it served to their end."""

    def __init__(self, mode: str, path: str | None = None) -> None:
        self.mode = mode
        if path is not None:
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.bind(path)
        else:
            self.sock = socket.socket()
            self.sock.bind(("127.0.0.1", 0))
            self.port = self.sock.getsockname()[1]
        self.sock.listen(4)
        self.served = 0
        self.answered = 0
        self._stop = threading.Event()
        self._held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with contextlib.suppress(OSError):
                self._serve(conn)
            self.served += 1

    def _serve(self, conn: socket.socket) -> None:
        mode = self.mode
        if mode == "silent":  # holds the connection, never answers
            self._held.append(conn)
            self._stop.wait()
            return
        if mode == "close":
            conn.close()
            return
        if mode == "garbage":
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n" * 4)
            self._held.append(conn)
            return
        if mode == "icresp":
            conn.recv(128)
            conn.sendall(struct.pack("<BBBBI", 1, 0, 128, 0, 128).ljust(128, b"\0"))
            self.answered += 1
            conn.close()
            return
        with conn:
            while True:
                header = conn.recv(_HEADER.size, socket.MSG_WAITALL)
                if len(header) < _HEADER.size:
                    return
                request, _, size = _HEADER.unpack(header)
                if size:
                    conn.recv(size, socket.MSG_WAITALL)
                if request == 15 and mode == "half":  # answers GET_FEATURES only
                    self._stop.wait()
                    return
                if request not in (1, 15):
                    if mode == "stall-later" and request in (11, 17, 24):
                        self._held.append(conn)  # answers the probe's questions, then no more
                        self._stop.wait()
                    continue  # a request that wants no reply
                flags = 0x1 if mode == "no-reply-flag" else 0x5
                value = BLK_FEATURES if request == 1 else BLK_PROTOCOL
                length = 4 if mode == "short" else 8
                self.answered += 1
                conn.sendall(_HEADER.pack(request, flags, length) + struct.pack("<Q", value))

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes accept(); close() alone does not
        self.sock.close()
        for conn in self._held:
            conn.close()
        self.thread.join(10)


@pytest.fixture
def peers(short_tmp: Path) -> Iterator[Callable[..., FakePeer]]:
    made: list[FakePeer] = []

    def make(mode: str, unix: bool = True) -> FakePeer:
        path = str(short_tmp / f"peer-{len(made)}-{os.getpid()}.sock") if unix else None
        if path is not None and os.path.exists(path):
            os.unlink(path)
        made.append(FakePeer(mode, path))
        return made[-1]

    yield make
    for peer in made:
        peer.close()


@pytest.mark.parametrize(
    "mode,error,errno_,match",
    [
        ("silent", TimeoutError, errno.ETIMEDOUT, "did not answer VHOST_USER_GET_FEATURES"),
        ("half", TimeoutError, errno.ETIMEDOUT, "did not answer VHOST_USER_GET_PROTOCOL"),
        ("garbage", OSError, errno.EPROTO, "does not speak vhost-user"),
        ("no-reply-flag", OSError, errno.EPROTO, "flags 0x1"),
        ("close", ConnectionResetError, errno.ECONNRESET, "closed the connection"),
    ],
)
def test_vhost_probe_refuses_peers_that_do_not_answer_as_vhost_user(
    spdk: Any, peers: Any, mode: str, error: type[Exception], errno_: int, match: str
) -> None:
    """What attach() asks before SPDK's thread may block on the peer: bounded,
    and naming the path."""
    from pyspdk_sys import vhost

    peer = peers(mode)
    path = peer.sock.getsockname()
    late = wake_lateness()  # the baseline: how late a timed wait ends here now
    started = time.monotonic()
    with pytest.raises(error, match=match) as caught:
        vhost.probe(path, timeout=1.0)
    assert time.monotonic() - started < time_bound(1.0, late), late
    assert caught.value.errno == errno_ and path in str(caught.value)


def test_vhost_probe_nobody_listening(spdk: Any, short_tmp: Path) -> None:
    from pyspdk_sys import vhost

    path = str(short_tmp / f"stale-{os.getpid()}.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()  # the file stays, nobody listens: what a killed target leaves
    try:
        with pytest.raises(ConnectionRefusedError, match="nothing listens") as caught:
            vhost.probe(path)
        assert path in str(caught.value)
    finally:
        os.unlink(path)


def test_vhost_probe_leaves_a_one_connection_target_serving(spdk: Any, peers: Any) -> None:
    """The probe hangs up, so a target that serves one connection at a time takes
    the initiator's connection next (SPDK's own target: test_targets_hostile.py)."""
    from pyspdk_sys import vhost

    peer = peers("vhost")
    path = peer.sock.getsockname()
    for _ in range(3):
        assert vhost.probe(path, timeout=2.0) == (BLK_FEATURES, BLK_PROTOCOL)
    with socket.socket(socket.AF_UNIX) as initiator:
        initiator.settimeout(2.0)
        initiator.connect(path)
        initiator.sendall(_HEADER.pack(1, 1, 0))
        reply = initiator.recv(20, socket.MSG_WAITALL)
    assert _HEADER.unpack(reply[:12]) == (1, 5, 8)
    assert peer.answered == 3 * 2 + 1


def test_vhost_hugepage_regions_read_as_virtio_user_reads_them(spdk: Any) -> None:
    """The maps of a --no-huge SPDK, of one with single-file segments, and of one
    without (seen on spdk_tgt v26.01)."""
    from pyspdk_sys import vhost

    regions = vhost._hugepage_regions
    no_huge = "200000c37000-200040c37000 rw-s 00000000 00:01 1063    /memfd:nohuge (deleted)\n"
    assert regions(no_huge) == []
    single = "".join(
        f"{0x200000200000 + i * 0x200000:x}-{0x200000400000 + i * 0x200000:x} rw-s "
        f"{i * 0x200000:08x} 00:28 177095    /dev/hugepages/spdk_pid7map_0\n"
        for i in range(512)
    )
    assert regions(single) == [("/dev/hugepages/spdk_pid7map_0", 0x200000200000, 0x200040200000)]
    legacy = "".join(
        f"{0x200000200000 + i * 0x200000:x}-{0x200000400000 + i * 0x200000:x} rw-s "
        f"00000000 00:28 {177000 + i}    /dev/hugepages/spdk_pid7map_{i} (deleted)\n"
        for i in range(512)
    )
    assert len(regions(legacy)) == 512
    libraries = "7f00-7f10 r--p 00000000 08:01 5  /usr/lib/libx.so\n7f10-7f20 ---p 0 0 0\n"
    assert regions(libraries) == []


@pytest.mark.parametrize(
    "mode,error,errno_,match",
    [
        ("silent", TimeoutError, errno.ETIMEDOUT, "did not answer an NVMe/TCP ICReq"),
        ("garbage", OSError, errno.EPROTO, "does not speak NVMe/TCP"),
        ("close", OSError, errno.EPROTO, "hung up"),
    ],
)
def test_nvmf_handshake_names_peers_that_are_not_nvme_tcp(
    spdk: Any, peers: Any, mode: str, error: type[Exception], errno_: int, match: str
) -> None:
    """What nvmf.attach() asks after SPDK's bare "Input/output error"."""
    from pyspdk_sys import nvmf

    peer = peers(mode, unix=False)
    late = wake_lateness()  # the baseline: how late a timed wait ends here now
    started = time.monotonic()
    with pytest.raises(error, match=match) as caught:
        nvmf._handshake("127.0.0.1", peer.port, 1.0)
    assert time.monotonic() - started < time_bound(1.0, late), late
    assert caught.value.errno == errno_ and f"127.0.0.1:{peer.port}" in str(caught.value)
    nvmf._handshake("127.0.0.1", peers("icresp", unix=False).port, 1.0)  # an ICResp: fine


def test_nvmf_handshake_nobody_listening(spdk: Any) -> None:
    from pyspdk_sys import nvmf

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: refused
        with pytest.raises(ConnectionRefusedError, match=f"nothing listens on 127.0.0.1:{port}"):
            nvmf._handshake("127.0.0.1", port, 1.0)


def test_runtime_without_enough_hugepages_says_so(spdk: Any) -> None:
    """Refused before DPDK starts, naming what is missing (a fresh process: SPDK
    would start only once here)."""
    from conftest import run_python

    code = """
from pyspdk_sys.errors import HugepagesError
from pyspdk_sys.runtime import Runtime
rt = Runtime(hugepages=True, mem_size_mb=1 << 22)
try:
    rt.start()
except HugepagesError as exc:
    print("refused:", exc)
"""
    result = run_python(code, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "refused: hugepages=True needs" in result.stdout
    assert "mem_size_mb=4194304" in result.stdout


def test_vhost_target_probe_tells_a_listener_gone(spdk: Any, tmp_path: Path) -> None:
    """The probe behind ENOTCONN watches the one socket that listened at attach time."""
    import socket

    from pyspdk_sys import vhost

    path = str(tmp_path / "t.sock")
    assert vhost._target_gone_probe(path) is None  # nothing listens: nothing to watch
    first = socket.socket(socket.AF_UNIX)
    first.bind(path)
    first.listen()
    probe = vhost._target_gone_probe(path)
    assert probe is not None and probe() is None
    first.close()
    reason = probe()
    assert reason is not None and path in reason and "stopped listening" in reason
    # A new target at the same path is a new socket: the old connection stays dead.
    os.unlink(path)
    second = socket.socket(socket.AF_UNIX)
    second.bind(path)
    second.listen()
    try:
        assert probe() is not None
        assert vhost._target_gone_probe(path)() is None  # type: ignore[misc]
    finally:
        second.close()
    # A target binds through its own socket dir: the same file, spelt another way.
    (tmp_path / "sub").mkdir()
    third = socket.socket(socket.AF_UNIX)
    third.bind(str(tmp_path / "sub" / ".." / "u.sock"))
    third.listen()
    try:
        probe = vhost._target_gone_probe(str(tmp_path / "u.sock"))
        assert probe is not None and probe() is None
    finally:
        third.close()
    assert probe() is not None
