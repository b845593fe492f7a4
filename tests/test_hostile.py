"""Block I/O under interruption, races and hostile input: each case once crashed, hung,
leaked or returned another request's data.

Every scenario runs in a fresh interpreter, so a crash or a hang fails the
test instead of the run. Slow I/O comes from a delay bdev over a malloc bdev.
Nothing waits for a time to pass to be in a state: a Ctrl-C is sent once the
I/O it must interrupt is in SPDK's hands, and its latency is measured from the
moment it was sent, against how long a Ctrl-C takes to reach a plain sleep in
the same process (the machine may be loaded).
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest

from conftest import run_python

PRELUDE = """
import asyncio, errno, json, os, signal, sys, threading, time
from pyspdk_sys import lib
from pyspdk_sys.runtime import Runtime
from cores import reactor_mask
from pyspdk_sys.errors import RuntimeStateError, IoError
from pyspdk_sys.bdev import DmaBuffer
from pyspdk_sys.dma import dma_allocated_bytes

def slow(read_us, write_us=None):
    write_us = read_us if write_us is None else write_us
    return {"subsystems": [{"subsystem": "bdev", "config": [
        {"method": "bdev_malloc_create",
         "params": {"name": "M0", "num_blocks": 32768, "block_size": 512}},
        {"method": "bdev_delay_create",
         "params": {"base_bdev_name": "M0", "name": "Slow",
                    "avg_read_latency": read_us, "p99_read_latency": read_us,
                    "avg_write_latency": write_us, "p99_write_latency": write_us}},
    ]}]}

def until(condition, what, timeout=30):
    # Wait for a state, not for a time: AssertionError if it never comes.
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "never: " + what
        time.sleep(0.0005)

def in_flight(dev, n=1):
    # Whether SPDK holds at least n of the device's I/Os now.
    return lambda: dev._dev is not None and lib.pyspdk_dev_inflight(dev._dev) >= n

def interrupt_when(condition, what):
    # Ctrl-C to this process once condition() holds; returns a list that gets the
    # time it was sent (or None if the condition never came).
    sent = []
    def run():
        try:
            until(condition, what)
        except AssertionError:
            sent.append(None)
            raise
        sent.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGINT)
    threading.Thread(target=run, daemon=True).start()
    return sent

def ctrl_c_bound():
    # How late a Ctrl-C may reach a wait: the worst of 3 reaching a plain sleep now,
    # times 5, plus 0.1 s.
    worst = 0.0
    for _ in range(3):
        sleeping = threading.Event()
        sent = interrupt_when(sleeping.is_set, "the sleep")
        try:
            sleeping.set()
            time.sleep(10)
        except KeyboardInterrupt:
            worst = max(worst, time.monotonic() - sent[0])
    return 0.1 + 5 * worst

def report(**values):
    print(json.dumps(values))
"""


def run(body: str, timeout: float = 120) -> dict[str, Any]:
    result = run_python(PRELUDE + body, timeout=timeout)
    assert result.returncode == 0, f"rc {result.returncode}: {result.stderr[-3000:]}"
    out: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    print(out)  # shown when the test fails
    return out


def test_resizing_a_buffer_under_a_read_raises_in_the_resizer(spdk: Any) -> None:
    out = run("""
rt = Runtime(cpu_mask=reactor_mask(), config=slow(300_000)).start()
dev = rt.open_bdev("Slow")
dev.write(0, b"\\x5a" * (1 << 16))
errors, held = [], []
def resize_during_the_read(resize):
    # Once SPDK holds the read; and it still held it after the attempt.
    until(in_flight(dev), "the read in SPDK's hands")
    try:
        resize()
        errors.append("resized")
    except BufferError as exc:
        errors.append(type(exc).__name__)
    held.append(lib.pyspdk_dev_inflight(dev._dev))
buf = bytearray(1 << 16)
resizer = threading.Thread(target=resize_during_the_read, args=(buf.clear,))
resizer.start()
n = dev.read_into(0, buf)
resizer.join(30)
# The general path pins too: a memoryview slice of a bytearray.
big = bytearray(1 << 16)
resizer = threading.Thread(
    target=resize_during_the_read, args=(lambda: big.extend(b"x" * (1 << 20)),))
