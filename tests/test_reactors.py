"""More than one reactor: a device gets a lane (channel and queue) on each core's SPDK thread.

Each test starts its own two-core Runtime (cores.reactor_mask(0, 2)) in a subprocess: SPDK starts
once per process, and the session runtime has one core.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from conftest import run_python, skip_or_fail


@pytest.fixture(autouse=True)
def two_cpus() -> None:
    if len(os.sched_getaffinity(0)) < 2:
        skip_or_fail("two reactors need two CPUs this process may use")


PRELUDE = """
import asyncio, errno, json, os, threading, time
from pyspdk_sys import lib
from pyspdk_sys.runtime import Runtime
from cores import reactor_mask
from pyspdk_sys.bdev.manage import create_malloc
from pyspdk_sys.errors import IoError, RuntimeStateError

rt = Runtime(cpu_mask=reactor_mask(0, 2), mem_size_mb=1024, name="two-reactors")
rt.start()
found = {}

def channel_ops(name):
    stat = rt.rpc("bdev_get_iostat", {"names": [name], "per_channel": True})
    return {ch["thread_id"]: ch["num_read_ops"] + ch["num_write_ops"] for ch in stat["channels"]}

def thread_ids():
    return {t["name"]: t["id"] for r in rt.rpc("framework_get_reactors")["reactors"]
            for t in r["lw_threads"]}

def until(condition, what, timeout=30):
    # Wait for a state, not for a time: AssertionError if it never comes.
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "never: " + what
        time.sleep(0.001)
"""

EPILOGUE = """
rt.stop()
print("FOUND " + json.dumps(found))
"""


def _run(spdk: Any, body: str) -> dict[str, Any]:
    result = run_python(PRELUDE + body + EPILOGUE, timeout=240)
    lines = [line for line in result.stdout.splitlines() if line.startswith("FOUND ")]
    assert result.returncode == 0 and lines, (result.stdout[-3000:], result.stderr[-3000:])
    found: dict[str, Any] = json.loads(lines[-1][len("FOUND ") :])
    return found


def len_offsets() -> int:
    """How many distinct offsets the spreading test's jobs use (as its script computes)."""
    return len(dict.fromkeys(((i * 2654435761) % 4096) * 4096 for i in range(4000)))


