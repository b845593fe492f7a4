"""The QEMU guest harness (tests/guest_vm.py) and its preparation script, without booting."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
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

    def fake_once(script: str, timeout: float, *args: object) -> guest_vm.Boot:
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

    def fake_once(script: str, timeout: float, *args: object) -> guest_vm.Boot:
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


def test_nvme_devices_become_qemu_arguments(tmp_path: Path) -> None:
    plain = guest_vm.Nvme("nvme0", 0x10, "pyspdk0001")
    shared = guest_vm.Nvme("nvme1", 0x11, "pyspdk0002", (512, 4096), mib=8, subsystem="nqn.x:s")
    assert (plain.address, shared.address) == ("0000:00:10.0", "0000:00:11.0")
    args = plain.qemu_args(tmp_path) + shared.qemu_args(tmp_path)
    devices = [args[i + 1] for i, a in enumerate(args) if a == "-device"]
    assert devices == [
        "nvme,id=nvme0,serial=pyspdk0001,addr=10.0",
        "nvme-ns,bus=nvme0,drive=nvme0n1,nsid=1,logical_block_size=512,physical_block_size=512",
        "nvme-subsys,id=nvme1-subsys,nqn=nqn.x:s",
        "nvme,id=nvme1,serial=pyspdk0002,addr=11.0,subsys=nvme1-subsys",
        "nvme-ns,bus=nvme1,drive=nvme1n1,nsid=1,logical_block_size=512,physical_block_size=512",
        "nvme-ns,bus=nvme1,drive=nvme1n2,nsid=2,logical_block_size=4096,physical_block_size=4096",
    ]
    drives = [args[i + 1] for i, a in enumerate(args) if a == "-drive"]
    assert len(drives) == 3 and all(d.endswith(",format=raw,discard=unmap") for d in drives)
    images = sorted(p.name for p in tmp_path.iterdir())
    assert images == ["nvme0n1.img", "nvme1n1.img", "nvme1n2.img"]
    assert (tmp_path / "nvme1n2.img").stat().st_size == 8 << 20
    assert (tmp_path / "nvme1n2.img").stat().st_blocks == 0  # sparse


def test_qmp_broker_answers_the_guests_requests(tmp_path: Path) -> None:
    """A request file becomes a QMP command on QEMU's socket (a stand-in here), and
    its answer, with the events QEMU sent before it, becomes the reply file."""
    path = tmp_path / "qmp.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    seen: list[dict[str, object]] = []

    def qemu() -> None:
        conn, _ = server.accept()
        with conn, conn.makefile("rwb") as stream:
            stream.write(b'{"QMP": {"version": {}}}\n')
            stream.flush()
            for line in stream:
                command = json.loads(line)
                seen.append(command)
                if command["execute"] == "device_del":
                    stream.write(b'{"event": "DEVICE_DELETED", "data": {"device": "nvme2"}}\n')
                    stream.write(b'{"return": {}}\n')
                elif command["execute"] == "nonsense":
                    stream.write(b'{"error": {"class": "CommandNotFound", "desc": "no"}}\n')
                else:
                    stream.write(b'{"return": {}}\n')
                stream.flush()

    threading.Thread(target=qemu, daemon=True).start()
    requests = tmp_path / "qmp"
    requests.mkdir()
    broker = guest_vm.QmpBroker(path, requests)
    broker.start()
    try:
        (requests / "1.request").write_text(
            '{"execute": "device_del", "arguments": {"id": "nvme2"}}'
        )
        reply = requests / "1.reply"
        for _ in range(500):
            if reply.exists():
                break
            threading.Event().wait(0.01)
        answer = json.loads(reply.read_text())
        assert answer["return"] == {}
        assert answer["events"] == [{"event": "DEVICE_DELETED", "data": {"device": "nvme2"}}]
        (requests / "2.request").write_text('{"execute": "nonsense"}')
        for _ in range(500):
            if (requests / "2.reply").exists():
                break
            threading.Event().wait(0.01)
        assert json.loads((requests / "2.reply").read_text())["error"]["class"] == "CommandNotFound"
    finally:
        broker.done.set()
        broker.join(5)
        server.close()
    assert [c["execute"] for c in seen] == ["qmp_capabilities", "device_del", "nonsense"]
    assert not list(requests.glob("*.request"))
