"""Starting and stopping SPDK, and every misuse that would make SPDK abort.

Each scenario runs in a fresh interpreter: it stops SPDK (which starts once
per process), and a crash or a hang fails the test instead of the run.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from conftest import run_python

PRELUDE = """
import json, threading, time, errno
from pyspdk_sys import lib
from pyspdk_sys.runtime import Runtime
from cores import reactor_mask
from pyspdk_sys.errors import RuntimeStateError, IoError, StartError
from pyspdk_sys.bdev import DmaBuffer

def config(*bdevs):
    return {"subsystems": [{"subsystem": "bdev", "config": list(bdevs)}]}

MALLOC = {"method": "bdev_malloc_create",
          "params": {"name": "M0", "num_blocks": 16384, "block_size": 512}}

def delay(us, name="Slow"):
    return {"method": "bdev_delay_create",
            "params": {"base_bdev_name": "M0", "name": name, "avg_read_latency": us,
                       "p99_read_latency": us, "avg_write_latency": us, "p99_write_latency": us}}

DELAY = delay(50000)

def until(condition, what, timeout=30):
    # Wait for a state, not for a time: AssertionError if it never comes.
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "never: " + what
        time.sleep(0.001)

def in_flight(dev):
    return lib.pyspdk_dev_inflight(dev._dev)

def error_name(exc):
    return type(exc).__name__ + (
        ":" + errno.errorcode.get(exc.errno, "?") if isinstance(exc, IoError) else "")

def outcome(call):
    try:
        call()
        return "ok"
    except Exception as exc:
        return type(exc).__name__
"""


def run(body: str, timeout: float = 120) -> dict[str, Any]:
    result = run_python(PRELUDE + body, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_stop_with_hundreds_of_ios_in_flight(spdk: Any) -> None:
    report = run("""
rt = Runtime(cpu_mask=reactor_mask(), config=config(MALLOC, delay(2_000_000))).start()
dev = rt.open_bdev("Slow", queue_depth=128)
futures = [dev.write_async(i * 512, b"x" * 512) for i in range(400)]
thread_outcomes = []
reading = threading.Semaphore(0)
def reader(k):
    try:
        reading.release()
        while True:
            dev.read(k * 512, 512)
    except Exception as exc:
        thread_outcomes.append(error_name(exc))
threads = [threading.Thread(target=reader, args=(k,)) for k in range(8)]
for t in threads: t.start()
for t in threads: assert reading.acquire(timeout=30)
until(lambda: in_flight(dev) == 128, "the device's queue full")
held = in_flight(dev)
done_before = sum(f.done() for f in futures)
start = time.monotonic()
rt.stop()
stop_seconds = time.monotonic() - start
for t in threads: t.join(timeout=30)
kinds = {}
for f in futures:
    assert f.done()
    exc = f.exception()
    key = "ok" if exc is None else error_name(exc)
    kinds[key] = kinds.get(key, 0) + 1
print(json.dumps({"stop_seconds": stop_seconds, "futures": kinds, "threads": thread_outcomes,
                  "alive": [t.is_alive() for t in threads], "state": rt.state.value,
                  "held": held, "done_before": done_before}))
""")
    assert report["state"] == "stopped"
    assert report["stop_seconds"] < 30
    # The stop came while SPDK held 128 writes (each 2 s long) and the rest waited.
    assert report["held"] == 128 and report["done_before"] == 0
    # The delay bdev supports abort: what SPDK held is aborted by the close at
    # stop, and what it had not taken is cancelled; either way ECANCELED.
    assert report["futures"] == {"IoError:ECANCELED": 400}
    # Each reader's read was queued behind them, or came after the stop: cancelled, or
    # refused; nothing else, and every reader ended.
    assert report["alive"] == [False] * 8
    assert len(report["threads"]) == 8
    assert set(report["threads"]) <= {"RuntimeStateError", "IoError:ECANCELED"}, report


def test_everything_after_stop_is_refused(spdk: Any) -> None:
    report = run("""
rt = Runtime(cpu_mask=reactor_mask(), config=config(MALLOC)).start()
dev = rt.open_bdev("M0")
buf = DmaBuffer(rt, 4096)
rt.stop()
print(json.dumps({
    "stop_again": outcome(rt.stop),
    "submit": outcome(lambda: rt.submit(lambda: 1)),
    "call": outcome(lambda: rt.call(lambda: 1)),
    "read": outcome(lambda: dev.read(0, 512)),
    "read_async": outcome(lambda: dev.read_async(0, 512)),
    "close": outcome(dev.close),
    "open": outcome(lambda: rt.open_bdev("M0")),
    "dma_ptr": outcome(lambda: buf.ptr),
    "dma_new": outcome(lambda: DmaBuffer(rt, 4096)),
    "start_again": outcome(rt.start),
    "new_runtime": outcome(lambda: Runtime().start()),
}))
""")
    assert report == {
        "stop_again": "ok",
        "submit": "RuntimeStateError",
        "call": "RuntimeStateError",
        "read": "RuntimeStateError",
        "read_async": "RuntimeStateError",
        "close": "ok",
        "open": "RuntimeStateError",
        "dma_ptr": "RuntimeStateError",
        "dma_new": "RuntimeStateError",
        "start_again": "RuntimeStateError",
        "new_runtime": "RuntimeStateError",
    }


def test_second_runtime_while_running_is_refused(spdk: Any) -> None:
    report = run("""
