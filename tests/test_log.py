"""SPDK's and DPDK's log in Python's logging (pyspdk_sys.log).

In this process (the session runtime): a failed call's exception carries
what SPDK logged meanwhile, and handlers receive the messages under the
component's logger with the level mapped. In fresh interpreters: what
reaches stderr (nothing by default, SPDK's lines when asked), a failed
start's log, and a flood while the Python reader is stopped, which must drop
and count instead of blocking SPDK's thread.
"""

from __future__ import annotations

import logging
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from processes import TEST_ARGS, new_process

from conftest import run_python, spdk_tool

# A line of SPDK's own layout, or DPDK's "PREFIX: text" of the lines tests make.
SPDK_FORMATTED = re.compile(
    r"\*(ERROR|WARNING|NOTICE|INFO|DEBUG)\*|^\[\d{4}-\d\d-\d\d |^(EAL|USER1|TELEMETRY): ",
    re.MULTILINE,
)


class Collect(logging.Handler):
    """Keeps every record it is handed."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def wait_for(self, text: str, count: int = 1, timeout: float = 10.0) -> list[logging.LogRecord]:
        """The records whose message contains `text`, once there are `count` of them."""
        deadline = time.monotonic() + timeout
        while True:
            found = [r for r in list(self.records) if text in r.getMessage()]
            if len(found) >= count or time.monotonic() >= deadline:
                return found
            time.sleep(0.01)


@pytest.fixture
def collect() -> Iterator[Collect]:
    handler = Collect()
    top = logging.getLogger("pyspdk_sys")
    level = top.level
    top.addHandler(handler)
    top.setLevel(logging.DEBUG)
    yield handler
    top.removeHandler(handler)
    top.setLevel(level)


@pytest.fixture
def print_level(spdk: Any, runtime: Any) -> Iterator[None]:
    """SPDK hands every level to the ring during the test; WARNING again after."""
    lib = spdk.lib
    before = lib.spdk_log_get_print_level()
    lib.spdk_log_set_print_level(lib.SPDK_LOG_DEBUG)
    yield
    lib.spdk_log_set_print_level(before)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # bound, never listening, then closed


# ------------------------------------------------------------------ exc.log


def test_failed_nvme_tcp_attach_names_the_refused_connection(runtime: Any) -> None:
    from pyspdk_sys import nvmf
    from pyspdk_sys.errors import RpcError

    port = _closed_port()
    with pytest.raises(ConnectionRefusedError) as caught:
        nvmf.attach(
            runtime,
            "LogRefused",
            "127.0.0.1",
            port,
            "nqn.2016-06.io.spdk:log-refused",
            ctrlr_loss_timeout_sec=0,
            reconnect_delay_sec=0,
            fast_io_fail_timeout_sec=0,
        )
    lines = [str(line) for line in caught.value.log]  # type: ignore[attr-defined]
    assert any("Connection refused" in line or "err = 111" in line for line in lines), lines
    assert any(f"trsvcid={port}" in line for line in lines), lines
    # The RPC underneath carries its own log too.
    cause = caught.value.__cause__
    assert isinstance(cause, RpcError) and cause.log  # type: ignore[attr-defined]


def test_failed_rpc_carries_only_what_it_logged(spdk: Any, runtime: Any) -> None:
    from pyspdk_sys import log
    from pyspdk_sys.errors import RpcError

    runtime.call(spdk.lib.pyspdk_log_emit, spdk.lib.PYSPDK_LOG_SPDK, 0, 1, b"before-the-call")
    with pytest.raises(RpcError) as caught:
        runtime.rpc("bdev_malloc_create", {"name": "LogBad", "num_blocks": 0, "block_size": 512})
    lines = caught.value.log  # type: ignore[attr-defined]
    assert all(isinstance(line, log.LogLine) for line in lines)
    texts = [line.message for line in lines]
    assert any("num_blocks must be greater than 0" in text for text in texts), texts
    assert not any("before-the-call" in text for text in texts), texts
    assert lines[0].file == "bdev_malloc.c" and lines[0].level == "ERROR"
    # A call that succeeds carries nothing, and capture() used alone does the same.
    with pytest.raises(ValueError) as raised, log.capture() as capture:
        runtime.call(spdk.lib.pyspdk_log_emit, spdk.lib.PYSPDK_LOG_SPDK, 0, 2, b"in-block")
        raise ValueError("after logging")
    assert [line.message for line in raised.value.log] == ["in-block 0", "in-block 1"]  # type: ignore[attr-defined]
    assert [line.seq for line in capture.lines()] == [
        line.seq
        for line in raised.value.log  # type: ignore[attr-defined]
    ]
    assert log.Capture().lines() == []


# ------------------------------------------------------------------ logging


def test_handlers_receive_spdk_messages_with_mapped_levels(
    spdk: Any, runtime: Any, collect: Collect, print_level: None
) -> None:
    from pyspdk_sys import log

    lib = spdk.lib
    expected = {
        lib.SPDK_LOG_ERROR: (logging.ERROR, "ERROR"),
        lib.SPDK_LOG_WARN: (logging.WARNING, "WARNING"),
        lib.SPDK_LOG_NOTICE: (log.NOTICE, "NOTICE"),
        lib.SPDK_LOG_INFO: (logging.INFO, "INFO"),
        lib.SPDK_LOG_DEBUG: (logging.DEBUG, "DEBUG"),
    }
    for level in expected:
        runtime.call(
            lib.pyspdk_log_emit, lib.PYSPDK_LOG_SPDK, level, 1, f"spdk-level-{level}".encode()
        )
    for level, (levelno, name) in expected.items():
        (record,) = collect.wait_for(f"spdk-level-{level} 0")
        assert record.name == f"{log.SPDK_LOGGER}.log"  # the shim's log.c
        assert (record.levelno, record.levelname, record.spdk_level) == (levelno, name, name)  # type: ignore[attr-defined]
        assert record.spdk_thread == "app_thread"  # type: ignore[attr-defined]
        assert record.filename == "log.c" and record.funcName == "pyspdk_log_emit"

    # A message of SPDK's own, under its component's logger.
    with pytest.raises(Exception, match="Invalid argument"):
        runtime.rpc("bdev_malloc_create", {"name": "LogBad2", "num_blocks": 0, "block_size": 512})
    (record,) = collect.wait_for("num_blocks must be greater than 0")
    assert record.name == "pyspdk_sys.spdk.bdev_malloc" and record.levelno == logging.ERROR


def test_handlers_receive_dpdk_messages_with_mapped_levels(
    spdk: Any, runtime: Any, collect: Collect
) -> None:
    from pyspdk_sys import log

    lib = spdk.lib
    # DPDK's ERR, WARNING, NOTICE (SPDK lets user1 log from NOTICE up).
    expected = {
        4: (logging.ERROR, "ERR"),
        5: (logging.WARNING, "WARNING"),
        6: (log.NOTICE, "NOTICE"),
    }
    for level in expected:
        runtime.call(
            lib.pyspdk_log_emit, lib.PYSPDK_LOG_DPDK, level, 1, f"dpdk-level-{level}".encode()
        )
    for level, (levelno, name) in expected.items():
        (record,) = collect.wait_for(f"dpdk-level-{level} 0")
        assert record.name == f"{log.DPDK_LOGGER}.user1"
        assert record.getMessage() == f"USER1: dpdk-level-{level} 0"
        assert (record.levelno, record.spdk_level) == (levelno, name)  # type: ignore[attr-defined]


def test_messages_above_the_print_level_are_left_out(
    spdk: Any, runtime: Any, collect: Collect
) -> None:
    lib = spdk.lib
    assert lib.spdk_log_get_print_level() == lib.SPDK_LOG_WARN  # log_level="WARNING"
    runtime.call(lib.pyspdk_log_emit, lib.PYSPDK_LOG_SPDK, lib.SPDK_LOG_NOTICE, 1, b"too-low")
    runtime.call(lib.pyspdk_log_emit, lib.PYSPDK_LOG_SPDK, lib.SPDK_LOG_WARN, 1, b"high-enough")
    assert collect.wait_for("high-enough")
    assert not [r for r in collect.records if "too-low" in r.getMessage()]


def test_emit_dates_the_record_when_spdk_logged(collect: Collect) -> None:
    from pyspdk_sys import log

    line = log.LogLine("spdk", "NOTICE", log.NOTICE, "bdev", "hello", "bdev.c", 7, "f", time=1.5)
    log.emit(line, spdk_process="p")
    (record,) = collect.wait_for("hello")
    assert record.name == "pyspdk_sys.spdk.bdev" and record.levelname == "NOTICE"
    assert record.created == 1.5 and record.lineno == 7 and record.spdk_process == "p"  # type: ignore[attr-defined]
    assert str(line) == "bdev.c:7:f: *NOTICE*: hello"


def test_parse_line_reads_spdk_and_dpdk_lines(spdk: Any) -> None:
    from pyspdk_sys import log

    line = log.parse_line(
        "[2026-12-07 13:10:10.337522] nvme_tcp.c:2269:nvme_tcp_sock_connect_cb_fn: "
        "*ERROR*: sock connection error -111 (Connection refused)\n"
    )
    assert line is not None
    assert (line.logger_name, line.levelno, line.line, line.function) == (
        "pyspdk_sys.spdk.nvme_tcp",
        logging.ERROR,
        2269,
        "nvme_tcp_sock_connect_cb_fn",
    )
    assert line.message == "sock connection error -111 (Connection refused)"
    assert abs(line.time - time.mktime((2026, 12, 7, 13, 10, 10, 0, 0, -1)) - 0.337522) < 1e-3
    padded = log.parse_line("[2026-12-07 13:10:10.1] sock.c: 521:connect_poll: *WARNING*: x")
    assert padded is not None and (padded.line, padded.level) == (521, "WARNING")
    dpdk = log.parse_line("EAL: Detected CPU lcores: 2")
    assert dpdk is not None and dpdk.logger_name == "pyspdk_sys.dpdk.eal"
    other = log.parse_line(
        "Starting SPDK v26.01 git sha1 2ef883ef96 / DPDK 25.11.0 initialization..."
    )
    assert other is not None and other.logger_name == "pyspdk_sys.spdk"
    assert log.parse_line("  \n") is None
    # SPDK leaves the newline out of some messages: the next stamp starts a new one.
    joined = (
        "[2026-12-07 13:17:35.1] a.c: 1:f: *ERROR*: no newline"
        "[2026-12-07 13:17:35.2] b.c: 2:g: *NOTICE*: next\n"
    )
    assert [str(line) for line in log.parse_lines(joined)] == [
        "a.c:1:f: *ERROR*: no newline",
        "b.c:2:g: *NOTICE*: next",
    ]


# ------------------------------------------------------------------ stderr

_PROGRAM = """
import sys, time
from pyspdk_sys import lib, log
from cores import reactor_mask
from pyspdk_sys.runtime import Runtime
with Runtime(cpu_mask=reactor_mask(){options}) as rt:
    print("stderr", log.stderr_enabled(), flush=True)
    try:
        rt.rpc("bdev_malloc_create", {{"name": "m", "num_blocks": 0, "block_size": 512}})
    except Exception as exc:
        print("refused:", exc, flush=True)
    rt.call(lib.pyspdk_log_emit, lib.PYSPDK_LOG_DPDK, 5, 1, b"dpdk-line")
    rt.call(lib.pyspdk_log_emit, lib.PYSPDK_LOG_SPDK, lib.SPDK_LOG_WARN, 1, b"spdk-line")
    {more}
