"""The Python side of the benchmark, one SPDK runtime per process (SPDK starts once).

Run by run.py, never by hand: `pyside.py io|calls|idle`, with a JSON request on
stdin, prints one JSON line. `io` runs block I/O cells, `calls` times calls
through pyspdk_sys.lib, ctypes and the Python layer, `idle` reads the resident
memory of an idle runtime.
"""

from __future__ import annotations

import array
import asyncio
import concurrent.futures
import ctypes
import functools
import itertools
import json
import os
import random
import sys
import threading
import time
import timeit
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from harness import (
    BDEVS,
    IO_SIZE,
    MEM_SIZE_MB,
    NUM_BLOCKS,
    bdev_config,
    measured,
    memory_kib,
    package_fingerprint,
    percentiles_us,
    qd1_samples,
    qd1_samples_async,
    waiting_config,
)

import pyspdk_sys
from pyspdk_sys import ffi, lib
from pyspdk_sys.bdev import BlockDevice, DmaBuffer
from pyspdk_sys.runtime import Runtime

CPU_MASK = "0x1"
_OFFSETS = 8192


def pin_off_reactor() -> list[int]:
    """Keep this thread (and threads it starts) off the reactor's core, if a core is left."""
    mask = int(CPU_MASK, 16)
    reactor = {cpu for cpu in range(mask.bit_length()) if mask >> cpu & 1}
    others = sorted(set(os.sched_getaffinity(0)) - reactor)
    if others:
        os.sched_setaffinity(0, others)
    return others


def offsets(seed: int) -> list[int]:
    """Random block-aligned byte offsets over the device."""
    rng = random.Random(seed)
    return [rng.randrange(NUM_BLOCKS) * IO_SIZE for _ in range(_OFFSETS)]


# ---------------------------------------------------------------- I/O forms
#
# Each form runs for `warmup` seconds, then for `seconds`, and returns the
# operations completed in the timed part and its length.


def _one_op(dev: BlockDevice, op: str, data: bytes) -> Callable[[int], Any]:
    if op == "read":
        read = dev.read
        return lambda offset: read(offset, IO_SIZE)
    write = dev.write
    return lambda offset: write(offset, data)


def form_blocking(
    dev: BlockDevice, op: str, qd: int, seconds: float, seed: int
) -> tuple[int, float]:
    """One thread, one blocking call at a time."""
    call = _one_op(dev, op, random.randbytes(IO_SIZE))
    source = itertools.cycle(offsets(seed))
    count = 0
    start = time.perf_counter()
    end = start + seconds
    while time.perf_counter() < end:
        call(next(source))
        count += 1
    return count, time.perf_counter() - start


def form_threads(
    dev: BlockDevice, op: str, qd: int, seconds: float, seed: int
) -> tuple[int, float]:
    """`qd` threads, each with one blocking call outstanding."""
    counts = [0] * qd
    stop = threading.Event()
    ready = threading.Barrier(qd + 1)

    def worker(index: int) -> None:
        call = _one_op(dev, op, random.randbytes(IO_SIZE))
        source = itertools.cycle(offsets(seed + index))
        done = 0
        ready.wait()
        while not stop.is_set():
            call(next(source))
            done += 1
        counts[index] = done

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(qd)]
    for thread in threads:
        thread.start()
    ready.wait()
    start = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    return sum(counts), time.perf_counter() - start


def form_futures(
    dev: BlockDevice, op: str, qd: int, seconds: float, seed: int
) -> tuple[int, float]:
    """`qd` futures in flight: wait for the first done, resubmit as many."""
    data = random.randbytes(IO_SIZE)

    def submit(offset: int) -> concurrent.futures.Future[Any]:
        if op == "read":
            return dev.read_async(offset, IO_SIZE)
        return dev.write_async(offset, data)

    source = itertools.cycle(offsets(seed))
    return _futures_in_flight(lambda: submit(next(source)), qd, seconds)


def _futures_in_flight(
    submit: Callable[[], concurrent.futures.Future[Any]], qd: int, seconds: float
) -> tuple[int, float]:
    """Keep `qd` futures in flight for `seconds`: wait for the first done, resubmit as many."""
    wait = concurrent.futures.wait
    first = concurrent.futures.FIRST_COMPLETED
    count = 0
    start = time.perf_counter()
    end = start + seconds
    pending = {submit() for _ in range(qd)}
    while True:
        done, pending = wait(pending, return_when=first)
        for future in done:
            future.result()
        count += len(done)
        if time.perf_counter() >= end:
            break
        for _ in range(len(done)):
            pending.add(submit())
    elapsed = time.perf_counter() - start
    wait(pending)
    return count, elapsed