def test_io_spreads_over_both_reactors_and_keeps_its_data(spdk: Any) -> None:
    found = _run(
        spdk,
        """
create_malloc(rt, "Both", 32 << 20, 512)
create_malloc(rt, "One", 32 << 20, 512)
dev = rt.open_bdev("Both", queue_depth=16)
found["lanes"] = dev.lanes
reactors = rt.rpc("framework_get_reactors")["reactors"]
found["placement"] = {t["name"]: r["lcore"] for r in reactors for t in r["lw_threads"]}
ids = thread_ids()
found["ids"] = [ids["app_thread"], ids["pyspdk_io_1"]]

# read_many/write_many: one job split over both lanes, every byte checked. The lanes
# claim chunks as they go, so on a plain malloc a lane whose core is busy elsewhere
# may find nothing left; over a 200 us delay bdev each lane holds at most its share
# of the depth, and the job lasts long enough for both to take part.
count, size = 4000, 4096
offsets = [((i * 2654435761) % 4096) * size for i in range(count)]  # below 16 MiB
offsets = list(dict.fromkeys(offsets))
data = os.urandom(len(offsets) * size)
latency = {f"{k}_{rw}_latency": 200 for k in ("avg", "p99") for rw in ("read", "write")}
rt.rpc("bdev_delay_create", {"base_bdev_name": "Both", "name": "SlowBoth", **latency})
slow = rt.open_bdev("SlowBoth", queue_depth=16)
found["slow_lanes"] = slow.lanes
slow.write_many(offsets, size, data, depth=32)
back = slow.read_many(offsets, size, depth=32)
into = bytearray(len(data))  # plain memory: bounce buffers copied on both cores
slow.read_many(offsets, size, into, depth=32)
found["many_equal"] = back == data and into == data
found["after_many"] = channel_ops("SlowBoth")
slow.close()
rt.rpc("bdev_delay_delete", {"name": "SlowBoth"})

# Blocking calls from 6 threads, each on its own blocks, checked.
errors = []
def worker(k):
    try:
        for i in range(300):
            offset = (k * 300 + i) * 512 + (16 << 20)
            payload = bytes([k, i % 256]) * 256
            dev.write(offset, payload)
            if dev.read(offset, 512) != payload:
                errors.append((k, i))
    except Exception as exc:
        errors.append(repr(exc))
threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
for t in threads: t.start()
for t in threads: t.join()
found["blocking_errors"] = errors
found["after_blocking"] = channel_ops("Both")

# Futures and asyncio over the lanes, in order per thread.
futures = [dev.read_async(o, size) for o in offsets[:200]]
found["futures_equal"] = b"".join(f.result() for f in futures) == data[: 200 * size]
async def aread_all():
    return await asyncio.gather(*(dev.aread(o, size) for o in offsets[:200]))
found["asyncio_equal"] = b"".join(asyncio.run(aread_all())) == data[: 200 * size]

# lanes=1 keeps a device on the app thread.
with rt.open_bdev("One", lanes=1) as one:
    found["one_lanes"] = one.lanes
    one.read_many([i * size for i in range(256)], size, depth=32)
    found["one_ops"] = channel_ops("One")
dev.close()
""",
    )
    app, other = found["ids"]
    assert found["lanes"] == 2
    assert found["placement"]["app_thread"] == 0 and found["placement"]["pyspdk_io_1"] == 1
    assert found["many_equal"] and found["futures_equal"] and found["asyncio_equal"]
    assert found["blocking_errors"] == []
    assert found["slow_lanes"] == 2
    many = {int(k): v for k, v in found["after_many"].items()}
    # The jobs' I/Os, written and read on both cores.
    assert sum(many.values()) >= 3 * len_offsets(), many  # and what examine read
    assert many.get(app, 0) > 1000 and many.get(other, 0) > 1000, many
    blocking = {int(k): v for k, v in found["after_blocking"].items()}
    # Each calling thread keeps to one lane: the 6 threads' 3600 I/Os on both cores.
    assert blocking[app] >= 1800 and blocking[other] >= 1800, blocking
    assert found["one_lanes"] == 1
    one_ops = {int(k): v for k, v in found["one_ops"].items() if v}
    assert one_ops == {app: 256}, one_ops


def test_removal_and_close_with_io_in_flight_on_both_reactors(spdk: Any) -> None:
    """A bdev deleted under a split job ends every I/O, then refuses with ENODEV; stop is clean."""
    found = _run(
        spdk,
        """
create_malloc(rt, "Base", 32 << 20, 512)
latency = {f"{k}_{rw}_latency": 20000 for k in ("avg", "p99") for rw in ("read", "write")}
rt.rpc("bdev_delay_create", {"base_bdev_name": "Base", "name": "Slow", **latency})
dev = rt.open_bdev("Slow")
found["lanes"] = dev.lanes
outcome = {}
def many():
    try:
        dev.read_many([i * 4096 for i in range(2000)], 4096, depth=8)
        outcome["many"] = "completed"
    except IoError as exc:
        outcome["many"] = [exc.errno, len(exc.failed)]
    except Exception as exc:
        outcome["many"] = repr(exc)
job = threading.Thread(target=many)
job.start()
# Both lanes' shares of the job (depth 8: 4 each) in SPDK's hands.
until(lambda: lib.pyspdk_dev_inflight(dev._dev) == 8, "8 reads in flight")
rt.rpc("bdev_delay_delete", {"name": "Slow"})
job.join(30)
found["job_joined"] = not job.is_alive()
found["many"] = outcome.get("many")
try:
    dev.read(0, 512)
    found["after"] = "read worked"
except IoError as exc:
    found["after"] = exc.errno
dev.close()
found["bdevs"] = [b["name"] for b in rt.rpc("bdev_get_bdevs")]

# A device closed while a split job still runs on both lanes.
rt.rpc("bdev_delay_create", {"base_bdev_name": "Base", "name": "Slow2", **latency})
dev2 = rt.open_bdev("Slow2")
def many2():
    try:
        dev2.read_many([i * 4096 for i in range(400)], 4096, depth=4)
        outcome["many2"] = "completed"
    except (IoError, RuntimeStateError) as exc:
        outcome["many2"] = type(exc).__name__
job = threading.Thread(target=many2)
job.start()
until(lambda: lib.pyspdk_dev_inflight(dev2._dev) == 4, "4 reads in flight")
rt.stop()  # the runtime's stop closes dev2 under the running job
job.join(30)
found["stopped_job_joined"] = not job.is_alive()
found["many2"] = outcome.get("many2")
""",
    )
    assert found["lanes"] == 2
    assert found["job_joined"]
    many = found["many"]
    assert isinstance(many, list), many
    # Ended by the removal: ENODEV, with most of the 2000 reads (20 ms each, 8 at a
    # time) never done.
    assert many[0] == 19 and 1000 < many[1] <= 2000, many
    assert found["after"] == 19  # ENODEV
    assert "Slow" not in found["bdevs"] and "Base" in found["bdevs"]
    # Stopping the runtime under a split job ends it (cancelled), and nothing hangs.
    assert found["stopped_job_joined"] and found["many2"] == "IoError", found["many2"]