resizer.start()
dev.readv(0, [memoryview(big)[: 1 << 15], bytearray(1 << 15)])
resizer.join(30)
report(n=n, errors=errors, held=held, data_ok=bytes(buf) == b"\\x5a" * (1 << 16), size=len(buf),
       big=len(big), big_ok=bytes(big[: 1 << 15]) == b"\\x5a" * (1 << 15))
dev.close(); rt.stop()
""")
    assert out["held"] == [1, 1]  # each resize came while SPDK held the read
    assert out["n"] == 1 << 16
    assert out["errors"] == ["BufferError", "BufferError"]
    assert out["data_ok"] and out["size"] == 1 << 16
    assert out["big_ok"] and out["big"] == 1 << 16


def test_interrupted_batch_never_hands_its_data_to_the_next(spdk: Any) -> None:
    out = run("""
rt = Runtime(cpu_mask=reactor_mask(), config=slow(2_000_000, 10)).start()
dev = rt.open_bdev("Slow")
dev.write(0, b"A" * 4096); dev.write(8192, b"B" * 4096)
bound = ctrl_c_bound()
sent = interrupt_when(in_flight(dev, 2), "the batch's two reads in SPDK's hands")
try:
    dev.run_batch([("read", 0, 4096), ("read", 0, 4096)])
    first = "completed"
except KeyboardInterrupt:
    first = "interrupted"
latency = time.monotonic() - sent[0]
# The interrupted reads end into their own queue, then a batch reads other data.
until(lambda: lib.pyspdk_dev_inflight(dev._dev) == 0, "the interrupted reads back")
second = dev.run_batch([("read", 8192, 4096), ("read", 8192, 4096)])
dev.close()
report(first=first, latency=latency, bound=bound, second=[r[:1].decode() for r in second])
rt.stop()
""")
    assert out["first"] == "interrupted"
    # Interrupted as promptly as a sleep is, not after the reads' 2 s.
    assert out["bound"] < 1.0, f"the machine is too loaded to tell: {out}"
    assert out["latency"] < out["bound"], out
    assert out["second"] == ["B", "B"]


def test_futures_racing_close_get_their_own_data_or_an_error(spdk: Any) -> None:
    out = run("""
sys.setswitchinterval(1e-6)
config = {"subsystems": [{"subsystem": "bdev", "config": [
    {"method": "bdev_malloc_create",
     "params": {"name": "M0", "num_blocks": 32768, "block_size": 512}}]}]}
rt = Runtime(cpu_mask=reactor_mask(), config=config).start()
with rt.open_bdev("M0") as dev:
    for i in range(32):
        dev.write(i * 4096, bytes([i + 1]) * 4096)
start = dma_allocated_bytes(rt)
outcomes = {"ok": 0, "wrong": 0, "error": 0}
kinds = set()
for _ in range(300):
    dev = rt.open_bdev("M0")
    futures = [dev.read_async(i * 4096, 4096) for i in range(32)]
    dev.close()
    for i, f in enumerate(futures):
        try:
            data = f.result(timeout=10)
        except (IoError, RuntimeStateError) as exc:
            outcomes["error"] += 1
            kinds.add(type(exc).__name__ + (
                ":" + errno.errorcode.get(exc.errno, "?") if isinstance(exc, IoError) else ""))
        else:
            outcomes["ok" if data == bytes([i + 1]) * 4096 else "wrong"] += 1
report(outcomes=outcomes, kinds=sorted(kinds), leaked=dma_allocated_bytes(rt) - start)
rt.stop()
""")
    assert out["outcomes"]["wrong"] == 0
    assert out["outcomes"]["ok"] + out["outcomes"]["error"] == 300 * 32
    # A read the close caught (queued, or aborted in SPDK's hands) is cancelled, and
    # nothing else goes wrong. (How many the close catches depends on the machine's load.)
    assert out["kinds"] == (["IoError:ECANCELED"] if out["outcomes"]["error"] else []), out
    assert out["leaked"] == 0


def test_ctrl_c_reaches_a_blocking_read_and_close_is_prompt(spdk: Any) -> None:
    out = run("""
rt = Runtime(cpu_mask=reactor_mask(), config=slow(2_000_000)).start()
with rt.open_bdev("Slow") as idle:  # the baseline: closing a device that holds nothing
    started = time.monotonic()
