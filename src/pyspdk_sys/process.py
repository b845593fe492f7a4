"""Start, watch and stop SPDK applications that run as their own processes.

Why another process at all, when Runtime runs SPDK in this one: SPDK starts
once per process (runtime.RESTART_REFUSED), a crash in SPDK takes its host
with it, and management programs drive applications they did not build
(spdk_tgt, nvmf_tgt, vhost, iscsi_tgt, a fork's build of them).

RPCs go through SPDK's official client (spdk.rpc.client.JSONRPCClient), so
its framing and decoding are the ones every SPDK tool uses; a monitor thread
per process holds each call's wall-clock deadline (_process_client.py). Why a
start failed is read from the application's log (_process_log.py).

The application's output goes to a file, never to a pipe: nobody would drain
a pipe, and a full one blocks SPDK's reactor in write().
"""

from __future__ import annotations

import atexit
import contextlib
import enum
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ._checks import SUN_PATH_MAX, check_bool, check_seconds
from ._jsonrpc import LIMITS, OLDEST, check_request, limits_for
from ._process_client import TICK, ClientPool, Monitor, NotListening, official_client
from ._process_log import describe_status, diagnose, first_line, log_size, read_from, tail
from ._sockets import check_rpc_socket, lock_is_held, lock_owner, remove_stale_socket
from .errors import (
    ProcessError,
    ProcessExitedError,
    ProcessStartError,
    RpcError,
    RuntimeStateError,
    rpc_result,
)
from .hugepages import reclaim_stale_files
from .log import Follower, attach, parse_lines
from .options import AppOptions, dpdk_runtime_dir
from .placement import warn_if_held

__all__ = [
    "SpdkProcess",
    "find_tool",
    "running",
    "tool_candidates",
]

_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,32}")
_SOCKET_NAME = "spdk.sock"
_TAIL_LINES = 30
_KILL_WAIT = 10.0  # after SIGKILL: the kernel's part only
_HEADER = "pyspdk_sys: starting "  # the line written to the log before the command's output


class _State(enum.Enum):
    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    STOPPED = "stopped"


# ------------------------------------------------------------------ tools