def test_an_open_interrupted_while_its_lanes_start_closes_the_device(spdk: Any) -> None:
    # Ctrl-C lands in the wait for the second lane's channel (time.monotonic is
    # its first call there): open_bdev raises it and leaves nothing open.
    found = _run(
        spdk,
        """
import time
import pyspdk_sys.bdev.device as device_module
from pyspdk_sys import lib
create_malloc(rt, "M0", 1 << 20, 512)

class InterruptOnce:
    armed = True
    def monotonic(self):
        if self.armed:
            self.armed = False
            raise KeyboardInterrupt
        return time.monotonic()
    def __getattr__(self, name):
        return getattr(time, name)

before = lib.pyspdk_io_open_count()
device_module.time = InterruptOnce()
try:
    rt.open_bdev("M0")
except KeyboardInterrupt:
    found["interrupted"] = True
finally:
    device_module.time = time
found["left_open"] = lib.pyspdk_io_open_count() - before
with rt.open_bdev("M0") as dev:
    found["lanes"] = dev.lanes
    dev.write(0, b"x" * 512)
    found["readable"] = dev.read(0, 512) == b"x" * 512
""",
    )
    assert found == {"interrupted": True, "left_open": 0, "lanes": 2, "readable": True}


def test_concurrent_jobs_of_different_depths_on_both_reactors_keep_their_data(spdk: Any) -> None:
    """Jobs of several depths at once on a two-lane device, each part with its own slots.

    A lane hands the slots of its last job to the next one when they are
    big enough (and not too big to keep), and allocates otherwise, from
    whichever thread posts it: every I/O of every job must still land where
    it was asked to.
    """
    found = _run(
        spdk,
        """
create_malloc(rt, "Jobs", 16 << 20, 512)
dev = rt.open_bdev("Jobs", queue_depth=256)
found["lanes"] = dev.lanes
size, per_thread = 512, 2304
errors = []
def worker(k, depths):
    try:
        base = k * per_thread * size
        for round_no, depth in enumerate(depths):
            offsets = [base + ((i * 37 + round_no) % per_thread) * size for i in range(per_thread)]
            stamps = (bytes([k, round_no, i % 256, i // 256]) for i in range(per_thread))
            data = b"".join(stamp * (size // 4) for stamp in stamps)
            dev.write_many(offsets, size, data, depth=depth)
            back = dev.read_many(offsets, size, depth=depth)
            if back != data:
                errors.append((k, round_no, depth))
    except Exception as exc:
        errors.append(repr(exc))
# A page holds 46 slots: a part of 100 (depth 200) needs a bigger block, and
# one of 1152 (depth 2304) one too big for its lane to keep.
plans = [[1, 200, 2, 33], [64, 3, 2304, 8], [7, 7, 120, 1], [2, 200, 64, 2304]]
threads = [threading.Thread(target=worker, args=(k, plan)) for k, plan in enumerate(plans)]
for t in threads: t.start()
for t in threads: t.join()
found["errors"] = errors
dev.close()
""",
    )
    assert found == {"lanes": 2, "errors": []}