idle_close = time.monotonic() - started
dev = rt.open_bdev("Slow")
bound = ctrl_c_bound()
sent = interrupt_when(in_flight(dev), "the read in SPDK's hands")
try:
    dev.read(0, 4096)
    first = "completed"
except KeyboardInterrupt:
    first = "interrupted"
latency = time.monotonic() - sent[0]
# The device stays usable: this read waits its own 2 s, and the first ends meanwhile.
again = len(dev.read(4096, 4096))
left = lib.pyspdk_dev_inflight(dev._dev)
started = time.monotonic()
dev.close()
close_time = time.monotonic() - started
report(first=first, latency=latency, bound=bound, again=again, left=left,
       close_time=close_time, idle_close=idle_close)
rt.stop()
""")
    assert out["first"] == "interrupted"
    assert out["bound"] < 1.0, f"the machine is too loaded to tell: {out}"
    assert out["latency"] < out["bound"], out
    assert out["again"] == 4096
    # Nothing was left to wait for: close takes what closing an idle device takes
    # (not the 30 s it waits for a caller that never leaves).
    assert out["left"] == 0
    assert out["close_time"] < 0.5 + 10 * out["idle_close"], out


def test_ctrl_c_reaches_read_many_and_close(spdk: Any) -> None:
    out = run("""
from pyspdk_sys.pybdev import PythonBdev
rt = Runtime(cpu_mask=reactor_mask(), config=slow(2_000_000)).start()
dev = rt.open_bdev("Slow")
bound = ctrl_c_bound()
outcomes = []
for call in (lambda: dev.read_many([0, 512], 512), lambda: dev.write_many([0], 512, b"x" * 512),
             lambda: dev.run_batch([("write", 0, b"y" * 512)])):
    held = lib.pyspdk_dev_inflight(dev._dev)
    sent = interrupt_when(in_flight(dev, held + 1), "the call's I/O in SPDK's hands")
    try:
        call()
        outcomes.append("completed")
    except KeyboardInterrupt:
        outcomes.append(time.monotonic() - sent[0])
# A close that must wait: a bdev served here whose reads wait for a gate, and that
# cannot abort them (the delay bdev can: its close returns at once).
class Gated:
    def __init__(self):
        self.gate = threading.Event()
    def readinto(self, offset, buffer):
        self.gate.wait(60)
        buffer[:] = bytes(len(buffer))
    def write(self, offset, data):
        pass
gated = Gated()
PythonBdev(rt, "Gated", gated, num_blocks=2048)
gdev = rt.open_bdev("Gated")
gdev.read_async(0, 512)
sent = interrupt_when(lambda: gdev.closed and in_flight(gdev)(), "close waiting for the read")
try:
    gdev.close()
    closed = "returned"
except KeyboardInterrupt:
    closed = time.monotonic() - sent[0]
gated.gate.set()
dev.close()
rt.stop()
report(outcomes=outcomes, closed=closed, bound=bound)
""")
    assert out["bound"] < 1.0, f"the machine is too loaded to tell: {out}"
    assert all(isinstance(x, float) and x < out["bound"] for x in out["outcomes"]), out
    assert isinstance(out["closed"], float) and out["closed"] < out["bound"], out


def test_timeout_then_close_is_prompt(spdk: Any) -> None:
    out = run("""
rt = Runtime(cpu_mask=reactor_mask(), config=slow(3_000_000)).start()
# The baseline: how late a 0.1 s timed wait ends on this machine now (worst of 3).
late = 0.0
for _ in range(3):
    started = time.monotonic()
    threading.Event().wait(0.1)
    late = max(late, time.monotonic() - started - 0.1)
dev = rt.open_bdev("Slow", timeout=0.1)
started = time.monotonic()
try:
    dev.read(0, 4096)
    first = "completed"
except TimeoutError:
    first = "timeout"
timed_out_after = time.monotonic() - started
started = time.monotonic()
try:
    dev.read_many([0, 512], 512)
    many = "completed"
except TimeoutError:
    many = "timeout"
many_after = time.monotonic() - started
held = lib.pyspdk_dev_inflight(dev._dev)
started = time.monotonic()
dev.close()
report(first=first, after=timed_out_after, many=many, many_after=many_after, late=late,
       held=held, close_time=time.monotonic() - started)