def tool_candidates(name: str = "spdk_tgt") -> list[Path]:
    """Where a tool that build.sh installs (spdk_tgt, bdevperf) may be, best first.

    First beside the fat library this process loaded (PREFIX/libexec/spdk_fat),
    then the `toolsdir` pkg-config reports.
    """
    from ._binding import LIBRARY_PATH

    found: list[Path] = []
    if LIBRARY_PATH:
        found.append(Path(LIBRARY_PATH).resolve().parent.parent / "libexec" / "spdk_fat" / name)
    pkg_config = shutil.which("pkg-config")
    if pkg_config is not None:
        try:
            toolsdir = subprocess.run(
                [pkg_config, "--variable=toolsdir", "spdk_fat"],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            toolsdir = ""
        if toolsdir and Path(toolsdir) / name not in found:
            found.append(Path(toolsdir) / name)
    return found


def find_tool(name: str = "spdk_tgt") -> Path | None:
    """The installed tool `name`, or None when build.sh installed none."""
    for path in tool_candidates(name):
        if path.is_file() and os.access(path, os.X_OK):
            return path
    return None


# ------------------------------------------------------------------ the process


class SpdkProcess:
    """An SPDK application in its own process: start, RPC, watch, stop.

    Options mirror Runtime's: mem_size_mb, hugepages, hugedir, pci, cpu_mask,
    rpc_socket (default: a private path in a fresh 0700 directory), log_level,
    config (a dict or a JSON file), name, interrupt_mode. `args` are further command-line
    arguments for the application. The output goes to `log_file` (default: a
    file in the private directory, removed by stop(); pass a path to keep it).
    forward_log=True also hands each line of it to the loggers a Runtime uses
    (pyspdk_sys.log), with the record attribute spdk_process set to `name`.
    An RpcError carries, as `log`, the lines the application wrote during the call.

    A context manager: `with SpdkProcess() as proc: proc.rpc(...)`. One start
    per object; for another run create another. Satisfies pyspdk_sys.target.Target.
    """

    def __init__(
        self,
        binary: str | os.PathLike[str] | None = None,
        *,
        mem_size_mb: int = 1024,
        hugepages: bool = False,
        hugedir: str | os.PathLike[str] | None = None,
        cpu_mask: str = "0x1",
        rpc_socket: str | os.PathLike[str] | None = None,
        log_level: str = "NOTICE",
        config: Mapping[str, Any] | str | os.PathLike[str] | None = None,
        name: str = "spdk",
        pci: bool = False,
        args: Sequence[str] = (),
        log_file: str | os.PathLike[str] | None = None,
        interrupt_mode: bool = False,
        forward_log: bool = False,
    ) -> None:
        if binary is not None and not isinstance(binary, (str, os.PathLike)):
            raise TypeError(f"binary must be a path or None, not {type(binary).__name__}")
        options = AppOptions.check(
            mem_size_mb=mem_size_mb,
            hugepages=hugepages,
            hugedir=hugedir,
            pci=pci,
            cpu_mask=cpu_mask,
            log_level=log_level,
            config=config,
            interrupt_mode=interrupt_mode,
        )
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, not {type(name).__name__}")
        if not _NAME.fullmatch(name):
            raise ValueError(f"name must be 1 to 32 letters, digits, '_', '.' or '-', not {name!r}")
        if isinstance(args, (str, bytes)) or not isinstance(args, Sequence):
            raise TypeError(f"args must be a sequence of str, not {type(args).__name__}")
        for arg in args:
            if not isinstance(arg, str) or "\0" in arg:
                raise ValueError(f"args must hold strings without NUL, not {arg!r}")
        if log_file is not None and not isinstance(log_file, (str, os.PathLike)):
            raise TypeError(f"log_file must be a path or None, not {type(log_file).__name__}")
        if log_file is not None and not Path(log_file).parent.is_dir():
            raise ValueError(f"log_file's directory does not exist: {os.fspath(log_file)!r}")

        self.binary: str | None = None if binary is None else os.fspath(binary)
        if self.binary is None:
            tool = find_tool("spdk_tgt")
            self.binary = None if tool is None else str(tool)
        self.options: AppOptions | None = options
        self.mem_size_mb = mem_size_mb
        self.hugepages = hugepages
        self.hugedir = options.hugedir
        self.pci = pci
        self.cpu_mask = cpu_mask
        self.log_level = log_level
        self.name = name
        self.interrupt_mode = options.interrupt_mode
        self.args = tuple(args)
        self._config = options.config
        self._user_socket = None if rpc_socket is None else check_rpc_socket(rpc_socket)
        self._user_log = None if log_file is None else os.fspath(log_file)
        check_bool("forward_log", forward_log)
        self.forward_log = forward_log
        self._follower: Follower | None = None

        self._owned = True
        self._state = _State.NEW
        # The request limits of the release the process runs: the strictest
        # known until it says which (spdk_get_version, once ready).
        self._limits = LIMITS[OLDEST]
        self._lock = threading.Lock()
        self._popen: subprocess.Popen[bytes] | None = None
        self._workdir: str | None = None
        self._socket: str | None = self._user_socket
        self._log: str | None = self._user_log
        self._pid: int | None = None
        self._clients = ClientPool()
        self._monitor: Monitor | None = None

    @classmethod
    def attach(cls, rpc_socket: str | os.PathLike[str], *, timeout: float = 10.0) -> SpdkProcess:
        """An SpdkProcess for an SPDK application this program did not start.

        It must answer spdk_get_version within `timeout`. stop() only detaches:
        the application keeps running.
        """
        if not isinstance(rpc_socket, (str, os.PathLike)):
            raise TypeError(f"rpc_socket must be a path, not {type(rpc_socket).__name__}")
        path = os.fspath(rpc_socket)
        timeout = check_seconds("timeout", timeout)
        self = cls.__new__(cls)
        self.binary = None
        self.mem_size_mb = 0
        self.hugepages = False
        self.hugedir = None
        self.pci = False
        self.cpu_mask = ""
        self.options = None
        self.log_level = ""
        self.name = "attached"
        self.args = ()
        self._config = None
        self._user_socket = path
        self._user_log = None
        self.forward_log = False
        self._follower = None
        self._owned = False
        self._state = _State.RUNNING
        self._limits = LIMITS[OLDEST]
        self._lock = threading.Lock()
        self._popen = None
        self._workdir = None
        self._socket = path
        self._log = None
        self._pid = lock_owner(path + ".lock")
        self._clients = ClientPool()
        self._monitor = Monitor(self._popen, self._socket, self._pid)
        try:
            self._learn_release(timeout)
        except ProcessError as exc:
            self.stop()
            raise ProcessError(f"no SPDK application answers on {path}: {exc}") from None
        except BaseException:
            self.stop()
            raise
        return self

    # ------------------------------------------------------------ properties

    @property
    def pid(self) -> int | None:
        """The application's process id (None before start; for attach, from its lock)."""
        return self._pid

    @property
    def rpc_socket(self) -> str | None:
        """The RPC socket path (chosen at start() when none was given)."""
        return self._socket

    @property
    def log_path(self) -> str | None:
        """The file the application writes its output to (None when attached)."""
        return self._log

    @property
    def returncode(self) -> int | None:
        """The exit status once the process has ended (negative: killed by that signal)."""
        return None if self._popen is None else self._popen.returncode

    @property
    def owned(self) -> bool:
        """True when this object started the process (stop() ends it); False when attached."""
        return self._owned

    def is_alive(self) -> bool:
        """Whether the application is running (for attach: whether its RPC lock is held)."""
        monitor = self._monitor
        if not self._owned:
            if monitor is not None and monitor.exited.is_set():
                return False
            path = self._socket
            return path is not None and lock_is_held(path + ".lock")
        popen = self._popen
        if popen is None:
            return False
        if monitor is not None and monitor.exited.is_set():
            return False
        return popen.poll() is None

    def log_tail(self, lines: int = _TAIL_LINES) -> str:
        """The last `lines` lines of the application's log ('' when there is none)."""
        if isinstance(lines, bool) or not isinstance(lines, int) or lines <= 0:
            raise ValueError(f"lines must be a positive int, not {lines!r}")
        return tail(self._log, lines)

    def __repr__(self) -> str:
        kind = "owned" if self._owned else "attached"
        return (
            f"<SpdkProcess {self.name} {kind} {self._state.value} pid={self._pid} "
            f"socket={self._socket!r}>"
        )

    # ------------------------------------------------------------ lifecycle

    def __enter__(self) -> SpdkProcess:
        if self._owned and self._state is _State.NEW:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def command(self) -> list[str]:
        """The command line start() runs (the socket and config paths once chosen)."""
        if self.options is None:
            raise RuntimeStateError("an attached SpdkProcess has no command line")
        config: str | None = None
        if self._config is not None:
            config = str(self._config) if isinstance(self._config, Path) else "<private config>"
            if self._workdir is not None and not isinstance(self._config, Path):
                config = os.path.join(self._workdir, "config.json")
        argv = [self.binary or "spdk_tgt"]
        argv += self.options.argv(self._socket or "<private socket>", config)
        return argv + list(self.args)

    def start(self, timeout: float = 60.0) -> SpdkProcess:
        """Start the application; return once its RPC server answers and init is complete.

        ProcessStartError (a StartError) otherwise, with `reason` and the log's
        last lines; the process is stopped and its files removed first.
        """
        timeout = check_seconds("timeout", timeout)
        official_client()  # before anything runs: start() waits through it
        with self._lock:
            if not self._owned:
                raise RuntimeStateError("an attached SpdkProcess cannot be started")
            if self._state is not _State.NEW:
                raise RuntimeStateError(
                    f"this SpdkProcess is {self._state.value}: one start per object, "
                    "create a new one"
                )
            self._state = _State.STARTING
        warn_if_held(self.cpu_mask, f"SpdkProcess {self.name!r}")
        try:
            self._launch()
            self._wait_ready(time.monotonic() + timeout, timeout)
        except BaseException:
            self.stop(timeout=5.0)
            raise
        with self._lock:
            self._state = _State.RUNNING
        return self

    def _launch(self) -> None:
        if self.hugepages:
            # Pages that killed SPDK processes still hold would make this start fail.
            reclaim_stale_files(self.hugedir)
        binary = self.binary
        if binary is None:
            looked = ", ".join(str(p) for p in tool_candidates("spdk_tgt")) or "nowhere"
            raise ProcessStartError(
                f"no spdk_tgt is installed beside the fat library (looked in: {looked}); "
                "build it with build.sh or pass binary=",
                reason="binary",
            )
        if not Path(binary).is_file():
            raise ProcessStartError(f"binary {binary!r} does not exist", reason="binary")
        if not os.access(binary, os.X_OK):
            raise ProcessStartError(f"binary {binary!r} is not executable", reason="binary")
        self._workdir = _private_dir(self.name)
        if self._user_socket is None:
            self._socket = os.path.join(self._workdir, _SOCKET_NAME)
        else:
            try:
                check_rpc_socket(self._user_socket)
            except ValueError as exc:
                raise ProcessStartError(str(exc), reason="rpc_socket") from None
            remove_stale_socket(self._user_socket)
        if self._config is not None and not isinstance(self._config, Path):
            with open(os.path.join(self._workdir, "config.json"), "w") as out:
                json.dump(self._config, out)
        if self._user_log is None:
            self._log = os.path.join(self._workdir, f"{self.name}.log")
        argv = self.command()
        assert self._log is not None
        with open(self._log, "ab") as log:
            log.write(f"{_HEADER}{' '.join(argv)}\n".encode())
            log.flush()
            if self.forward_log:
                self._follower = Follower(self._log, log.tell(), spdk_process=self.name)
            try:
                self._popen = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    close_fds=True,
                    # Its own session: a Ctrl-C meant for this program reaches it
                    # only through stop().
                    start_new_session=True,
                )
            except OSError as exc:
                raise ProcessStartError(
                    f"cannot run {binary!r}: {exc.strerror}", reason="binary"
                ) from None
        self._pid = self._popen.pid
        with _LIVE_LOCK:
            _LIVE.add(self)
        self._monitor = Monitor(self._popen, self._socket, self._pid)

    def _wait_ready(self, deadline: float, timeout: float) -> None:
        """Poll until framework_wait_init answers (the app started) or the process ends."""
        assert self._socket is not None and self._popen is not None
        while True:
            if not self.is_alive():
                raise self._start_failed(None)
            if time.monotonic() >= deadline:
                raise self._start_failed(timeout)
            if os.path.exists(self._socket):
                try:
                    self.rpc("framework_wait_init", timeout=max(deadline - time.monotonic(), 0.01))
                except ProcessExitedError:
                    raise self._start_failed(None) from None
                except TimeoutError:
                    raise self._start_failed(timeout) from None
                except NotListening:
                    pass
                except ProcessError:
                    # Connection reset: it is probably ending; retry if it is not.
                    if self._wait_exit(1.0):
                        raise self._start_failed(None) from None
                else:
                    break
            time.sleep(0.01)
        # Apps log at NOTICE and print it (WARNING with --silence-noticelog);
        # other levels by RPC, which can only come once the server answers.
        left = max(deadline - time.monotonic(), 1.0)
        self._learn_release(left)
        if self.log_level in ("INFO", "DEBUG"):
            self.rpc("log_set_level", {"level": self.log_level}, timeout=left)
        if self.log_level in ("ERROR", "INFO", "DEBUG"):
            self.rpc("log_set_print_level", {"level": self.log_level}, timeout=left)

    def _learn_release(self, timeout: float) -> None:
        """Ask the application its release, for the request limits of its RPC server."""
        version = self.rpc("spdk_get_version", timeout=timeout)
        if isinstance(version, dict) and isinstance(version.get("version"), str):
            self._limits = limits_for(version["version"])

    def _start_failed(self, timed_out: float | None) -> ProcessStartError:
        """Why start() failed, from the exit status and the application's own output."""
        assert self._popen is not None
        if timed_out is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._popen.wait(1.0)  # the output is complete once it has ended
        # Its own output only, not the line this module writes before it. The
        # private log goes with stop(): the error carries its last lines.
        lines = tail(self._log, 200).splitlines()
        reason, why = diagnose("\n".join(x for x in lines if not x.startswith(_HEADER)))
        if timed_out is not None:
            if reason != "not_spdk":
                reason, why = "timeout", "still initialising? raise the timeout"
            message = f"{self.binary} did not answer on {self._socket} within {timed_out} s: {why}"
        else:
            status = describe_status(self._popen.returncode)
            message = f"{self.binary} {status} before it was ready: {why}"
        error = ProcessStartError(
            message,
            reason=reason,
            log_path=self._user_log,
            log_tail=tail(self._log, _TAIL_LINES),
        )
        # What it logged, as a failed Runtime start's StartError carries it.
        attach(error, parse_lines("\n".join(x for x in lines if not x.startswith(_HEADER))))
        return error

    def stop(self, timeout: float = 30.0) -> None:
        """End the application: SIGTERM, then SIGKILL after `timeout` seconds.

        Always returns, also after a crash, and removes the socket, its lock and
        the private directory. For an attached process it only detaches.
        Safe to call more than once.
        """
        timeout = check_seconds("timeout", timeout)
        with self._lock:
            if self._state is _State.STOPPED:
                return
            self._state = _State.STOPPED
        with _LIVE_LOCK:
            _LIVE.discard(self)
        popen = self._popen
        if self._owned and popen is not None:
            _end(popen, timeout)
        if self._monitor is not None:
            self._monitor.close()
        if self._follower is not None:
            self._follower.close()
            self._follower = None
        self._clients.close()
        if self._owned:
            self._clean_files()

    def _clean_files(self) -> None:
        """Remove what the process leaves when it cannot clean up itself (a crash, SIGKILL)."""
        if self._socket is not None:
            remove_stale_socket(self._socket)
        if self._pid is not None and self.returncode is not None:
            # SPDK's trace file (/dev/shm/<app>_trace.pid<pid>) and DPDK's runtime
            # directory, both named by the pid of a process that is gone.
            for leftover in glob.glob(f"/dev/shm/*_trace.pid{self._pid}"):
                with contextlib.suppress(OSError):
                    os.unlink(leftover)
            shutil.rmtree(dpdk_runtime_dir(self._pid), ignore_errors=True)
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            if self._log is not None and self._log.startswith(self._workdir + os.sep):
                self._log = None
            self._workdir = None

    # ------------------------------------------------------------ RPC

    def rpc(
        self, method: str, params: Mapping[str, Any] | None = None, timeout: float = 60.0
    ) -> Any:
        """Call an RPC method through SPDK's official client and return its result.

        RpcError when SPDK answers with an error; TimeoutError after `timeout`
        seconds of wall time (the request may still run); ProcessExitedError
        when the application is gone, within about 0.1 s of its end.
        """
        # The size as the official client encodes it (indent=2), with the
        # largest id it could use; the limits of the release the process runs.
        payload, _ = check_request(method, params, 2**31, self._limits, indent=2)
        timeout = check_seconds("timeout", timeout)
        deadline = time.monotonic() + timeout
        if self._state is _State.NEW:
            raise RuntimeStateError(f"{method}: this SpdkProcess is not started: call start()")
        if self._state is _State.STOPPED or self._monitor is None or self._socket is None:
            raise self._gone(method)
        if not self.is_alive():
            raise self._gone(method)
        client = self._clients.take(self._socket, method, self.is_alive, self._gone)
        log_start = log_size(self._log)
        token = self._monitor.watch(client, deadline)
        failure: Exception | None = None
        done = False
        try:
            request_id = client.send(method, payload)
            response = client.recv()
            done = True
        except Exception as exc:
            failure = exc
        finally:
            expired = self._monitor.unwatch(token)
            self._clients.give_back(client, done and not expired)
        if failure is not None:
            return self._failed(method, timeout, expired, failure)
        try:
            return rpc_result(method, request_id, response, ProcessError)
        except RpcError as exc:
            # SPDK logs why before it answers: the lines are in the file by now.
            attach(exc, parse_lines(read_from(self._log, log_start)))
            raise

    def _failed(self, method: str, timeout: float, expired: bool, exc: BaseException) -> Any:
        """Why a call got no answer, as an exception (or True for spdk_kill_instance)."""
        if expired and self.is_alive():
            raise TimeoutError(
                f"{method}: no answer from {self.name} within {timeout} s "
                "(the request may still run)"
            ) from None
        if self._state is _State.STOPPED:
            raise self._gone(method) from None
        if method == "spdk_kill_instance":
            return True  # the connection closed because it did what it was asked
        if self._wait_exit(1.0):
            raise self._gone(method) from None
        raise ProcessError(
            f"{method}: {self.name} on {self._socket} closed the connection without an "
            f"answer ({first_line(exc)}); its log may say why",
            log_path=self._log,
            log_tail=tail(self._log, 5),
        ) from None

    def _wait_exit(self, limit: float) -> bool:
        """Whether the application ends within `limit` s (a reset connection often means so)."""
        if self._owned:
            return self._monitor is not None and self._monitor.exited.wait(limit)
        deadline = time.monotonic() + limit
        while self.is_alive():
            if time.monotonic() >= deadline:
                return False
            time.sleep(TICK)
        return True

    def _gone(self, method: str) -> ProcessExitedError:
        if self._state is _State.STOPPED:
            return ProcessExitedError(f"{method}: this SpdkProcess is stopped", log_path=self._log)
        status = describe_status(self.returncode) if self._owned else "has gone"
        return ProcessExitedError(
            f"{method}: the SPDK application {self.name} (pid {self._pid}) {status}",
            log_path=self._log,
            log_tail=tail(self._log, _TAIL_LINES),
        )


