"""Integrity soak: every I/O form at once, with devices closed and reopened under them and
Ctrl-C landing at random, over self-describing blocks.

Each actor owns its blocks; each block says which block it is, who wrote it
and which generation. A read must show the last generation its writer saw
complete, or one whose write was cut short (it may or may not have landed).
The count of verified I/Os is PYSPDK_SOAK_IOS (CI runs a bounded count; the
full run is 10**6). DMA memory must end where it started.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from conftest import run_python

SOAK = r"""
import asyncio, errno, faulthandler, json, os, random, signal, struct, sys, threading, time
from pyspdk_sys.runtime import Runtime
from cores import reactor_mask
from pyspdk_sys.errors import IoError, RuntimeStateError
from pyspdk_sys.dma import dma_allocated_bytes

TARGET = int(sys.argv[1])
# A hang shows where every thread waits, before the test's own timeout kills us.
faulthandler.dump_traceback_later(float(sys.argv[2]), exit=True)
BLOCK = 4096
PER_ACTOR = 64
ACTORS = 12          # 8 blocking threads, futures, asyncio, batches, the main thread
config = {"subsystems": [{"subsystem": "bdev", "config": [
    {"method": "bdev_malloc_create",
     "params": {"name": "M0", "num_blocks": ACTORS * PER_ACTOR * 8, "block_size": 512}}]}]}
rt = Runtime(cpu_mask=reactor_mask(), config=config).start()
start_dma = dma_allocated_bytes(rt)
lock = threading.Lock()
current = {"dev": rt.open_bdev("M0", queue_depth=64)}
verified = {}        # form -> reads checked
errors = {}          # "form: kind" -> how many I/Os ended so
total = [0]
reopened = [0]
mismatches = []
done = threading.Event()
# What a device closed under a call may give that call: refused (closed), or
# cancelled while queued. KeyboardInterrupt reaches the main thread only; a
# TimeoutError would be a request that never came back.
INTERRUPTED = (RuntimeStateError, IoError, KeyboardInterrupt, TimeoutError)

def dev():
    return current["dev"]