rt.stop()
""")
    assert out["first"] == "timeout" and out["many"] == "timeout"
    # Not before the timeout, and about as late after it as a plain timed wait.
    bound = 0.1 + 0.1 + 5 * out["late"]
    assert bound < 1.0, f"the machine is too loaded to tell: {out}"
    assert 0.1 <= out["after"] < bound, out
    assert 0.1 <= out["many_after"] < bound, out
    # The timed-out I/O (3 s each) was still in SPDK's hands; close did not wait
    # longer than they would take (nor the 30 s it gives a caller).
    assert out["held"] == 3
    assert out["close_time"] < 3.0 + 1.0, out


def test_waiting_calls_on_the_spdk_thread_are_refused(spdk: Any) -> None:
    out = run(
        """
config = {"subsystems": [{"subsystem": "bdev", "config": [
    {"method": "bdev_malloc_create",
     "params": {"name": "M0", "num_blocks": 32768, "block_size": 512}}]}]}
rt = Runtime(cpu_mask=reactor_mask(), config=config).start()
dev = rt.open_bdev("M0")
calls = {
    "read": lambda: dev.read(0, 512),
    "read_into": lambda: dev.read_into(0, bytearray(512)),
    "write": lambda: dev.write(0, b"x" * 512),
    "writev": lambda: dev.writev(0, [b"x" * 512]),
    "flush": lambda: dev.flush(),
    "read_many": lambda: dev.read_many([0], 512),
    "write_many": lambda: dev.write_many([0], 512, b"x" * 512),
    "run_batch": lambda: dev.run_batch([("read", 0, 512)]),
    "close": lambda: dev.close(),
    "rpc": lambda: rt.rpc("spdk_get_version"),
}
def attempt(fn):
    try:
        fn()
        return "ok"
    except RuntimeStateError:
        return "refused"
    except Exception as exc:
        return type(exc).__name__
outcome = {name: rt.call(attempt, fn, timeout=10) for name, fn in calls.items()}
outcome["still_usable"] = len(dev.read(0, 512))
dev.close(); rt.stop()
report(**outcome)
""",
        timeout=60,
    )
    assert out.pop("still_usable") == 512
    assert set(out.values()) == {"refused"}, out


def test_every_error_path_gives_back_its_dma_memory(spdk: Any) -> None:
    out = run("""
config = {"subsystems": [{"subsystem": "bdev", "config": [
    {"method": "bdev_malloc_create",
     "params": {"name": "M0", "num_blocks": 32768, "block_size": 512}}]}]}
rt = Runtime(cpu_mask=reactor_mask(), config=config).start()
before_open = dma_allocated_bytes(rt)
dev = rt.open_bdev("M0")
bad = [
    lambda: dev.run_batch([("read", 0, 4 << 20), ("bogus",)]),
    lambda: dev.run_batch([("write", 0, b"x" * 4096), ("read", 1 << 40, 512)]),
    lambda: dev.readv(0, [bytearray(512), b"readonly"]),
    lambda: dev.writev(0, [b"x" * 512, b""]),
    lambda: dev.read_many([0, 3], 512),
    lambda: dev.write_many([0, 1 << 40], 512, bytes(1024)),
    lambda: dev.read_many([0], 512, bytearray(10)),
    lambda: dev.read_into(0, memoryview(bytearray(1024))[::2]),
    lambda: dev.write(1 << 40, b"x" * 512),
    lambda: DmaBuffer(rt, 1 << 40),
]
outcomes = set()
def provoke(rounds):
    for _ in range(rounds):
        outcomes.add(tuple(outcome(call) for call in bad))
def outcome(call):
    try:
        call()
    except Exception as exc:
        return type(exc).__name__
    return "no error"
