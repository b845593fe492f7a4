"""SPDK's bdevperf as the reference: one process per bdev, tests driven over JSON-RPC.

bdevperf starts with -z (wait for tests) and an RPC socket; each
`perform_tests` call sets queue depth, workload and time, runs the test and
answers with the same figures bdevperf prints in its "Total" line, as JSON
({"results": [{"job", "workload", "queue_depth", "iops", ...}]}), so nothing
is scraped from its human-readable output. One start serves every test, and
the first test of each process (slower: first touch of memory) is discarded.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from harness import (
    BDEVS,
    IO_SIZE,
    MEM_SIZE_MB,
    bdev_config,
    histogram_percentiles_us,
    measured,
    memory_kib,
)


class BdevperfError(RuntimeError):
    """bdevperf failed to start or to run a test."""


class Bdevperf:
    """One bdevperf process on one bdev kind ("malloc" or "null"), on the cores of cpu_mask.

    With several cores, -C gives each core a job on the bdev, and a test's IOPS
    are the sum of the cores'.
    """

    def __init__(
        self,
        path: str,
        kind: str,
        workdir: Path,
        cpu_mask: str = "0x1",
        *,
        config: dict[str, Any] | None = None,
        bdev_name: str | None = None,
        args: tuple[str, ...] = (),
    ) -> None:
        """config: a JSON config creating the bdev named bdev_name (default: the kind's
        from bdev_config); args: more command-line arguments (--interrupt-mode)."""
        self.path = path
        self.kind = kind
        self.bdev_config = config if config is not None else bdev_config([kind])
        self.bdev_name = bdev_name or BDEVS[kind]
        self.args = args
        self.workdir = workdir
        self.cpu_mask = cpu_mask
        self.cores = bin(int(cpu_mask, 16)).count("1")
        self.socket = str(workdir / f"bdevperf-{kind}-{os.getpid()}.sock")
        self.config = workdir / f"bdevperf-{kind}.json"
        self.log = workdir / f"bdevperf-{kind}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._ids = 0

    def __enter__(self) -> Bdevperf:
        self.config.write_text(json.dumps(self.bdev_config))
        command = [
            self.path,
            "--no-huge",
            "-s",
            str(MEM_SIZE_MB),
            "-m",
            self.cpu_mask,
            *(["-C"] if self.cores > 1 else []),
            "--disable-cpumask-locks",
            *self.args,
            "--json",
            str(self.config),
            "-r",
            self.socket,
            "-z",
            "-q",
            "1",
            "-o",
            str(IO_SIZE),
            "-w",
            "randread",
            "-t",
            "1",
        ]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        self._wait_ready(60.0)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop bdevperf (SIGTERM, as SPDK apps expect), killing it if it hangs."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        for path in (self.socket, self.socket + ".lock"):
            Path(path).unlink(missing_ok=True)

    def _tail(self) -> str:
        try:
            lines = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-12:])

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise BdevperfError(
                    f"bdevperf exited with {self.proc.returncode} at start:\n{self._tail()}"
                )
            try:
                self.call("framework_wait_init", None, timeout=10)
                return
            except (FileNotFoundError, ConnectionRefusedError):
                time.sleep(0.05)
        raise BdevperfError(f"bdevperf's RPC socket did not answer in {timeout} s")

    def call(self, method: str, params: dict[str, Any] | None, timeout: float = 120.0) -> Any:
        """One JSON-RPC call over the Unix socket; its result, or BdevperfError."""
        self._ids += 1
        request: dict[str, Any] = {"jsonrpc": "2.0", "id": self._ids, "method": method}
        if params is not None:
            request["params"] = params
        decoder = json.JSONDecoder()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(self.socket)
            sock.sendall(json.dumps(request).encode())
            received = b""
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    raise BdevperfError(f"bdevperf closed the RPC connection during {method}")
                received += chunk
                try:
                    reply, _ = decoder.raw_decode(received.decode())
                    break
                except ValueError:
                    continue
        if "error" in reply:
            raise BdevperfError(f"{method} failed: {reply['error']}\n{self._tail()}")
        return reply["result"]

    def run(self, workload: str, queue_depth: int, seconds: int) -> float:
        """Run one test; bdevperf's IOPS for it."""
        result = self.call(
            "perform_tests",
            {
                "workload_type": workload,
                "queue_depth": queue_depth,
                "io_size": str(IO_SIZE),
                "time_in_sec": seconds,
            },
            timeout=seconds + 60,
        )
        jobs = result["results"]
        if len(jobs) != self.cores:
            raise BdevperfError(f"expected {self.cores} job(s), bdevperf ran {len(jobs)}: {jobs}")
        for job in jobs:
            if job.get("queue_depth") != queue_depth or job.get("workload") != workload:
                raise BdevperfError(f"bdevperf ran {job}, not {workload} at depth {queue_depth}")
            if job.get("io_failed"):
                raise BdevperfError(f"bdevperf reported failed I/O: {job}")
        return float(sum(job["iops"] for job in jobs))

    def run_sampling_memory(
        self, workload: str, queue_depth: int, seconds: int
    ) -> tuple[float, dict[str, int]]:
        """Run one test and read bdevperf's memory half way through it."""
        assert self.proc is not None
        pid = self.proc.pid
        sample: dict[str, int] = {}
        timer = threading.Timer(seconds / 2, lambda: sample.update(memory_kib(pid)))
        timer.start()
        try:
            iops = self.run(workload, queue_depth, seconds)
        finally:
            timer.cancel()
            timer.join()
        return iops, sample

    def timed_run(
        self, workload: str, queue_depth: int, seconds: int, sample_memory: bool
    ) -> tuple[tuple[float, dict[str, int]], float]:
        """Run one test: (IOPS, memory sampled during it or {}), and the wall time."""
        start = time.perf_counter()
        if sample_memory:
            outcome = self.run_sampling_memory(workload, queue_depth, seconds)
        else:
            outcome = self.run(workload, queue_depth, seconds), {}
        return outcome, time.perf_counter() - start

    def latency(self, seconds: int) -> dict[str, Any]:
        """A randread QD1 test with the bdev's latency histogram on: its percentiles."""
        name = self.bdev_name
        self.call("bdev_enable_histogram", {"name": name, "enable": True})
        try:
            # The counts live in the test's I/O channels, which go when it ends:
            # read them near its end, from a second connection.
            jobs: list[Any] = []
            params = {
                "workload_type": "randread",
                "queue_depth": 1,
                "io_size": str(IO_SIZE),
                "time_in_sec": seconds + 1,
            }
            test = threading.Thread(
                target=lambda: jobs.append(
                    self.call("perform_tests", params, timeout=seconds + 60)["results"][0]
                )
            )
            test.start()
            time.sleep(seconds + 0.5)
            reply = self.call("bdev_get_histogram", {"name": name})
            test.join()
            figures = histogram_percentiles_us(reply)
            # bdevperf's own end-to-end mean per I/O, beside the bdev layer's histogram.
            figures["mean"] = float(jobs[0]["avg_latency_us"]) if jobs else None
            return figures
        finally:
            self.call("bdev_enable_histogram", {"name": name, "enable": False})

    def memory(self) -> dict[str, int]:
        """bdevperf's memory now."""
        assert self.proc is not None
        return memory_kib(self.proc.pid)