print("dropped", log.dropped())
"""


def test_nothing_reaches_stderr_by_default(spdk: Any) -> None:
    done = run_python(_PROGRAM.format(options="", more="pass"), timeout=120)
    assert done.returncode == 0, done.stderr
    assert "stderr False" in done.stdout and "refused:" in done.stdout
    assert not SPDK_FORMATTED.search(done.stderr), done.stderr
    assert not SPDK_FORMATTED.search(done.stdout), done.stdout
    assert "dropped 0" in done.stdout


def test_stderr_can_be_turned_back_on(spdk: Any) -> None:
    more = (
        "log.set_stderr(False)\n"
        "    rt.call(lib.pyspdk_log_emit, lib.PYSPDK_LOG_SPDK, lib.SPDK_LOG_WARN, 1, b'hidden')\n"
        "    log.set_stderr(True)\n"
        "    rt.call(lib.pyspdk_log_emit, lib.PYSPDK_LOG_SPDK, lib.SPDK_LOG_WARN, 1, b'shown')\n"
    )
    done = run_python(_PROGRAM.format(options=", log_to_stderr=True", more=more), timeout=120)
    assert done.returncode == 0, done.stderr
    assert "stderr True" in done.stdout
    err = done.stderr
    assert re.search(
        r"bdev_malloc\.c:\s*\d+:create_malloc_disk: \*ERROR\*: Disk num_blocks", err
    ), err
    assert "USER1: dpdk-line 0" in err and "*WARNING*: spdk-line 0" in err
    assert "hidden" not in err and "*WARNING*: shown 0" in err
    # DPDK's "'-c <coremask>' option is deprecated" at every start: the cores go as a list.
    assert "deprecated" not in err, err


def test_set_stderr_refuses_what_is_not_a_bool(spdk: Any, runtime: Any) -> None:
    from pyspdk_sys import log

    with pytest.raises(TypeError, match="enabled must be a bool"):
        log.set_stderr(1)  # type: ignore[arg-type]
    assert log.stderr_enabled() is False  # the session runtime's default


# ------------------------------------------------------------------ start, flood


def test_failed_start_carries_its_log(spdk: Any) -> None:
    code = """