rt = Runtime(cpu_mask=reactor_mask()).start()
second = outcome(lambda: Runtime().start())
rt.stop()
print(json.dumps({"second": second}))
""")
    assert report == {"second": "RuntimeStateError"}


def test_stop_from_the_spdk_thread(spdk: Any) -> None:
    report = run("""
rt = Runtime(cpu_mask=reactor_mask()).start()
rt.call(rt.stop)
rt.stop(timeout=30)
print(json.dumps({"state": rt.state.value}))
""")
    assert report == {"state": "stopped"}


@pytest.mark.parametrize("cycle", range(3))
def test_start_io_stop_cycles(spdk: Any, cycle: int) -> None:
    report = run(f"""
with Runtime(cpu_mask=reactor_mask(), config=config(MALLOC)) as rt:
    with rt.open_bdev("M0") as dev:
        dev.write(0, bytes([{cycle}]) * 4096)
        data = dev.read(0, 4096)
print(json.dumps({{"ok": data == bytes([{cycle}]) * 4096, "state": rt.state.value}}))
""")
    assert report == {"ok": True, "state": "stopped"}


def test_exit_without_stop(spdk: Any) -> None:
    result = run_python(
        PRELUDE
        + """
rt = Runtime(cpu_mask=reactor_mask(), config=config(MALLOC)).start()
dev = rt.open_bdev("M0")
futures = [dev.read_async(0, 512) for _ in range(100)]
print("leaving")
""",
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "leaving"


def test_bad_config_is_refused_at_construction(spdk: Any) -> None:
    """A method SPDK lacks is known before start: SPDK would fail half-way through it,
    and could not start again in this process."""
    from pyspdk_sys.runtime import Runtime

    bad = {"subsystems": [{"subsystem": "bdev", "config": [{"method": "bdev_no_such_method"}]}]}
    with pytest.raises(ValueError, match="'bdev_no_such_method', which is not an SPDK RPC"):
        Runtime(config=bad)


def test_a_start_spdk_fails_says_so_and_refuses_another(spdk: Any) -> None:
    """What only SPDK finds (here: pools that do not fit) is a StartError; SPDK keeps
    state from it, so a second start in the process is refused with the reason."""
    report = run("""
rt = Runtime(cpu_mask=reactor_mask(), small_pools=False, mem_size_mb=64, log_level="ERROR")
try:
    rt.start()
    result = "started"
except StartError as exc:
    result = str(exc)
try:
    Runtime(mem_size_mb=256).start()
    again = "started"
except RuntimeStateError as exc:
    again = str(exc)
print(json.dumps({"result": result, "state": rt.state.value, "again": again}))
""")
    assert report["state"] == "failed"
    assert report["result"].startswith("SPDK failed to start")
    assert "cannot start again in this process" in report["result"]
    assert report["again"].startswith("SPDK has already run in this process")


def test_runtime_arguments_are_checked(spdk: Any, tmp_path: Any) -> None:
    from pyspdk_sys.runtime import Runtime

    bad = [
        ({"mem_size_mb": 0}, ValueError, "mem_size_mb"),
        ({"mem_size_mb": True}, TypeError, "mem_size_mb"),
        ({"cpu_mask": "1"}, ValueError, "cpu_mask"),
        ({"log_level": "LOUD"}, ValueError, "log_level"),
        ({"hugedir": "/tmp"}, ValueError, "hugedir needs hugepages"),
        ({"pci": True}, ValueError, "pci=True needs hugepages"),
        ({"config": tmp_path / "missing.json"}, ValueError, "does not exist"),
        ({"config": {"subsystems": {}}}, ValueError, "must be a list"),
        ({"config": {"subsystems": [object()]}}, ValueError, "not JSON-serialisable"),
        ({"name": ""}, ValueError, "name"),
        ({"name": 5}, ValueError, "name"),
        ({"hugepages": 1}, TypeError, "hugepages"),
    ]
    for kwargs, error, message in bad:
        with pytest.raises(error, match=message):
            Runtime(**kwargs)
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        Runtime(config=broken)


def test_stop_during_read_many(spdk: Any) -> None:
    report = run("""