provoke(1)  # the device's buffer pool now caches each size class once
start = dma_allocated_bytes(rt)
provoke(50)
leaked = dma_allocated_bytes(rt) - start
dev.close()
after_close = dma_allocated_bytes(rt) - before_open
rt.stop()
report(leaked=leaked, after_close=after_close, outcomes=sorted(outcomes))
""")
    assert out["leaked"] == 0
    assert out["after_close"] == 0
    # Every bad call raised, every time, what its mistake calls for.
    assert out["outcomes"] == [
        [
            "ValueError",  # an unknown batch operation (after a 4 MiB read was made)
            "ValueError",  # a batch read past the end (after a write was made)
            "TypeError",  # a read-only buffer to read into
            "ValueError",  # an empty buffer to write
            "ValueError",  # an offset not a multiple of the block size
            "ValueError",  # a job write past the end
            "ValueError",  # a buffer too small for the job
            "ValueError",  # a buffer that is not contiguous
            "ValueError",  # a write past the end
            "MemoryError",  # 1 TiB of DMA memory
        ]
    ], out


def test_rpc_socket_never_replaces_what_is_not_a_stale_spdk_socket(
    spdk: Any, short_tmp: Path
) -> None:
    from pyspdk_sys._sockets import remove_stale_socket
    from pyspdk_sys.runtime import Runtime

    notes = short_tmp / "notes.txt"
    notes.write_text("keep me")
    with pytest.raises(ValueError, match="not a socket"):
        Runtime(rpc_socket=notes)
    assert notes.read_text() == "keep me"

    live = short_tmp / "live.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(live))
    server.listen(1)
    try:
        with pytest.raises(ValueError, match="live socket"):
            Runtime(rpc_socket=live)
        assert live.exists()
        assert remove_stale_socket(str(live)) is False and live.exists()
    finally:
        server.close()

    foreign_lock = short_tmp / "other.sock"
    Path(str(foreign_lock) + ".lock").write_text("data")
    with pytest.raises(ValueError, match="not an SPDK lock file"):
        Runtime(rpc_socket=foreign_lock)

    stale = short_tmp / "stale.sock"
    leftover = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    leftover.bind(str(stale))
    leftover.close()  # bound, never listening, closed: what a killed SPDK leaves
    assert Runtime(rpc_socket=stale).rpc_socket == str(stale)
    assert remove_stale_socket(str(stale)) is True and not stale.exists()


def test_a_held_spdk_lock_is_refused(spdk: Any, runtime: Any) -> None:
    from pyspdk_sys.runtime import Runtime

    with pytest.raises(ValueError, match="in use by another SPDK process"):
        Runtime(rpc_socket=runtime.rpc_socket)
    assert os.path.exists(runtime.rpc_socket)


def test_dma_buffer_alignment_and_size_are_checked(spdk: Any, runtime: Any) -> None:
    from pyspdk_sys.bdev import DmaBuffer

    for align, error in ((1 << 32, ValueError), (3, ValueError), (0, ValueError), (2.0, TypeError)):
        with pytest.raises(error, match="align"):
            DmaBuffer(runtime, 4096, align=align)
    with pytest.raises(ValueError, match="size"):
        DmaBuffer(runtime, 1 << 64)
    with DmaBuffer(runtime, 4096, align=1 << 21) as buffer:
        assert int(__import__("pyspdk_sys").ffi.cast("uintptr_t", buffer.ptr)) % (1 << 21) == 0


def test_a_forked_child_is_refused_and_the_parent_unaffected(spdk: Any) -> None:
    out = run("""
config = {"subsystems": [{"subsystem": "bdev", "config": [
    {"method": "bdev_malloc_create",
     "params": {"name": "M0", "num_blocks": 32768, "block_size": 512}}]}]}
rt = Runtime(cpu_mask=reactor_mask(), config=config).start()
dev = rt.open_bdev("M0")
buf = DmaBuffer(rt, 4096)
dev.write(0, b"P" * 512)
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    results = {}
    for name, call in {
        "rpc": lambda: rt.rpc("spdk_get_version"),
        "submit": lambda: rt.submit(len, "x"),
        "read": lambda: dev.read(0, 512),
        "read_async": lambda: dev.read_async(0, 512),
        "read_many": lambda: dev.read_many([0], 512),
        "dma": lambda: buf.ptr,
        "dma_read": lambda: dev.read_into(0, buf),
        "open": lambda: rt.open_bdev("M0"),
        "new_runtime": lambda: Runtime().start(),
    }.items():
        try:
            call()
            results[name] = "ok"
        except RuntimeStateError as exc:
            results[name] = "refused" if "fork" in str(exc) else "refused: " + str(exc)
        except Exception as exc:
            results[name] = type(exc).__name__ + ": " + str(exc)
    os.write(w, json.dumps(results).encode())
    os._exit(0)