def form_asyncio(
    dev: BlockDevice, op: str, qd: int, seconds: float, seed: int
) -> tuple[int, float]:
    """`qd` asyncio tasks, each awaiting one I/O at a time, gathered."""
    data = random.randbytes(IO_SIZE)
    sources = [itertools.cycle(offsets(seed + i)) for i in range(qd)]

    async def worker(source: Iterator[int], end: float) -> int:
        done = 0
        if op == "read":
            while time.perf_counter() < end:
                await dev.aread(next(source), IO_SIZE)
                done += 1
        else:
            while time.perf_counter() < end:
                await dev.awrite(next(source), data)
                done += 1
        return done

    async def main() -> tuple[int, float]:
        start = time.perf_counter()
        counts = await asyncio.gather(*(worker(s, start + seconds) for s in sources))
        return sum(counts), time.perf_counter() - start

    return _LOOP.run_until_complete(main())


def form_batch(dev: BlockDevice, op: str, qd: int, seconds: float, seed: int) -> tuple[int, float]:
    """BlockDevice.run_batch with `qd` operations per call, again and again."""
    data = random.randbytes(IO_SIZE)
    all_offsets = offsets(seed)
    batches = []
    for first in range(0, len(all_offsets) - qd + 1, qd):
        chunk = all_offsets[first : first + qd]
        if op == "read":
            batches.append([("read", o, IO_SIZE) for o in chunk])
        else:
            batches.append([("write", o, data) for o in chunk])
    source = itertools.cycle(batches)
    run_batch = dev.run_batch
    count = 0
    start = time.perf_counter()
    end = start + seconds
    while time.perf_counter() < end:
        run_batch(next(source))
        count += qd
    return count, time.perf_counter() - start


_MANY_CALL = 1024  # I/Os per read_many/write_many call
_MANY_POOL = 1 << 17  # random offsets drawn from, so the data is not cache-hot


def form_many(
    dev: BlockDevice, op: str, qd: int, seconds: float, seed: int, call: int = _MANY_CALL
) -> tuple[int, float]:
    """read_many/write_many: `call` (1024) random I/Os per call, `qd` of them in flight.

    The throughput path: offsets are fresh on every call and spread over the
    whole device, as bdevperf's are; the data goes to one reused DMA buffer.
    """
    rng = random.Random(seed)
    pool = array.array("Q", (rng.randrange(NUM_BLOCKS) * IO_SIZE for _ in range(_MANY_POOL)))
    buffer = DmaBuffer(dev.runtime, call * IO_SIZE)
    buffer.view[:] = random.randbytes(call * IO_SIZE)
    run = dev.read_many if op == "read" else dev.write_many
    count = 0
    first = 0
    start = time.perf_counter()
    end = start + seconds
    try:
        while time.perf_counter() < end:
            run(pool[first : first + call], IO_SIZE, buffer, depth=qd)
            count += call
            first = (first + call) % _MANY_POOL
        return count, time.perf_counter() - start
    finally:
        buffer.close()


def form_amany(dev: BlockDevice, op: str, qd: int, seconds: float, seed: int) -> tuple[int, float]:
    """form_many's calls awaited from asyncio: aread_many/awrite_many, one after another."""
    rng = random.Random(seed)
    pool = array.array("Q", (rng.randrange(NUM_BLOCKS) * IO_SIZE for _ in range(_MANY_POOL)))
    buffer = DmaBuffer(dev.runtime, _MANY_CALL * IO_SIZE)
    buffer.view[:] = random.randbytes(_MANY_CALL * IO_SIZE)
    run = dev.aread_many if op == "read" else dev.awrite_many

    async def main() -> tuple[int, float]:
        count = 0
        first = 0
        start = time.perf_counter()
        end = start + seconds
        while time.perf_counter() < end:
            await run(pool[first : first + _MANY_CALL], IO_SIZE, buffer, depth=qd)
            count += _MANY_CALL
            first = (first + _MANY_CALL) % _MANY_POOL
        return count, time.perf_counter() - start

    try:
        return _LOOP.run_until_complete(main())
    finally:
        buffer.close()


# ---------------------------------------------------------------- CPython's floors
#
# No I/O at all: what the same waiting costs in CPython itself, measured in the
# same process and run as the forms above (the device argument is unused).