def run_reference(
    path: str,
    kind: str,
    tests: list[tuple[str, int]],
    seconds: int,
    sample_memory: bool,
    cpu_mask: str = "0x1",
) -> dict[str, Any]:
    """Start bdevperf on `kind`, warm it up, run every (workload, qd) test once."""
    with (
        tempfile.TemporaryDirectory(prefix="pyspdk-bench-") as workdir,
        Bdevperf(path, kind, Path(workdir), cpu_mask) as perf,
    ):
        idle = perf.memory()
        perf.run("randread", 32, 1)  # warm-up, discarded
        results = []
        running: dict[str, int] = {}
        assert perf.proc is not None
        for workload, qd in tests:
            sample = sample_memory and (workload, qd) == ("randread", 32)
            measure = functools.partial(perf.timed_run, workload, qd, seconds, sample)
            (iops, memory), foreign, attempts = measured(measure, [perf.proc.pid])
            running = memory or running
            results.append(
                {
                    "bdev": kind,
                    "workload": workload,
                    "qd": qd,
                    "iops": iops,
                    "foreign_cpu_s": foreign,
                    "attempts": attempts,
                }
            )
        latency = perf.latency(seconds) if kind == "malloc" and perf.cores == 1 else None
        return {
            "tests": results,
            "memory_idle": idle,
            "memory_running": running,
            "latency": latency,
        }