from cores import reactor_mask
from pyspdk_sys.errors import StartError
from pyspdk_sys.runtime import Runtime
config = {"subsystems": [{"subsystem": "bdev", "config": [{"method": "bdev_malloc_create",
          "params": {"name": "m", "num_blocks": 0, "block_size": 512}}]}]}
try:
    Runtime(cpu_mask=reactor_mask(), config=config).start()
except StartError as exc:
    print("LOG", [str(line) for line in exc.log])
    print("MESSAGE", str(exc).replace("\\n", " | "))
"""
    done = run_python(code, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Disk num_blocks must be greater than 0" in done.stdout.split("MESSAGE")[0], done.stdout
    # The message quotes SPDK's errors too: stderr no longer shows them.
    assert "Failed to load subsystems" in done.stdout.split("MESSAGE")[1], done.stdout
    assert not SPDK_FORMATTED.search(done.stderr), done.stderr


def test_a_flood_drops_and_counts_and_never_blocks_spdk(spdk: Any) -> None:
    """The reader is held while SPDK's thread logs far more than the ring holds."""
    code = """
import logging, time
from cores import reactor_mask
from pyspdk_sys import lib, log
from pyspdk_sys.runtime import Runtime
got = []
class Keep(logging.Handler):
    def emit(self, record):
        got.append(record.getMessage())
logging.getLogger("pyspdk_sys.spdk").addHandler(Keep())
with Runtime(cpu_mask=reactor_mask()) as rt:
    log.Capture().lines()  # what the start logged is read
    before = log.dropped()
    with log._READER._take:  # the reader cannot take anything meanwhile
        rt.call(lib.pyspdk_log_emit, lib.PYSPDK_LOG_SPDK, lib.SPDK_LOG_ERROR, 20000,
                b"flood", timeout=20)
        lost = log.dropped() - before
    log.Capture().lines()
    kept = [m for m in got if m.startswith("flood ")]
    assert kept == [f"flood {i}" for i in range(len(kept))], kept[:5]
    print("RESULT", lost, len(kept), lib.PYSPDK_LOG_RING_SLOTS)
    rt.call(lib.pyspdk_log_emit, lib.PYSPDK_LOG_SPDK, lib.SPDK_LOG_ERROR, 1, b"after")
    time.sleep(0.5)
    print("AFTER", "after 0" in got)
"""
    done = run_python(code, timeout=120)
    assert done.returncode == 0, done.stderr
    lost, kept, slots = map(int, done.stdout.split("RESULT")[1].split()[:3])
    assert lost + kept == 20000 and kept <= slots and lost >= 20000 - slots, done.stdout
    assert "AFTER True" in done.stdout  # the reader goes on once let go