rt = Runtime(cpu_mask=reactor_mask(), config=config(MALLOC)).start()
with rt.open_bdev("M0") as base:  # then the delay bdev over it
    base.write_many([i * 512 for i in range(2000)], 512, b"\\x77" * 512 * 2000)
rt.rpc("bdev_delay_create", DELAY["params"])
dev = rt.open_bdev("Slow", queue_depth=16)
into = bytearray(512 * 2000)
outcome_box = []
def job():
    try:
        dev.read_many([i * 512 for i in range(2000)], 512, into, depth=16)
        outcome_box.append("ok")
    except IoError as exc:
        outcome_box.append((errno.errorcode[exc.errno], sorted(exc.failed)))
    except BaseException as exc:
        outcome_box.append(repr(exc))
t = threading.Thread(target=job)
t.start()
# Some reads done (the first one's data is in), 16 more in SPDK's hands.
until(lambda: into[:512] == b"\\x77" * 512, "the job's first read")
until(lambda: in_flight(dev) == 16, "the job's 16 reads in SPDK's hands")
rt.stop()
t.join(timeout=30)
read = [i for i in range(2000) if into[i * 512:(i + 1) * 512] == b"\\x77" * 512]
print(json.dumps({"alive": t.is_alive(), "outcome": outcome_box, "read": read}))
""")
    assert report["alive"] is False
    ((code, failed),) = report["outcome"]
    assert code == "ECANCELED"
    # 2000 reads at 16 x 50 ms take 6 s: the stop came early. What completed before it
    # (the first read at least) holds its data; the rest (at least the 16 SPDK held,
    # aborted) failed, with its bytes of the buffer left alone.
    read = report["read"]
    assert 0 in read and len(failed) >= 16
    assert len(read) + len(failed) == 2000 and set(read).isdisjoint(failed)


def test_close_on_the_loop_thread_with_aread_in_flight(spdk: Any) -> None:
    # close() called from a coroutine while that loop's aread is in SPDK's
    # hands: close reads the loop's completions itself (the loop cannot run
    # meanwhile), and it used to do that holding the device's lock, which
    # delivering a completion takes again: it hung for good.
    report = run("""
import asyncio
rt = Runtime(cpu_mask=reactor_mask(), config=config(MALLOC, DELAY)).start()
dev = rt.open_bdev("Slow")
dev.write(0, b"c" * 512)
async def main():
    task = asyncio.ensure_future(dev.aread(0, 512))
    deadline = time.monotonic() + 30
    while in_flight(dev) == 0:  # until SPDK holds the read (for 50 ms)
        assert time.monotonic() < deadline, "the read never reached SPDK"
        await asyncio.sleep(0)
    held, pending = in_flight(dev), not task.done()
    start = time.monotonic()
    dev.close(timeout=10)
    took = time.monotonic() - start
    (outcome,) = await asyncio.gather(task, return_exceptions=True)
    return held, pending, took, outcome
held, pending, took, outcome = asyncio.run(main())
rt.stop()
print(json.dumps({"held": held, "pending": pending, "took": took, "closed": dev.closed,
                  "outcome": errno.errorcode.get(getattr(outcome, "errno", None), repr(outcome))}))
""")
    # The path under test ran: close() began while SPDK held this loop's read.
    assert report["held"] == 1 and report["pending"], report
    assert report["closed"]
    # The delay bdev supports abort: close aborts the read SPDK holds.
    assert report["outcome"] == "ECANCELED"
    assert report["took"] < 5


def test_spdk_running_out_of_bdev_io_is_retried_not_reported(spdk: Any) -> None:
    # A bdev_io pool far smaller than the I/O in flight: SPDK answers -ENOMEM
    # and the engine waits with spdk_bdev_queue_io_wait.
    report = run("""
small = {"method": "bdev_set_options",
         "params": {"bdev_io_pool_size": 64, "bdev_io_cache_size": 4}}
rt = Runtime(cpu_mask=reactor_mask(), config=config(small, MALLOC)).start()
options = [c for s in rt.rpc("framework_get_config", {"name": "bdev"})
           for c in [s] if c["method"] == "bdev_set_options"]
dev = rt.open_bdev("M0", queue_depth=1024)
data = bytes(range(256)) * 2 * 2000
dev.write_many([i * 512 for i in range(2000)], 512, data, depth=1024)
many_ok = dev.read_many([i * 512 for i in range(2000)], 512, depth=1024) == data
futures = [dev.read_async(i * 512, 512) for i in range(2000)]
futures_ok = all(f.result(timeout=60) == data[i * 512:(i + 1) * 512]
                 for i, f in enumerate(futures))
rt.stop()
print(json.dumps({"pool": options[0]["params"]["bdev_io_pool_size"],
                  "many_ok": many_ok, "futures_ok": futures_ok}))
""")
    assert report == {"pool": 64, "many_ok": True, "futures_ok": True}