def floor_asyncio(
    dev: BlockDevice, op: str, qd: int, seconds: float, seed: int
) -> tuple[int, float]:
    """`qd` tasks, each awaiting a bare future resolved by call_soon: an asyncio round trip."""

    async def worker(end: float) -> int:
        loop = asyncio.get_running_loop()
        done = 0
        while time.perf_counter() < end:
            future = loop.create_future()
            loop.call_soon(future.set_result, None)
            await future
            done += 1
        return done

    async def main() -> tuple[int, float]:
        start = time.perf_counter()
        counts = await asyncio.gather(*(worker(start + seconds) for _ in range(qd)))
        return sum(counts), time.perf_counter() - start

    return _LOOP.run_until_complete(main())


def floor_futures(
    dev: BlockDevice, op: str, qd: int, seconds: float, seed: int
) -> tuple[int, float]:
    """form_futures' loop over futures that another thread resolves: no I/O in between."""
    import queue

    work: queue.SimpleQueue[concurrent.futures.Future[Any] | None] = queue.SimpleQueue()

    def completer() -> None:
        while (future := work.get()) is not None:
            future.set_result(None)

    thread = threading.Thread(target=completer, daemon=True)
    thread.start()

    def submit() -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        future.set_running_or_notify_cancel()
        work.put(future)
        return future

    try:
        return _futures_in_flight(submit, qd, seconds)
    finally:
        work.put(None)
        thread.join()


FORMS: dict[str, Callable[[BlockDevice, str, int, float, int], tuple[int, float]]] = {
    "blocking": form_blocking,
    "threads": form_threads,
    "futures": form_futures,
    "asyncio": form_asyncio,
    "batch": form_batch,
    "many": form_many,
    # Larger calls: the caller's turn-around between calls costs less of each.
    "many_16k": functools.partial(form_many, call=16384),
    "amany": form_amany,
    "floor_asyncio": floor_asyncio,
    "floor_futures": floor_futures,
}
_LOOP = asyncio.new_event_loop()


def _measure_cell(
    form: Callable[[BlockDevice, str, int, float, int], tuple[int, float]],
    dev: BlockDevice,
    op: str,
    qd: int,
    warmup: float,
    seconds: float,
    seed: int,
) -> tuple[tuple[int, float], float]:
    if warmup > 0:
        form(dev, op, qd, warmup, seed)
    ops, elapsed = form(dev, op, qd, seconds, seed)
    return (ops, elapsed), elapsed


def run_io(request: dict[str, Any]) -> dict[str, Any]:
    """Start one runtime with every bdev, run each cell once, in order."""
    seconds = float(request["seconds"])
    warmup = float(request["warmup"])
    runtime = Runtime(mem_size_mb=MEM_SIZE_MB, cpu_mask=CPU_MASK, config=bdev_config(BDEVS))
    runtime.start()
    pinned = pin_off_reactor() if request.get("pin", True) else []
    devices = {kind: runtime.open_bdev(name) for kind, name in BDEVS.items()}
    results = []
    for index, cell in enumerate(request["cells"]):
        form = FORMS[cell["form"]]
        dev = devices[cell["bdev"]]

        measure = functools.partial(
            _measure_cell, form, dev, cell["op"], cell["qd"], warmup, seconds, index
        )
        (ops, elapsed), foreign, attempts = measured(measure)
        results.append(
            {
                **cell,
                "ops": ops,
                "seconds": elapsed,
                "iops": ops / elapsed,
                "foreign_cpu_s": foreign,
                "attempts": attempts,
            }
        )
    memory = memory_kib()
    for dev in devices.values():
        dev.close()
    runtime.stop()
    return {"cells": results, "memory_kib_after_io": memory, "pinned_to": pinned}


# ---------------------------------------------------------------- call overhead


def _time_it(timer: timeit.Timer, number: int) -> tuple[float, float]:
    elapsed = timer.timeit(number)
    return elapsed, elapsed