# ------------------------------------------------------------------ helpers


def _end(popen: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM to its process group, wait up to timeout, then SIGKILL to the group.

    The group, not only the process: a wrapper script's children go too
    (start_new_session made the process the leader of its own group).
    """
    if popen.poll() is None:
        _signal_group(popen.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(timeout)
    _signal_group(popen.pid, signal.SIGKILL)  # the leader, if still there, and stragglers
    with contextlib.suppress(subprocess.TimeoutExpired):
        popen.wait(_KILL_WAIT)


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _private_dir(name: str) -> str:
    """A new 0700 directory whose socket (and lock) paths fit in sun_path."""
    prefix = f"pyspdk-{name}-"
    room = SUN_PATH_MAX - len(prefix) - 10 - len(_SOCKET_NAME + ".lock")
    base = tempfile.gettempdir()
    if len(os.fsencode(base)) > room:
        base = "/tmp"
    return tempfile.mkdtemp(prefix=prefix, dir=base)


# Started and not yet stopped. Strong references: an SpdkProcess dropped
# without stop() must still be stopped at exit, not orphaned by the collector.
_LIVE: set[SpdkProcess] = set()
_LIVE_LOCK = threading.Lock()


def running() -> list[SpdkProcess]:
    """The SpdkProcess objects this program started and has not stopped."""
    with _LIVE_LOCK:
        return list(_LIVE)


@atexit.register
def _stop_at_exit() -> None:
    """Stop the processes this program started and left running."""
    for proc in running():
        with contextlib.suppress(Exception):
            proc.stop(timeout=10.0)
