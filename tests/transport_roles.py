"""Roles the cross-process transport tests run in their own interpreters.

`python -c "import transport_roles as r; r.main()" ROLE JSON`: a target serves
and prints one READY line, then waits for its stdin to close; an initiator
runs its workload and prints one RESULT line of JSON.
"""

from __future__ import annotations

import json
import os
import random
import sys
import threading
import time
from typing import Any

from cores import reactor_mask
from timing import wake_lateness

BLOCK = 4096


def _ready(**info: Any) -> None:
    print("READY " + json.dumps(info), flush=True)


def _result(**info: Any) -> None:
    print("RESULT " + json.dumps(info), flush=True)


def serve(args: dict[str, Any]) -> None:
    """A Python target: a malloc bdev served over vhost-blk or NVMe/TCP."""
    from pyspdk_sys import nvmf, vhost
    from pyspdk_sys.bdev.manage import create_malloc
    from pyspdk_sys.runtime import Runtime

    kind = args["kind"]
    with Runtime(
        cpu_mask=args.get("cpu_mask", reactor_mask(0)),
        hugepages=kind == "vhost" and args.get("target_hugepages", True),
        mem_size_mb=args.get("mem_size_mb", 1024),
        name="pyspdk-target",
        rpc_socket=args.get("rpc_socket"),
    ) as rt:
        create_malloc(rt, "Target0", args.get("size", 64 << 20), 512)
        if kind == "vhost":
            controller = vhost.create_blk_controller(rt, args["socket"], "Target0")
            _ready(socket=controller.socket, name=controller.name)
        else:
            nvmf.serve(rt, args["nqn"], ["Target0"], address="127.0.0.1", port=args["port"])
            _ready(nqn=args["nqn"], port=args["port"])
        for line in sys.stdin:  # until the test closes our stdin
            if line.strip() == "delete":
                rt.rpc("bdev_malloc_delete", {"name": "Target0"})
                _ready(phase="deleted")
        if kind == "vhost":
            # The helper's delete, as a program would tidy up before stop().
            vhost.delete_controller(rt, args["socket"])
    if kind == "vhost":
        # SPDK stopped cleanly. Exit without C destructors: DPDK's vhost event
        # thread (dpdk-vhost-evt) never stops, and SPDK's env destructor
        # unmaps the memory it reads (rte_eal_cleanup), a SIGSEGV in about
        # half of the exits on v26.01. See vhost.py, "Process exit".
        sys.stdout.flush()
        os._exit(0)


def _attach(rt: Any, args: dict[str, Any]) -> str:
    from pyspdk_sys import nvmf, vhost

    if args["kind"] == "vhost":
        (name,) = vhost.attach(rt, "Init0", args["socket"], queues=args.get("queues", 9))
    else:
        (name,) = nvmf.attach(
            rt,
            "Init0",
            "127.0.0.1",
            args["port"],
            args["nqn"],
            ctrlr_loss_timeout_sec=args.get("loss", 10),
            reconnect_delay_sec=1,
            fast_io_fail_timeout_sec=args.get("fast_fail", 2),
        )
    return str(name)


def _runtime(args: dict[str, Any]) -> Any:
    from pyspdk_sys.runtime import Runtime

    return Runtime(
        cpu_mask=args.get("cpu_mask", reactor_mask(1)),
        hugepages=_runtime_hugepages(args),
        mem_size_mb=args.get("mem_size_mb", 1024),
        name="pyspdk-initiator",
    )


