"""SPDK's and DPDK's log in Python's `logging`, and the log of a failed call.

Why a ring and a thread: SPDK logs from its reactors, which must never wait
for the GIL. The C side (_shims/log.c) formats each message into a bounded
ring, dropping and counting what does not fit, and writes an eventfd; one
daemon thread here waits on it and hands the messages to `logging`:

- SPDK's to `pyspdk_sys.spdk.<component>`, the component being the source
  file's name (`pyspdk_sys.spdk.bdev_nvme` for bdev_nvme.c);
- DPDK's to `pyspdk_sys.dpdk.<component>`, from the message's prefix
  (`pyspdk_sys.dpdk.eal` for "EAL: ...").

Levels map to logging's: SPDK's ERROR, WARNING, INFO and DEBUG to theirs,
NOTICE to NOTICE (25, between INFO and WARNING, named on the record only);
DPDK's EMERG, ALERT and CRIT to CRITICAL, ERR to ERROR, and the others alike.
Records carry `spdk_level` (the original name), `spdk_thread` and `spdk_seq`.

Once a Runtime started, nothing of SPDK's or DPDK's reaches stderr unless
asked (Runtime(log_to_stderr=True) or set_stderr(True)). An exception from
a failed RPC or start carries what was logged while the call ran, as `log`
(a list of LogLine), see capture().
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import os
import re
import select
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from ._binding import ffi, lib

__all__ = [
    "DPDK_LOGGER",
    "NOTICE",
    "SPDK_LOGGER",
    "Capture",
    "LogLine",
    "capture",
    "dropped",
    "emit",
    "parse_line",
    "set_stderr",
    "stderr_enabled",
]

SPDK_LOGGER = "pyspdk_sys.spdk"
DPDK_LOGGER = "pyspdk_sys.dpdk"
NOTICE = 25
"""logging level of SPDK's and DPDK's NOTICE messages (between INFO and WARNING)."""

# SPDK's enum spdk_log_level, and DPDK's RTE_LOG_* values: (logging level, name).
_SPDK_LEVELS = {
    0: (logging.ERROR, "ERROR"),
    1: (logging.WARNING, "WARNING"),
    2: (NOTICE, "NOTICE"),
    3: (logging.INFO, "INFO"),
    4: (logging.DEBUG, "DEBUG"),
}
_SPDK_LEVEL_NAMES = {name: number for number, (_, name) in _SPDK_LEVELS.items()}
_DPDK_LEVELS = {
    1: (logging.CRITICAL, "EMERG"),
    2: (logging.CRITICAL, "ALERT"),
    3: (logging.CRITICAL, "CRIT"),
    4: (logging.ERROR, "ERR"),
    5: (logging.WARNING, "WARNING"),
    6: (NOTICE, "NOTICE"),
    7: (logging.INFO, "INFO"),
    8: (logging.DEBUG, "DEBUG"),
}
_DPDK_PREFIX = re.compile(r"([A-Za-z][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*): ")
_BATCH = 64
_HISTORY = 4 * lib.PYSPDK_LOG_RING_SLOTS
_STALL_WAIT = 0.05  # a writer between reserving a slot and filling it


@dataclass(frozen=True)
class LogLine:
    """One message of SPDK's or DPDK's log.

    source: "spdk" or "dpdk"; level: the name its source gives (SPDK's ERROR,
    WARNING, NOTICE, INFO, DEBUG; DPDK's EMERG .. DEBUG); levelno: the logging
    level it maps to; component: the source file's stem (SPDK) or the
    message's prefix (DPDK), lower case, "" when none; file, line, function:
    where SPDK logged it (empty, -1, empty when it did not say); thread: the
    SPDK thread's name, when known; time: seconds since the epoch; seq: its
    place in this process's log (-1 for a line read from another process).
    """

    source: str
    level: str
    levelno: int
    component: str
    message: str
    file: str = ""
    line: int = -1
    function: str = ""
    thread: str = ""
    time: float = 0.0
    seq: int = -1

    @property
    def logger_name(self) -> str:
        """The logger that receives it."""
        base = SPDK_LOGGER if self.source == "spdk" else DPDK_LOGGER
        return f"{base}.{self.component}" if self.component else base

    def __str__(self) -> str:
        if self.source == "spdk" and self.file:
            return f"{self.file}:{self.line}:{self.function}: *{self.level}*: {self.message}"
        return self.message


def _component(text: str) -> str:
    return text.lower()


def _from_record(record: Any) -> LogLine:
    message = ffi.string(record.msg).decode("utf-8", errors="replace").rstrip("\n")
    if record.source == lib.PYSPDK_LOG_SPDK:
        levelno, level = _SPDK_LEVELS.get(record.level, (logging.INFO, str(record.level)))
        file = ffi.string(record.file).decode("utf-8", errors="replace")
        return LogLine(
            source="spdk",
            level=level,
            levelno=levelno,
            component=_component(file.rsplit(".", 1)[0]) if file else "",
            message=message,
            file=file,
            line=record.line,
            function=ffi.string(record.func).decode("utf-8", errors="replace"),
            thread=ffi.string(record.thread).decode("utf-8", errors="replace"),
            time=record.time_ns / 1e9,
            seq=record.seq,
        )
    levelno, level = _DPDK_LEVELS.get(record.level, (logging.INFO, str(record.level)))
    prefix = _DPDK_PREFIX.match(message)
    return LogLine(
        source="dpdk",
        level=level,
        levelno=levelno,
        component=_component(prefix.group(1)) if prefix else "",
        message=message,
        thread=ffi.string(record.thread).decode("utf-8", errors="replace"),
        time=record.time_ns / 1e9,
        seq=record.seq,
    )


def emit(line: LogLine, **extra: Any) -> None:
    """Hand `line` to its logger (a record dated when SPDK logged it).

    `extra` adds attributes to the record (SpdkProcess adds spdk_process).
    """
    logger = logging.getLogger(line.logger_name)
    if not logger.isEnabledFor(line.levelno):
        return
    record = logger.makeRecord(
        logger.name,
        line.levelno,
        line.file or "(unknown file)",
        line.line if line.line >= 0 else 0,
        line.message,
        (),
        None,
        func=line.function or None,
        extra={
            "spdk_level": line.level,
            "spdk_thread": line.thread,
            "spdk_seq": line.seq,
            **extra,
        },
    )
    if line.levelno == NOTICE:
        record.levelname = "NOTICE"
    if line.time:
        record.created = line.time
        record.msecs = (line.time - int(line.time)) * 1000
    logger.handle(record)


# ------------------------------------------------------------------ the reader


class _Reader:
    """Takes records from the ring: the daemon thread, and a capture that needs
    everything up to a point now. One takes at a time (_take); lines reach
    logging in the ring's order (_emit, taken before _take is let go)."""

    def __init__(self) -> None:
        self._take = threading.Lock()
        self._emit = threading.RLock()
        self._buffer: Any = None
        self.taken = 0  # seq of the next record to take
        self.history: collections.deque[LogLine] = collections.deque(maxlen=_HISTORY)
        self.thread: threading.Thread | None = None
        self.started = threading.Lock()

    def start(self) -> None:
        """The thread that drains the ring, once per process."""
        with self.started:
            if self.thread is None:
                self.thread = threading.Thread(target=self._serve, name="pyspdk-log", daemon=True)
                self.thread.start()

    def _serve(self) -> None:
        poller = select.poll()
        poller.register(lib.pyspdk_log_fd(), select.POLLIN)
        while True:
            poller.poll(1000)
            try:
                self.drain()
            except Exception:  # a handler that fails must not end the thread
                logging.getLogger("pyspdk_sys").exception("pyspdk_sys: a log handler failed")

    def drain(self) -> int:
        """Take every record published now and hand each to logging. How many."""
        total = 0
        while True:
            with self._take:
                if self._buffer is None:
                    self._buffer = ffi.new("struct pyspdk_log_record[]", _BATCH)
                count = int(lib.pyspdk_log_take(self._buffer, _BATCH))
                lines = [_from_record(self._buffer[i]) for i in range(count)]
                if lines:
                    self.taken = lines[-1].seq + 1
                    self.history.extend(lines)
                self._emit.acquire()
            try:
                for line in lines:
                    emit(line)
            finally:
                self._emit.release()
            total += count
            if count < _BATCH:
                return total

    def drain_until(self, seq: int) -> None:
        """Drain until every record before `seq` is taken (a writer still
        filling its slot is waited for a moment, not for ever)."""
        deadline = time.monotonic() + _STALL_WAIT
        while True:
            self.drain()
            if self.taken >= seq or time.monotonic() >= deadline:
                return
            time.sleep(0.001)

    def after_fork_in_child(self) -> None:
        self._take = threading.Lock()
        self._emit = threading.RLock()
        self.started = threading.Lock()
        self.thread = None


_READER = _Reader()
os.register_at_fork(after_in_child=_READER.after_fork_in_child)

# A program that configured no logging would otherwise see SPDK's warnings on
# stderr through logging's last resort: they go nowhere until it adds a handler.
logging.getLogger(SPDK_LOGGER).addHandler(logging.NullHandler())
logging.getLogger(DPDK_LOGGER).addHandler(logging.NullHandler())


def install(opts: Any = None) -> None:
    """Route SPDK's and DPDK's log into the ring and start the thread that
    drains it (runtime.py, before and after spdk_app_start). `opts`: the
    struct spdk_app_opts * that spdk_app_start will use, or None."""
    rc = lib.pyspdk_log_install(ffi.NULL if opts is None else opts)
    if rc != 0:
        raise OSError(-rc, f"cannot route SPDK's log to Python: {os.strerror(-rc)}")
    _READER.start()


def set_stderr(enabled: bool) -> None:
    """Also print SPDK's and DPDK's messages on stderr, as they would (True), or not.

    A Runtime sets it at start from its log_to_stderr option; this changes it
    while SPDK runs. Messages reach `logging` either way.
    """
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled must be a bool, not {type(enabled).__name__}")
    lib.pyspdk_log_set_stderr(enabled)


def stderr_enabled() -> bool:
    """Whether SPDK's and DPDK's messages are printed on stderr too."""
    return bool(lib.pyspdk_log_get_stderr())


def dropped() -> int:
    """Messages lost because the ring was full (its reader fell behind), since
    this process began. The ring holds PYSPDK_LOG_RING_SLOTS messages."""
    return int(lib.pyspdk_log_dropped())


# ------------------------------------------------------------------ per-call capture


class Capture:
    """What SPDK and DPDK log from now until lines() is called: a sequence
    number range of the ring, so starting one costs one atomic load."""

    def __init__(self) -> None:
        self.start = int(lib.pyspdk_log_next_seq())

    def lines(self) -> list[LogLine]:
        """The lines logged since the capture began (those still in memory:
        the last few thousand of the process)."""
        end = int(lib.pyspdk_log_next_seq())
        _READER.drain_until(end)
        return [line for line in list(_READER.history) if self.start <= line.seq < end]


def attach(exc: BaseException, lines: list[LogLine]) -> None:
    """Give `exc` its `log`, unless it has one: the log of the exception it was
    raised from (an RPC's, which knows its own process), else `lines`."""
    if "log" in vars(exc):
        return
    for inner in (exc.__cause__, exc.__context__):
        if inner is not None and isinstance(vars(inner).get("log"), list):
            lines = vars(inner)["log"]
            break
    with contextlib.suppress(AttributeError, TypeError):
        exc.log = lines  # type: ignore[attr-defined]


@contextlib.contextmanager
def capture() -> Iterator[Capture]:
    """An exception leaving the block gets `log`: the lines logged in it."""
    started = Capture()
    try:
        yield started
    except BaseException as exc:
        attach(exc, started.lines())
        raise


P = ParamSpec("P")
T = TypeVar("T")


def captured(fn: Callable[P, T]) -> Callable[P, T]:
    """Decorator form of capture(), for a call whose exception should carry its log."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        with capture():
            return fn(*args, **kwargs)

    return wrapper


# ------------------------------------------------------------------ another process's log

_SPDK_LINE = re.compile(
    r"\[(?P<stamp>[^\]]*)\] (?:(?P<file>[^\s:]+):\s*(?P<line>\d+):(?P<func>[^:\s]*): "
    r"\*(?P<level>[A-Z]+)\*: )?(?P<msg>.*)"
)


def parse_line(text: str) -> LogLine | None:
    """A LogLine from one line of an SPDK application's output (spdk_tgt's
    stderr): SPDK's "[date time] file.c: line:func: *LEVEL*: message", or
    DPDK's "PREFIX: message" (level NOTICE: DPDK does not print its level);
    None for a blank line."""
    text = text.rstrip("\r\n")
    if not text.strip():
        return None
    found = _SPDK_LINE.fullmatch(text)
    if found is not None:
        stamp = _parse_stamp(found.group("stamp"))
        if found.group("file") is not None:
            number = _SPDK_LEVEL_NAMES.get(found.group("level"), 2)
            levelno, level = _SPDK_LEVELS[number]
            file = found.group("file")
            return LogLine(
                source="spdk",
                level=level,
                levelno=levelno,
                component=_component(file.rsplit(".", 1)[0]),
                message=found.group("msg"),
                file=file,
                line=int(found.group("line")),
                function=found.group("func"),
                time=stamp,
            )
        return LogLine("spdk", "NOTICE", NOTICE, "", found.group("msg"), time=stamp)
    prefix = _DPDK_PREFIX.match(text)
    if prefix is not None:
        return LogLine("dpdk", "NOTICE", NOTICE, _component(prefix.group(1)), text)
    return LogLine("spdk", "NOTICE", NOTICE, "", text)


def _parse_stamp(stamp: str) -> float:
    try:
        return time.mktime(time.strptime(stamp.split(".")[0], "%Y-%m-%d %H:%M:%S")) + float(
            "0." + stamp.split(".")[1]
        )
    except (ValueError, IndexError):
        return 0.0


# Where SPDK starts a message: some messages lack their final newline, so the
# next one's stamp follows them on the same line.
_SPDK_START = re.compile(r"(?=\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+\] )")


def parse_lines(text: str) -> list[LogLine]:
    """parse_line for each message of `text` (a line, or a part of one that
    starts with SPDK's stamp), blank ones left out."""
    found = []
    for raw in text.splitlines():
        for part in _SPDK_START.split(raw):
            line = parse_line(part)
            if line is not None:
                found.append(line)
    return found


def forward(lines: Iterable[LogLine], **extra: Any) -> None:
    """emit() each line."""
    for line in lines:
        emit(line, **extra)


class Follower:
    """Feeds what an SPDK application appends to its log file to the loggers.

    SpdkProcess(forward_log=True) runs one: a thread that reads the file from
    `offset` every `interval` seconds and emits each message (parse_lines)
    with `extra` on its record. Text without its newline is a message once
    nothing followed it for an interval (SPDK leaves the newline out of some).
    close() reads what is left, then ends it.
    """

    def __init__(self, path: str, offset: int, interval: float = 0.1, **extra: Any) -> None:
        self._path = path
        self._offset = offset
        self._interval = interval
        self._extra = extra
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pyspdk-log-follow", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        pending = b""
        try:
            with open(self._path, "rb") as source:
                source.seek(self._offset)
                while True:
                    stopping = self._stop.wait(self._interval)
                    new = source.read()
                    pending += new
                    cut = len(pending) if stopping or not new else pending.rfind(b"\n") + 1
                    complete, pending = pending[:cut], pending[cut:]
                    forward(parse_lines(complete.decode("utf-8", errors="replace")), **self._extra)
                    if stopping:
                        return
        except OSError:
            return  # the file went (stop() removes a private log): nothing more to read
        except Exception:
            logging.getLogger("pyspdk_sys").exception("pyspdk_sys: a log handler failed")

    def close(self, timeout: float = 5.0) -> None:
        """Emit the lines written so far and end the thread."""
        self._stop.set()
        self._thread.join(timeout)
