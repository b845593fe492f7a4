"""vhost and nvmf helpers refuse bad arguments before any RPC leaves Python."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest


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
    with pytest.raises(FileNotFoundError, match="directory"):
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
