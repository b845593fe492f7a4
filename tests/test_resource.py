"""The one lifecycle (Resource), the one owner (IoOwner), and a device's admission gate.

Every class that owns SPDK state closes through Resource's template; every
holder of an I/O is an IoOwner released under the gate's hand-over rule;
the holders count themselves through the gate, never the device's fields.
"""

from __future__ import annotations

import ast
import threading
from pathlib import Path
from typing import Any

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "pyspdk_sys"


class FakeOwner:
    """An IoOwner whose SPDK side is a flag."""

    def __init__(self, over: bool) -> None:
        self.over = over
        self.released = 0

    def is_over(self) -> bool:
        return self.over

    def release(self) -> None:
        self.released += 1


def test_every_owner_of_spdk_state_is_a_resource(spdk: Any) -> None:
    from pyspdk_sys._completions import Completions, FutureReaper, LoopReapers
    from pyspdk_sys._resource import IoOwner, Resource
    from pyspdk_sys.bdev._requests import AsyncSlot, BlockingSlot, Job, Request
    from pyspdk_sys.bdev.device import BlockDevice, _Engine
    from pyspdk_sys.dma import DmaBuffer
    from pyspdk_sys.pybdev import PythonBdev
    from pyspdk_sys.rpc import LocalRpc

    for cls in (BlockDevice, DmaBuffer, PythonBdev, LocalRpc, FutureReaper, LoopReapers, _Engine):
        assert issubclass(cls, Resource), cls
    for cls in (Request, BlockingSlot, AsyncSlot, Job, Completions):
        assert issubclass(cls, IoOwner), cls


def test_no_module_registers_plain_hooks_for_its_own_objects() -> None:
    """Stop and teardown order is the Stage table's: no resource hides in plain hooks."""
    users = [
        path.relative_to(SRC).as_posix()
        for path in SRC.rglob("*.py")
        if path.name != "runtime.py"
        and ("add_stop_hook(" in path.read_text() or "add_teardown_hook(" in path.read_text())
    ]
    assert users == []


def test_request_holders_use_the_gate_not_the_devices_private_fields() -> None:
    tree = ast.parse((SRC / "bdev" / "_requests.py").read_text())
    reaching = [
        f"line {node.lineno}: device.{node.attr}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr.startswith("_")
        and isinstance(node.value, (ast.Name, ast.Attribute))
        and (
            getattr(node.value, "id", None) == "device"
            or getattr(node.value, "attr", "") == "device"
        )
    ]
    assert reaching == []


def test_the_hand_over_rule(spdk: Any) -> None:
    from pyspdk_sys.bdev._gate import Gate

    gate = Gate("Dev", object())
    # Nobody else can take it: released here when SPDK is done, else the gate's.
    done, held = FakeOwner(True), FakeOwner(False)
    assert gate.hand_over(done) is True and done.released == 1
    assert gate.hand_over(held) is False and held.released == 0
    assert gate.abandoned == [held]
    gate.sweep()
    assert held.released == 0 and gate.abandoned == [held]  # SPDK still holds it
    held.over = True
    gate.sweep()
    assert held.released == 1 and gate.abandoned == []
    # A reader tracks it: released here only when done and taken back from the reader.
    tracked = FakeOwner(True)
    assert gate.hand_over(tracked, lambda: False) is False and tracked.released == 0
    assert gate.hand_over(tracked, lambda: True) is True and tracked.released == 1
    claimed = []
    in_spdk = FakeOwner(False)
    assert gate.hand_over(in_spdk, lambda: claimed.append(1) or True) is False
    assert claimed == [] and in_spdk.released == 0 and gate.abandoned == []