os.close(w)
_, status = os.waitpid(pid, 0)
child = json.loads(os.read(r, 65536))
parent = dev.read(0, 512) == b"P" * 512 and rt.rpc("spdk_get_version")["version"].startswith(
    "SPDK v")
dev.close(); buf.close(); rt.stop()
report(child=child, status=status, parent=parent)
""")
    assert out["status"] == 0
    assert out["parent"] is True
    assert set(out["child"].values()) == {"refused"}, out["child"]


def test_requests_queued_behind_a_batch_start_when_it_ends(spdk: Any) -> None:
    """A batch holds the device's whole queue depth; a blocking read queued behind it must
    start once the batch ends, with no other submission to wake the engine (it hung)."""
    out = run(
        """
import faulthandler
faulthandler.dump_traceback_later(20, exit=True)
rt = Runtime(cpu_mask=reactor_mask(), config=slow(200_000)).start()
dev = rt.open_bdev("Slow", queue_depth=1)
dev.write(0, b"\\x11" * 4096); dev.write(4096, b"\\x22" * 4096); dev.write(8192, b"\\x33" * 4096)
batch_result = []
def run_batch():
    try:
        batch_result.append(dev.read_many([0, 4096], 4096, depth=2))
    except BaseException as exc:
        batch_result.append(repr(exc))
batch = threading.Thread(target=run_batch)
batch.start()
# The job holds the device's whole queue (depth 1): one read in SPDK's hands.
until(in_flight(dev), "the batch's read in SPDK's hands")
started = time.monotonic()
data = dev.read(8192, 4096)  # queued behind them
waited = time.monotonic() - started
batch.join(30)
report(waited=waited, ok=data == b"\\x33" * 4096, alive=batch.is_alive(),
       batch_ok=batch_result == [b"\\x11" * 4096 + b"\\x22" * 4096],
       batch=[r if isinstance(r, str) else len(r) for r in batch_result])
dev.close(); rt.stop()
""",
        timeout=60,
    )
    assert out["ok"]
    assert not out["alive"] and out["batch_ok"], out
    # The batch's reads end within 0.4 s, then this read takes 0.2 s; a read that
    # nothing woke would wait until faulthandler ends the process (20 s).
    assert out["waited"] < 5.0, out


def test_ctrl_c_between_count_and_try_does_not_hold_close(spdk: Any) -> None:
    """Ctrl-C can land after a blocking call counted itself in and before the try that
    counts it out; close() must notice the thread left, not wait 30 s (it did, in the soak),
    also while that thread goes on with I/O on another device."""
    out = run(
        """
from pyspdk_sys.bdev._gate import Gate
rt = Runtime(cpu_mask=reactor_mask(), config=slow(1_000)).start()
dev = rt.open_bdev("Slow")
other = rt.open_bdev("Slow")
real = Gate.enter_blocking
def count_then_interrupt(self):
    real(self)
    if self is dev.gate:
        raise KeyboardInterrupt  # where a signal handler would raise it
Gate.enter_blocking = count_then_interrupt
caught = []
stop = threading.Event()
on_other = threading.Event()
other_reads = []
def leaker():
    for call in (lambda: dev.read(0, 512), lambda: dev.write(0, bytes(512)),
                 lambda: dev.read_many([0, 512], 512)):
        try:
            call()
        except KeyboardInterrupt:
            caught.append(1)
    on_other.set()
    while not stop.is_set():
        other_reads.append(len(other.read(0, 512)))  # inside a blocking call, of another device
worker = threading.Thread(target=leaker)
worker.start()
assert on_other.wait(30), "the worker never got past its three calls"
until(lambda: other_reads, "the worker's first read of the other device")
started = time.monotonic()
dev.close()
close_s = time.monotonic() - started
stop.set(); worker.join(30)
Gate.enter_blocking = real
report(caught=len(caught), close_s=close_s, alive=worker.is_alive(),
       other_reads=set(other_reads) == {512}, other_ok=other.read(0, 512) == bytes(512))
other.close(); rt.stop()
""",
        timeout=90,
    )
    assert out["caught"] == 3
    # close() finds the leaked counts at once (its check runs every 0.25 s), not after
    # its 30 s timeout.
    assert out["close_s"] < 5.0, out
    assert not out["alive"] and out["other_reads"] and out["other_ok"]