def integrity(args: dict[str, Any]) -> None:
    """8 threads of blocking write/read/compare, then write_many/read_many rounds."""
    import asyncio

    from pyspdk_sys.dma import DmaBuffer

    started = time.perf_counter()
    with _runtime(args) as rt:
        name = _attach(rt, args)
        verified = 0
        mismatches = 0
        with rt.open_bdev(name) as dev:
            blocks = dev.size // BLOCK
            per_thread = blocks // 8
            lock = threading.Lock()
            errors: list[str] = []

            def worker(index: int) -> None:
                nonlocal verified, mismatches
                rng = random.Random(index)
                first = index * per_thread
                good = bad = 0
                try:
                    for _ in range(args["thread_ios"]):
                        offset = (first + rng.randrange(per_thread)) * BLOCK
                        data = rng.randbytes(BLOCK)
                        dev.write(offset, data)
                        if dev.read(offset, BLOCK) == data:
                            good += 1
                        else:
                            bad += 1
                except Exception as exc:  # reported, not swallowed
                    errors.append(repr(exc))
                with lock:
                    verified += good
                    mismatches += bad

            threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            thread_seconds = time.perf_counter() - t0
            thread_verified = verified

            # write_many / read_many over the whole device, in a shuffled order,
            # into bytes, a bytearray and a DmaBuffer in turn.
            rng = random.Random(99)
            order = list(range(blocks))
            t0 = time.perf_counter()
            dma = DmaBuffer(rt, blocks * BLOCK)
            for round_number in range(args["rounds"]):
                rng.shuffle(order)
                offsets = [b * BLOCK for b in order]
                data = os.urandom(blocks * BLOCK)
                dev.write_many(offsets, BLOCK, data, depth=32)
                form = round_number % 3
                if form == 0:
                    got: Any = dev.read_many(offsets, BLOCK, depth=32)
                elif form == 1:
                    got = bytearray(blocks * BLOCK)
                    dev.read_many(offsets, BLOCK, got, depth=32)
                else:
                    dev.read_many(offsets, BLOCK, dma, depth=32)
                    got = bytes(dma.view)
                for i in range(blocks):
                    if got[i * BLOCK : (i + 1) * BLOCK] == data[i * BLOCK : (i + 1) * BLOCK]:
                        verified += 1
                    else:
                        mismatches += 1
            many_seconds = time.perf_counter() - t0

            # futures and asyncio, a few of each
            futures = [dev.write_async(i * BLOCK, bytes([i]) * BLOCK) for i in range(64)]
            for f in futures:
                f.result()
            reads = [dev.read_async(i * BLOCK, BLOCK) for i in range(64)]
            for i, f in enumerate(reads):
                if f.result() == bytes([i]) * BLOCK:
                    verified += 1
                else:
                    mismatches += 1

            async def aio() -> int:
                got = await asyncio.gather(*(dev.aread(i * BLOCK, BLOCK) for i in range(64)))
                return sum(g == bytes([i]) * BLOCK for i, g in enumerate(got))

            good = asyncio.run(aio())
            verified += good
            mismatches += 64 - good
            dma.close()
        _detach(rt, args)
    _result(
        verified=verified,
        thread_verified=thread_verified,
        mismatches=mismatches,
        errors=errors,
        thread_seconds=thread_seconds,
        many_seconds=many_seconds,
        seconds=time.perf_counter() - started,
    )


def _detach(rt: Any, args: dict[str, Any]) -> None:
    from pyspdk_sys import nvmf, vhost

    if args["kind"] == "vhost":
        vhost.detach(rt, "Init0")
    else:
        nvmf.detach(rt, "Init0")