def test_the_gate_admits_until_shut_and_close_waits_for_the_last(spdk: Any) -> None:
    from pyspdk_sys.bdev._gate import Gate
    from pyspdk_sys.errors import RuntimeStateError

    gate = Gate("Dev", object())
    gate.enter()
    gate.enter_blocking()
    gate.enter_many(3)
    assert len(gate.holds) == 5
    assert gate.shut() is True and gate.shut() is False
    for call in (gate.enter, gate.enter_blocking, lambda: gate.enter_many(1)):
        with pytest.raises(RuntimeStateError, match="Dev is closed"):
            call()
    assert len(gate.holds) == 5
    waiter_done = threading.Event()

    def wait() -> None:
        gate.wait_empty(deadline=float("inf"), seconds=30)
        waiter_done.set()

    waiter = threading.Thread(target=wait)
    waiter.start()
    gate.leave()
    gate.leave_many(3)
    assert not waiter_done.wait(0.2), "close() stopped waiting with a caller inside"
    gate.leave_blocking()
    assert waiter_done.wait(10), "the last caller's leave did not wake close()"
    waiter.join(10)
    with pytest.raises(TimeoutError, match="Dev: I/O callers did not finish in 7 s"):
        gate.holds.append(None)
        gate.wait_empty(deadline=0.0, seconds=7)


def test_a_leaked_blocking_count_is_forgotten_only_off_the_blocking_call(spdk: Any) -> None:
    from pyspdk_sys.bdev._gate import Gate, mark_blocking_calls

    class Holder:
        def __init__(self) -> None:
            self.gate = Gate("Dev", self)

        def blocking(self, inside: threading.Event, go: threading.Event) -> None:
            self.gate.enter_blocking()  # never left: as a Ctrl-C between count and try
            inside.set()
            go.wait(30)

    mark_blocking_calls(Holder.blocking)
    holder = Holder()
    inside, go = threading.Event(), threading.Event()
    thread = threading.Thread(target=holder.blocking, args=(inside, go))
    thread.start()
    assert inside.wait(10)
    holder.gate.forget_leaked()
    assert len(holder.gate.holds) == 1, "a thread still inside the call lost its count"
    go.set()
    thread.join(10)
    holder.gate.forget_leaked()
    assert holder.gate.holds == [] and holder.gate.inside == {}


def test_close_template_on_a_device(runtime: Any, malloc: str) -> None:
    from pyspdk_sys.errors import RuntimeStateError

    dev = runtime.open_bdev(malloc)
    with dev as entered:
        assert entered is dev and not dev.closed
        dev.write(0, bytes(512))
    assert dev.closed
    assert dev not in runtime._resources, "a closed device stayed in its runtime's stop list"
    dev.close()  # again: nothing
    with pytest.raises(RuntimeStateError, match=f"{malloc} is closed"):
        dev.read(0, 512)
    with pytest.raises(RuntimeStateError, match=f"{malloc} is closed"):
        dev._check_open()
    with pytest.raises(ValueError, match="timeout"):
        runtime.open_bdev(malloc).close(timeout=-1)


def test_close_template_on_a_dma_buffer(runtime: Any) -> None:
    from pyspdk_sys.dma import DmaBuffer
    from pyspdk_sys.errors import RuntimeStateError

    buffer = DmaBuffer(runtime, 4096)
    pointer = buffer.acquire()
    assert pointer == buffer.ptr
    with pytest.raises(RuntimeStateError, match="in use by 1 I/O"):
        buffer.close()
    assert not buffer.closed, "a refused close left the buffer marked closed"
    buffer.release()
    with buffer:
        buffer.view[:4] = b"abcd"
    assert buffer.closed and buffer not in runtime._resources
    with pytest.raises(RuntimeStateError, match="has been freed"):
        buffer.acquire()
    buffer.close()


def test_a_dma_buffer_closes_on_the_spdk_thread_since_it_waits_for_nothing(runtime: Any) -> None:
    from pyspdk_sys.dma import DmaBuffer

    buffer = DmaBuffer(runtime, 4096)
    runtime.call(buffer.close)
    assert buffer.closed


def test_closing_a_device_on_the_spdk_thread_is_refused(runtime: Any, malloc: str) -> None:
    from pyspdk_sys.errors import RuntimeStateError

    with runtime.open_bdev(malloc) as dev:
        with pytest.raises(RuntimeStateError, match=f"closing {malloc} waits for the SPDK thread"):
            runtime.call(dev.close)
        assert not dev.closed
        assert dev.read(0, 512) == dev.read(0, 512)