# ------------------------------------------------------------------ SpdkProcess


def test_spdk_process_feeds_its_log_to_the_loggers(spdk: Any, collect: Collect) -> None:
    from pyspdk_sys.errors import RpcError

    spdk_tgt = spdk_tool("spdk_tgt")
    with new_process(spdk_tgt, name="logfeed", args=TEST_ARGS, forward_log=True) as proc:
        assert proc.forward_log
        with pytest.raises(RpcError) as caught:
            proc.rpc("bdev_malloc_create", {"name": "m", "num_blocks": 0, "block_size": 512})
        texts = [str(line) for line in caught.value.log]  # type: ignore[attr-defined]
        assert any("num_blocks must be greater than 0" in text for text in texts), texts
        found = collect.wait_for("num_blocks must be greater than 0")
    assert found, [r.getMessage() for r in collect.records]
    record = found[0]
    assert record.name == "pyspdk_sys.spdk.bdev_malloc" and record.levelno == logging.ERROR
    assert record.spdk_process == "logfeed"  # type: ignore[attr-defined]
    # Its start banner came through too, without DPDK's complaint about a core mask.
    messages = [r.getMessage() for r in collect.records]
    assert any("Starting SPDK" in text for text in messages), messages
    assert not any("deprecated" in text for text in messages), messages


def test_a_process_without_forwarding_feeds_nothing(
    spdk: Any, collect: Collect, tmp_path: Path
) -> None:
    spdk_tgt = spdk_tool("spdk_tgt")
    with new_process(spdk_tgt, name="lognofeed", args=TEST_ARGS) as proc:
        assert not proc.forward_log
        proc.rpc("spdk_get_version")
    assert not [r for r in collect.records if getattr(r, "spdk_process", None) == "lognofeed"]


def test_a_process_that_fails_to_start_carries_its_log(spdk: Any) -> None:
    from pyspdk_sys.errors import ProcessStartError

    config = {
        "subsystems": [
            {
                "subsystem": "bdev",
                "config": [
                    {
                        "method": "bdev_malloc_create",
                        "params": {"name": "m", "num_blocks": 0, "block_size": 512},
                    }
                ],
            }
        ]
    }
    spdk_tgt = spdk_tool("spdk_tgt")
    with pytest.raises(ProcessStartError) as caught:
        new_process(spdk_tgt, name="logstart", config=config).start(timeout=60)
    lines = caught.value.log  # type: ignore[attr-defined]
    found = [line for line in lines if "num_blocks must be greater than 0" in line.message]
    assert found and found[0].logger_name == "pyspdk_sys.spdk.bdev_malloc", lines
    assert not any(line.message.startswith("pyspdk_sys: starting") for line in lines)