def fault(args: dict[str, Any]) -> None:
    """I/O from 4 threads until the test kills the target; time until every call failed.

    Prints READY once I/O runs, then RESULT when every thread has ended.
    """
    from pyspdk_sys.errors import IoError

    with _runtime(args) as rt:
        name = _attach(rt, args)
        outcome: dict[str, Any] = {"errors": [], "ok_before": 0}
        lock = threading.Lock()
        ended: list[float] = []
        with rt.open_bdev(name, timeout=args.get("io_timeout")) as dev:
            running = threading.Semaphore(0)  # released once by each worker, at its first read

            def worker(index: int) -> None:
                ok = 0
                try:
                    while True:
                        dev.read((index * 7 + ok) % 1024 * BLOCK, BLOCK)
                        ok += 1
                        if ok == 1:
                            running.release()
                except IoError as exc:
                    kind = f"IoError errno={exc.errno}"
                except Exception as exc:
                    kind = f"{type(exc).__name__}: {exc}"
                if ok == 0:
                    running.release()  # failed at once: the test sees it in the errors
                with lock:
                    ended.append(time.monotonic())
                    outcome["errors"].append(kind)
                    outcome["ok_before"] += ok

            threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
            for t in threads:
                t.start()
            for _ in threads:  # every worker has read once (or failed): I/O runs
                if not running.acquire(timeout=60):
                    raise TimeoutError("the workers did not start reading within 60 s")
            # The baseline, with the I/O running: how late a 10 ms timed wait ends here.
            outcome["late"] = wake_lateness()
            _ready()
            line = sys.stdin.readline()  # the test writes the kill time (monotonic)
            killed_at = float(line)
            for t in threads:
                t.join(args.get("join_timeout", 60))
            outcome["hung"] = sum(t.is_alive() for t in threads)
            outcome["seconds_to_last_error"] = max(ended) - killed_at if ended else None
            if args.get("reconnect"):
                # the test restarts the target, then tells us to try again
                _ready(phase="reconnect")
                sys.stdin.readline()
                t0 = time.monotonic()
                deadline = t0 + args["reconnect"]
                resumed = None
                while time.monotonic() < deadline:
                    try:
                        dev.read(0, BLOCK)
                    except IoError:
                        time.sleep(0.2)
                        continue
                    resumed = time.monotonic() - t0
                    break
                outcome["resumed_after"] = resumed
            if args.get("reattach_socket"):
                # The dead controller's requests never complete, so neither can
                # its detach: a second controller goes beside it.
                from pyspdk_sys import vhost

                _ready(phase="reattach")
                sys.stdin.readline()
                (again,) = vhost.attach(rt, "Init1", args["reattach_socket"], queues=2)
                with rt.open_bdev(again, timeout=10) as dev2:
                    outcome["reattached_read"] = len(dev2.read(0, BLOCK))
            if outcome["hung"] or args.get("exit_at_once") or args.get("reattach_socket"):
                # I/O that SPDK never completes keeps the device (and the
                # runtime's stop) waiting: report and leave without stopping.
                _result(**outcome)
                os._exit(3 if outcome["hung"] else 0)
    _result(**outcome)


def attach_io(args: dict[str, Any]) -> None:
    """vhost.attach (with its probe) from a Python runtime, then a write/read round
    trip on every bdev it made. With "hugepages": false, what attach raised and how
    long leaving the runtime took."""
    from pyspdk_sys import vhost

    started = time.monotonic()
    outcome: dict[str, Any] = {"error": None, "verified": {}}
    with _runtime({"kind": "vhost", **args}) as rt:
        try:
            names = vhost.attach(
                rt, "Init0", args["socket"], dev_type=args.get("dev_type", "blk"), queues=2
            )
        except Exception as exc:
            outcome["error"] = f"{type(exc).__name__}: {exc}"
            outcome["bdevs"] = [b["name"] for b in rt.rpc("bdev_get_bdevs")]
            names = []
        for name in names:
            with rt.open_bdev(name, timeout=10) as dev:
                data = os.urandom(64 * BLOCK)
                dev.write(0, data)
                outcome["verified"][name] = dev.read(0, len(data)) == data
                outcome.setdefault("sizes", {})[name] = dev.size
        if names:
            vhost.detach(rt, "Init0")
        left_at = time.monotonic()
    outcome["seconds_to_leave"] = time.monotonic() - left_at
    outcome["seconds"] = time.monotonic() - started
    _result(**outcome)


def _runtime_hugepages(args: dict[str, Any]) -> bool:
    return bool(args["kind"] == "vhost" and args.get("hugepages", True))


def main() -> None:
    role, raw = sys.argv[1], sys.argv[2]
    roles = {"serve": serve, "integrity": integrity, "fault": fault, "attach_io": attach_io}
    roles[role](json.loads(raw))


if __name__ == "__main__":
    main()