def run_calls(request: dict[str, Any]) -> dict[str, Any]:
    """ns per call, for each way of calling, `repeats` times interleaved."""
    number = int(request["number"])
    repeats = int(request["repeats"])
    runtime = Runtime(
        mem_size_mb=MEM_SIZE_MB, cpu_mask=CPU_MASK, config=bdev_config(["null"])
    ).start()
    if request.get("pin", True):
        pin_off_reactor()
    name = BDEVS["null"].encode()
    bdev = runtime.call(lambda: lib.spdk_bdev_get_by_name(name))
    if bdev == ffi.NULL:
        raise SystemExit(f"no bdev {name!r}")
    dev = runtime.open_bdev(BDEVS["null"])

    cdll = ctypes.CDLL(pyspdk_sys.LIBRARY_PATH)
    c_block_size = cdll.spdk_bdev_get_block_size
    c_block_size.argtypes = [ctypes.c_void_p]
    c_block_size.restype = ctypes.c_uint32
    c_ticks = cdll.spdk_get_ticks
    c_ticks.argtypes = []
    c_ticks.restype = ctypes.c_uint64
    c_bdev = ctypes.c_void_p(int(ffi.cast("uintptr_t", bdev)))

    expected = lib.spdk_bdev_get_block_size(bdev)
    if c_block_size(c_bdev) != expected or dev.block_size != expected:
        raise SystemExit("lib, ctypes and BlockDevice disagree on the block size")

    names = {
        "lib": lib,
        "cdll": cdll,
        "dev": dev,
        "bdev": bdev,
        "c_bdev": c_bdev,
        "f_block_size": lib.spdk_bdev_get_block_size,
        "f_ticks": lib.spdk_get_ticks,
        "c_block_size": c_block_size,
        "c_ticks": c_ticks,
    }
    # Every name is bound to a local in timeit's setup, so each statement
    # costs the call itself plus the loop (measured alone as "empty").
    setup = "; ".join(f"{key} = _g[{key!r}]" for key in names)
    statements = {
        "empty": "pass",
        "lib_block_size": "f_block_size(bdev)",
        "ctypes_block_size": "c_block_size(c_bdev)",
        "lib_ticks": "f_ticks()",
        "ctypes_ticks": "c_ticks()",
        "accessor_block_size": "dev.block_size",
        "lib_attr_block_size": "lib.spdk_bdev_get_block_size(bdev)",
        "ctypes_attr_block_size": "cdll.spdk_bdev_get_block_size(c_bdev)",
    }
    timers = {
        key: timeit.Timer(stmt, setup=setup, globals={"_g": names})
        for key, stmt in statements.items()
    }
    for timer in timers.values():
        timer.timeit(number // 10)
    samples: dict[str, list[float]] = {key: [] for key in statements}
    disturbed_samples = 0
    for _ in range(repeats):
        for key, timer in timers.items():
            elapsed, _foreign, attempts = measured(functools.partial(_time_it, timer, number))
            disturbed_samples += attempts - 1
            samples[key].append(elapsed / number * 1e9)
    dev.close()
    runtime.stop()
    return {"ns_per_call": samples, "number": number, "retries": disturbed_samples}


# ---------------------------------------------------------------- QD1 latency


def run_latency(request: dict[str, Any]) -> dict[str, Any]:
    """Per-I/O latency at QD1 of each form (malloc randread): percentiles and quantiles."""
    count = int(request["count"])
    runtime = Runtime(mem_size_mb=MEM_SIZE_MB, cpu_mask=CPU_MASK, config=bdev_config(["malloc"]))
    runtime.start()
    pin_off_reactor()
    dev = runtime.open_bdev(BDEVS["malloc"])
    source = offsets(7)

    def blocking(offset: int) -> None:
        dev.read(offset, IO_SIZE)

    def futures(offset: int) -> None:
        dev.read_async(offset, IO_SIZE).result()

    def batch(offset: int) -> None:
        dev.run_batch([("read", offset, IO_SIZE)])

    one_aread: Callable[[int], Awaitable[bytes]] = functools.partial(dev.aread, length=IO_SIZE)

    forms = {
        "blocking": qd1_samples(blocking, source, count),
        "futures": qd1_samples(futures, source, count),
        "asyncio": _LOOP.run_until_complete(qd1_samples_async(one_aread, source, count)),
        "batch": qd1_samples(batch, source, count),
    }
    dev.close()
    runtime.stop()
    return {"forms": {form: percentiles_us(samples) for form, samples in forms.items()}}


# ---------------------------------------------------------------- waiting policies

WAIT_POLICIES: dict[str, float | None] = {"adaptive": None, "spin 50 us": 50.0, "futex": 0.0}
"""BlockDevice(spin_us=...): the default that adapts, a fixed spin, and sleeping at once."""


def python_cpu_seconds() -> float:
    """CPU seconds of this process (ended threads too) less those of SPDK's reactors."""
    tick = os.sysconf("SC_CLK_TCK")
    times = os.times()
    reactors = 0.0
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/stat") as stat:
                text = stat.read()
        except OSError:
            continue  # the thread has ended
        if text[text.index("(") + 1 : text.rindex(")")].startswith("reactor_"):
            fields = text.rpartition(")")[2].split()
            reactors += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return times.user + times.system - reactors


def _measure_waiting(
    form: Callable[[BlockDevice, str, int, float, int], tuple[int, float]],
    dev: BlockDevice,
    qd: int,
    warmup: float,
    seconds: float,
    seed: int,
) -> tuple[tuple[int, float, float], float]:
    """Reads of one cell after its warm-up: (ops, seconds, Python CPU seconds), seconds."""
    if warmup > 0:
        form(dev, "read", qd, warmup, seed)
    cpu = python_cpu_seconds()
    ops, elapsed = form(dev, "read", qd, seconds, seed)
    return (ops, elapsed, python_cpu_seconds() - cpu), elapsed


def run_waiting(request: dict[str, Any]) -> dict[str, Any]:
    """Each waiting policy on a fast (malloc) and a slow (delay) bdev: IOPS and Python CPU."""
    seconds = float(request["seconds"])
    warmup = float(request["warmup"])
    runtime = Runtime(mem_size_mb=MEM_SIZE_MB, cpu_mask=CPU_MASK, config=waiting_config())
    runtime.start()
    pinned = pin_off_reactor()
    names = {"malloc": BDEVS["malloc"], "slow": "Delay0"}
    results = []
    for index, cell in enumerate(request["cells"]):
        dev = runtime.open_bdev(names[cell["bdev"]], spin_us=WAIT_POLICIES[cell["policy"]])
        measure = functools.partial(
            _measure_waiting, FORMS[cell["form"]], dev, cell["qd"], warmup, seconds, index
        )
        (ops, elapsed, cpu), foreign, attempts = measured(measure)
        dev.close()
        results.append(
            {
                **cell,
                "ops": ops,
                "seconds": elapsed,
                "iops": ops / elapsed,
                "python_cpu_us_per_io": cpu / ops * 1e6 if ops else None,
                "foreign_cpu_s": foreign,
                "attempts": attempts,
            }
        )
    runtime.stop()
    return {"cells": results, "pinned_to": pinned}


# ---------------------------------------------------------------- more than one reactor

REACTORS_MASK = "0x3"


def run_reactors(request: dict[str, Any]) -> dict[str, Any]:
    """read_many and blocking threads with a reactor on each of two cores.

    Every core polls, so Python is not pinned: its threads share the cores with
    the reactors (and, adaptive waits seeing that, sleep instead of spinning).
    Each cell runs on a device with a lane per core and on one kept to the
    app thread's core (lanes=1), for the speed-up.
    """
    seconds = float(request["seconds"])
    warmup = float(request["warmup"])
    runtime = Runtime(
        mem_size_mb=MEM_SIZE_MB, cpu_mask=REACTORS_MASK, config=bdev_config(BDEVS)
    ).start()
    results = []
    for index, cell in enumerate(request["cells"]):
        dev = runtime.open_bdev(BDEVS[cell["bdev"]], lanes=cell["lanes"])
        measure = functools.partial(
            _measure_cell, FORMS[cell["form"]], dev, "read", cell["qd"], warmup, seconds, index
        )
        (ops, elapsed), foreign, attempts = measured(measure)
        results.append(
            {
                **cell,
                "lanes_used": dev.lanes,
                "ops": ops,
                "seconds": elapsed,
                "iops": ops / elapsed,
                "foreign_cpu_s": foreign,
                "attempts": attempts,
            }
        )
        dev.close()
    runtime.stop()
    return {"cells": results, "cpu_mask": REACTORS_MASK}


# ---------------------------------------------------------------- idle memory


def run_idle(request: dict[str, Any]) -> dict[str, Any]:
    """Resident memory of an idle runtime (default mem_size, no_huge)."""
    config = bdev_config(request["bdevs"]) if request["bdevs"] else None
    runtime = Runtime(mem_size_mb=MEM_SIZE_MB, cpu_mask=CPU_MASK, config=config).start()
    time.sleep(float(request["settle"]))
    memory = memory_kib()
    runtime.stop()
    return memory


def main() -> None:
    """Dispatch on the sub-command; the request comes as JSON on stdin."""
    command = sys.argv[1]
    request = json.loads(sys.stdin.read() or "{}")
    handlers = {
        "io": run_io,
        "calls": run_calls,
        "idle": run_idle,
        "latency": run_latency,
        "waiting": run_waiting,
        "reactors": run_reactors,
    }
    fingerprint = package_fingerprint()  # of the code this process has just imported
    result = handlers[command](request)
    result["fingerprint"] = fingerprint
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