def block(actor, index, generation):
    return struct.pack("<QQQ", actor, index, generation) * (BLOCK // 24) + bytes(BLOCK % 24)

class Owner:
    def __init__(self, actor):
        self.actor = actor
        self.gen = {i: {0} for i in range(PER_ACTOR)}   # allowed generations
        self.next = 1
    def offset(self, i):
        return (self.actor * PER_ACTOR + i) * BLOCK
    def check(self, i, data):
        actor, index, generation = struct.unpack_from("<QQQ", data)
        if data == bytes(BLOCK) and 0 in self.gen[i]:
            return
        if actor != self.actor or index != i or generation not in self.gen[i]:
            mismatches.append((self.actor, i, actor, index, generation, sorted(self.gen[i])))
    def begin_write(self, i):
        g = self.next; self.next += 1
        self.gen[i].add(g)       # until it completes it may or may not land
        return g
    def end_write(self, i, g):
        self.gen[i] = {g}

def count(form, n=1):
    with lock:
        verified[form] = verified.get(form, 0) + n
        total[0] += n
        if total[0] >= TARGET:
            done.set()

def failed(form, exc):
    if isinstance(exc, IoError):
        kind = "IoError " + errno.errorcode.get(exc.errno, str(exc.errno))
    else:
        kind = type(exc).__name__
    with lock:
        errors[f"{form}: {kind}"] = errors.get(f"{form}: {kind}", 0) + 1

def blocking_actor(actor):
    o = Owner(actor); rnd = random.Random(actor)
    while not done.is_set():
        i = rnd.randrange(PER_ACTOR)
        try:
            if rnd.random() < 0.5:
                g = o.begin_write(i)
                data = block(actor, i, g)
                form = rnd.randrange(3)
                if form == 0: dev().write(o.offset(i), data)
                elif form == 1: dev().writev(o.offset(i), [data[:1024], bytearray(data[1024:])])
                else: dev().write(o.offset(i), memoryview(data))
                o.end_write(i, g)
            else:
                form = rnd.randrange(3)
                if form == 0: data = dev().read(o.offset(i), BLOCK)
                elif form == 1:
                    data = bytearray(BLOCK); dev().read_into(o.offset(i), data)
                else:
                    a, b = bytearray(2048), bytearray(2048)
                    dev().readv(o.offset(i), [a, b]); data = bytes(a + b)
                o.check(i, data); count("blocking")
        except INTERRUPTED as exc:
            failed("blocking", exc)
            time.sleep(0.001)

def futures_actor(actor):
    o = Owner(actor); rnd = random.Random(actor)
    while not done.is_set():
        picks = rnd.sample(range(PER_ACTOR), 16)
        try:
            writes = {i: o.begin_write(i) for i in picks[:8]}
            fs = [(i, dev().write_async(o.offset(i), block(actor, i, g)))
                  for i, g in writes.items()]
            for i, f in fs:
                try:
                    f.result(10); o.end_write(i, writes[i])
                except INTERRUPTED as exc:
                    failed("futures", exc)
            rs = [(i, dev().read_async(o.offset(i), BLOCK)) for i in picks[8:]]
            for i, f in rs:
                try:
                    o.check(i, f.result(10)); count("futures")
                except INTERRUPTED as exc:
                    failed("futures", exc)
        except INTERRUPTED as exc:
            failed("futures", exc)
            time.sleep(0.001)

def asyncio_actor(actor):
    o = Owner(actor); rnd = random.Random(actor)
    async def one(i):
        try:
            if rnd.random() < 0.5:
                g = o.begin_write(i)
                await dev().awrite(o.offset(i), block(actor, i, g)); o.end_write(i, g)
            else:
                o.check(i, await dev().aread(o.offset(i), BLOCK)); count("asyncio")
        except INTERRUPTED as exc:
            failed("asyncio", exc)
    async def main():
        while not done.is_set():
            picks = rnd.sample(range(PER_ACTOR), 16)
            await asyncio.gather(*(one(i) for i in picks))
    asyncio.run(main())

def batch_actor(actor):
    o = Owner(actor); rnd = random.Random(actor)
    while not done.is_set():
        picks = rnd.sample(range(PER_ACTOR), 16)
        form = "write_many"
        try:
            if rnd.random() < 0.5:
                gens = [o.begin_write(i) for i in picks]
                payload = b"".join(block(actor, i, g) for i, g in zip(picks, gens))
                dev().write_many([o.offset(i) for i in picks], BLOCK, payload, depth=8)
                for i, g in zip(picks, gens): o.end_write(i, g)
            elif rnd.random() < 0.5:
                form = "read_many"
                data = dev().read_many([o.offset(i) for i in picks], BLOCK, depth=8)
                for k, i in enumerate(picks): o.check(i, data[k * BLOCK:(k + 1) * BLOCK])
                count("read_many", len(picks))
            else:
                form = "run_batch"
                res = dev().run_batch([("read", o.offset(i), BLOCK) for i in picks],
                                      return_exceptions=True)
                for i, r in zip(picks, res):
                    if isinstance(r, BaseException):
                        failed("run_batch", r)
                    else:
                        o.check(i, r); count("run_batch")
        except INTERRUPTED as exc:
            failed(form, exc)
            time.sleep(0.001)

def chaos():
    rnd = random.Random(99)
    while not done.wait(rnd.uniform(0.02, 0.1)):
        old = current["dev"]
        current["dev"] = rt.open_bdev("M0", queue_depth=rnd.choice([1, 8, 64]))
        reopened[0] += 1
        try:
            old.close()
        except Exception as exc:
            mismatches.append(("close", repr(exc)))

crashed = []
def guarded(target, *args):
    def run():
        try:
            target(*args)
        except BaseException as exc:
            crashed.append(f"{target.__name__}{args}: {exc!r}")
            done.set()
    return threading.Thread(target=run)

threads = [guarded(blocking_actor, a) for a in range(8)]
threads += [guarded(futures_actor, 8), guarded(asyncio_actor, 9), guarded(batch_actor, 10),
            guarded(chaos)]
for t in threads: t.start()
# The main thread is an actor too, and Ctrl-C lands on it at random.
signal.signal(signal.SIGINT, signal.default_int_handler)
o = Owner(11); rnd = random.Random(11); interrupts = 0
def poke():
    while not done.wait(rnd.uniform(0.01, 0.05)):
        os.kill(os.getpid(), signal.SIGINT)
threading.Thread(target=poke, daemon=True).start()
started = time.monotonic()
while not done.is_set():
    try:
        try:
            i = rnd.randrange(PER_ACTOR)
            if rnd.random() < 0.5:
                g = o.begin_write(i); dev().write(o.offset(i), block(11, i, g)); o.end_write(i, g)
            else:
                o.check(i, dev().read(o.offset(i), BLOCK)); count("main")
        except KeyboardInterrupt:
            interrupts += 1
        except INTERRUPTED as exc:
            failed("main", exc)
    except KeyboardInterrupt:
        interrupts += 1   # it landed in a handler
signal.signal(signal.SIGINT, signal.SIG_IGN)
for t in threads: t.join()
elapsed = time.monotonic() - started
current["dev"].close()
leaked = dma_allocated_bytes(rt) - start_dma
rt.stop()
print(json.dumps({"verified": verified, "total": total[0], "errors": errors,
                  "reopened": reopened[0], "crashed": crashed, "mismatches": mismatches[:5],
                  "mismatch_count": len(mismatches), "leaked": leaked,
                  "interrupts": interrupts, "seconds": round(elapsed, 1)}))
"""


FORMS = ("blocking", "futures", "asyncio", "read_many", "run_batch", "main")
# How an I/O may end when its device is closed under it: refused, or cancelled
# while it waited in the device's queue. Nothing else: no EIO, no timeout.
EXPECTED_ERRORS = ("RuntimeStateError", "IoError ECANCELED")


@pytest.mark.soak
def test_integrity_soak(spdk: Any) -> None:
    target = int(os.environ.get("PYSPDK_SOAK_IOS", "50000"))
    timeout = max(300, target / 500)
    result = run_python(
        f"import sys; sys.argv = ['soak', '{target}', '{timeout - 30}']\n" + SOAK, timeout=timeout
    )
    assert result.returncode == 0, result.stderr[-12000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    print("soak:", report)
    assert report["crashed"] == []
    assert report["mismatch_count"] == 0, report["mismatches"]
    # Every form checked reads of its own, and together at least the target.
    assert set(report["verified"]) == set(FORMS), report["verified"]
    assert all(n > 0 for n in report["verified"].values()), report["verified"]
    assert sum(report["verified"].values()) == report["total"] >= target
    # The chaos happened, and what it did to the I/O is only what a close may do.
    assert report["reopened"] > 0 and report["interrupts"] > 0
    unexpected = {
        key: n for key, n in report["errors"].items() if key.split(": ")[1] not in EXPECTED_ERRORS
    }
    assert unexpected == {}, report["errors"]
    assert report["leaked"] == 0
