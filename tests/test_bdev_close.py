"""close() aborts what SPDK can abort, before it waits for the rest.

A device over a delay bdev that holds every I/O for 5 s: the I/O of each form
(blocking, future, read_many) is in SPDK's hands when close() is called. The
delay bdev supports abort, so close() returns at once and every caller gets
ECANCELED, instead of close() waiting the 5 s out. Each scenario runs in a
fresh interpreter with a deadline.
"""

from __future__ import annotations

import json
from typing import Any

from conftest import run_python

DELAY_S = 5  # how long the delay bdev holds each I/O

SCENARIO = """
import errno, json, threading, time
from pyspdk_sys import lib
from pyspdk_sys.runtime import Runtime
from cores import reactor_mask
from pyspdk_sys.errors import IoError

DELAY_US = DELAY_S * 1_000_000
config = {"subsystems": [{"subsystem": "bdev", "config": [
    {"method": "bdev_malloc_create",
     "params": {"name": "M0", "num_blocks": 16384, "block_size": 512}},
    {"method": "bdev_delay_create",
     "params": {"base_bdev_name": "M0", "name": "Slow", "avg_read_latency": DELAY_US,
                "p99_read_latency": DELAY_US, "avg_write_latency": DELAY_US,
                "p99_write_latency": DELAY_US}}]}]}
outcomes = {}

def record(kind, call):
    try:
        call()
        outcomes[kind] = "ok"
    except IoError as exc:
        outcomes[kind] = errno.errorcode.get(exc.errno, exc.errno)
    except Exception as exc:
        outcomes[kind] = type(exc).__name__

with Runtime(cpu_mask=reactor_mask(), config=config, mem_size_mb=256) as rt:
    dev = rt.open_bdev("Slow", queue_depth=64)
    future = dev.read_async(0, 512)
    threads = [
        threading.Thread(target=record, args=("blocking", lambda: dev.read(512, 512))),
        threading.Thread(target=record, args=("read_many",
                         lambda: dev.read_many([i * 512 for i in range(8)], 512, depth=8))),
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 3
    while lib.pyspdk_dev_inflight(dev._dev) < 10 and time.monotonic() < deadline:
        time.sleep(0.01)
    held = lib.pyspdk_dev_inflight(dev._dev)
    started = time.monotonic()
    dev.close()
    closed_in = time.monotonic() - started
    for thread in threads:
        thread.join(10)
    record("future", lambda: future.result(10))
print(json.dumps({"held": held, "closed_in": closed_in, "outcomes": outcomes}))
"""


def test_close_aborts_what_a_slow_bdev_holds(spdk: Any) -> None:
    result = run_python(f"DELAY_S = {DELAY_S}\n" + SCENARIO, timeout=60)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["held"] == 10  # 1 future + 1 blocking + 8 of the job: all in SPDK's hands
    # Without the abort, close() waits for the delay bdev's 5 s: a correctness bound at
    # half of that (the abort itself takes milliseconds).
    assert report["closed_in"] < DELAY_S / 2, report
    assert report["outcomes"] == {
        "blocking": "ECANCELED",
        "read_many": "ECANCELED",
        "future": "ECANCELED",
    }
