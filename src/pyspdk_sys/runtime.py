"""Run SPDK in-process on one dedicated OS thread, and hand it work from Python.

Why the app framework (spdk_app_start) rather than polling SPDK's thread
library ourselves: the framework brings up the environment, every subsystem,
the JSON config and the RPC server, and its reactor polls every SPDK thread
that subsystems create (NVMe-oF poll groups, vhost controllers, ublk). The
price is that spdk_app_start blocks its calling thread, so a dedicated host
thread runs it.

SPDK starts once per process. SPDK allows a second spdk_app_start on the same
OS thread, but in v26.01 the iSCSI target subsystem, always part of the fat
library, then appends to a free-connection list that still points into the
array the previous shutdown freed (lib/iscsi/conn.c, initialize_iscsi_conns):
memory corruption, seen here as a crash in about half of the restarts. So a
second start is refused with an explanation rather than attempted.

Python threads never call spdk_thread_send_msg (it aborts when the target
thread has exited or its message pool is empty). They queue work in Python;
one poller on the SPDK app thread drains the queue, one GIL crossing per batch.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import concurrent.futures
import enum
import importlib
import json
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from . import _callbacks, _fork, hugepages
from ._binding import ffi, lib
from ._checks import check_bool, check_float, check_timeout
from ._pools import SMALLEST_MEM_SIZE_MB, with_defaults
from ._resource import Resource
from ._sockets import check_rpc_socket
from .errors import HugepagesError, RuntimeStateError, StartError, waits_on_spdk_thread
from .log import Capture, attach
from .log import install as install_log
from .options import AppOptions, dpdk_runtime_dir
from .placement import all_held_cores, warn_if_held

__all__ = [
    "RESTART_REFUSED",
    "Runtime",
    "SpdkFuture",
    "State",
    "current",
]

T = TypeVar("T")
S = TypeVar("S")

_LOG_LEVELS = {
    "ERROR": lib.SPDK_LOG_ERROR,
    "WARNING": lib.SPDK_LOG_WARN,
    "NOTICE": lib.SPDK_LOG_NOTICE,
    "INFO": lib.SPDK_LOG_INFO,
    "DEBUG": lib.SPDK_LOG_DEBUG,
}


class State(enum.Enum):
    """Where a Runtime is in its life."""

    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"
    FORKED = "inherited by a forked child"


class SpdkFuture(concurrent.futures.Future):  # type: ignore[type-arg]
    """A Future that refuses a blocking wait on the SPDK thread (it would deadlock)."""

    # The thread is asked first, inline: these are on every future's hot path,
    # and done() takes the future's lock.
    def result(self, timeout: float | None = None) -> Any:
        if threading.get_ident() == _HOST.ident:
            _refuse_unfinished(self)
        return super().result(timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        if threading.get_ident() == _HOST.ident:
            _refuse_unfinished(self)
        return super().exception(timeout)


def _refuse_unfinished(future: concurrent.futures.Future) -> None:  # type: ignore[type-arg]
    """On the SPDK thread: waiting for a future not done yet would deadlock it."""
    if not future.done():
        raise RuntimeStateError(
            "waiting for a future on the SPDK thread would deadlock it: chain work with "
            "add_done_callback or submit() instead"
        )


def refuse_wait_on_spdk_thread(what: str) -> None:
    """RuntimeStateError if the caller is the SPDK thread: `what` would wait on itself."""
    if threading.get_ident() == _HOST.ident:
        raise waits_on_spdk_thread(what)


class _Host:
    """The one OS thread per process that runs spdk_app_start, start after start."""

    def __init__(self) -> None:
        self._requests: collections.deque[Runtime] = collections.deque()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self.ident: int | None = None
        self.used = False

    def is_current(self) -> bool:
        return self.ident is not None and threading.get_ident() == self.ident

    def run(self, runtime: Runtime) -> None:
        with self._wake:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._serve, name="pyspdk-reactor", daemon=True
                )
                self._thread.start()
            self._requests.append(runtime)
            self._wake.notify()

    def _serve(self) -> None:
        self.ident = threading.get_ident()
        while True:
            with self._wake:
                while not self._requests:
                    self._wake.wait()
                runtime = self._requests.popleft()
            runtime._run_app()


RESTART_REFUSED = (
    "SPDK has already run in this process, and SPDK v26.01 cannot start twice in one "
    "process: its iSCSI subsystem would re-initialise a list that points into memory freed "
    "by the first shutdown. Start SPDK once per process; for another start use a new "
    "process (for example multiprocessing with the 'spawn' start method)."
)

_HOST = _Host()
_ACTIVE_LOCK = threading.Lock()
_ACTIVE: Runtime | None = None


# Services of a Runtime that live in the layers above it, declared by name
# with the module that provides each. That module registers its provider when
# it is imported; the runtime imports it only on the service's first use (by
# name, so no import of an upper layer stands in this module, and `import
# pyspdk_sys` loads neither).
SERVICES = {"rpc": "pyspdk_sys.rpc", "open_bdev": "pyspdk_sys.bdev"}
_PROVIDERS: dict[str, Callable[..., Any]] = {}


def provide(name: str, provider: Callable[..., Any]) -> None:
    """Register the provider of one of SERVICES (called once by the module that owns it)."""
    if name not in SERVICES:
        raise ValueError(f"{name!r} is not a Runtime service: one of {', '.join(SERVICES)}")
    _PROVIDERS[name] = provider


def provided(name: str) -> Callable[..., Any]:
    """The provider of service `name`, its module loaded on first use."""
    found = _PROVIDERS.get(name)
    if found is None:
        importlib.import_module(SERVICES[name])
        found = _PROVIDERS[name]
    return found


def current() -> Runtime | None:
    """The runtime that is starting or running in this process, if any."""
    return _ACTIVE


class Runtime:
    """SPDK running in this process; a context manager that starts and stops it.

    SPDK starts once per process (see RESTART_REFUSED); after stop() every
    further start raises RuntimeStateError.

    SPDK's and DPDK's messages at log_level or above go to `logging` (see
    pyspdk_sys.log), and to stderr as well only with log_to_stderr=True.

    With interrupt_mode=True a reactor that served a request of this process
    keeps polling for interrupt_linger_us microseconds before it sleeps: a
    caller that submits one request at a time then finds it awake (waking it
    costs more than the request). 0 lets it sleep at once.
    """

    def __init__(
        self,
        *,
        mem_size_mb: int = 1024,
        hugepages: bool = False,
        hugedir: str | None = None,
        cpu_mask: str = "0x1",
        rpc_socket: str | os.PathLike[str] | None = None,
        log_level: str = "WARNING",
        config: Mapping[str, Any] | str | os.PathLike[str] | None = None,
        name: str = "pyspdk",
        pci: bool = False,
        small_pools: bool = True,
        interrupt_mode: bool = False,
        log_to_stderr: bool = False,
        interrupt_linger_us: float = 50.0,
    ) -> None:
        self.options = AppOptions.check(
            mem_size_mb=mem_size_mb,
            hugepages=hugepages,
            hugedir=hugedir,
            pci=pci,
            cpu_mask=cpu_mask,
            log_level=log_level,
            config=config,
            interrupt_mode=interrupt_mode,
            log_to_stderr=log_to_stderr,
        )
        check_bool("small_pools", small_pools)
        # In interrupt mode, how long the I/O engine keeps a reactor polling after
        # its last request or completion (the C side: pyspdk_engine_set_linger_us).
        self.interrupt_linger_us = check_float("interrupt_linger_us", interrupt_linger_us, 0, 1e6)
        if small_pools and mem_size_mb < SMALLEST_MEM_SIZE_MB:
            raise ValueError(
                f"mem_size_mb={mem_size_mb} is too small: every subsystem's pools need at "
                f"least {SMALLEST_MEM_SIZE_MB} MiB (with small_pools)"
            )
        if not isinstance(name, str) or not name or "\0" in name:
            raise ValueError(f"name must be a non-empty string without NUL, not {name!r}")
        self.mem_size_mb = mem_size_mb
        self.hugepages = hugepages
        self.hugedir = self.options.hugedir
        self.pci = pci
        self.cpu_mask = cpu_mask
        self.rpc_socket = None if rpc_socket is None else check_rpc_socket(rpc_socket)
        self.log_level = log_level
        self.name = name
        # Reactors that sleep when idle (options.py); polling is the default.
        self.interrupt_mode = self.options.interrupt_mode
        self._config = self.options.config
        self._check_config_methods()
        # The built-in default configuration (_pools.py); False: SPDK's own pool sizes.
        self.small_pools = small_pools

        self.state = State.NEW
        self._lock = threading.Lock()
        self._work: collections.deque[tuple[SpdkFuture, Callable[..., Any], tuple[Any, ...]]] = (
            collections.deque()
        )
        self._started = threading.Event()
        self._returned = threading.Event()
        self._rc: int | None = None
        self._poller: Any = None
        self._handle: Any = None
        self._keepalive: list[Any] = []
        self._config_file: str | None = None
        self._start_log: Capture | None = None
        self._stop_hooks: list[Callable[[], None]] = []
        self._teardown_hooks: list[Callable[[], None]] = []
        # Adopted resources (_resource.py), oldest first; their order at stop and
        # teardown comes from their stages, not from this list.
        self._resources: list[Resource] = []
        self._polled_cpus: list[int] = []
        # Per-runtime services (the completion thread, each loop's reader, the
        # in-process RPC client, the I/O engine), made on first use by the
        # modules that own them: see service().
        self._services: dict[type[Any], Any] = {}
        self._services_lock = threading.Lock()
        self.app_thread: Any = ffi.NULL
        _fork.track(self)

    # ------------------------------------------------------------ lifecycle

    def __enter__(self) -> Runtime:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 120.0) -> Runtime:
        """Start SPDK and return once every subsystem is up (or raise StartError)."""
        global _ACTIVE
        timeout = check_timeout("timeout", timeout) or 120.0
        if _fork.forked:
            raise RuntimeStateError(_fork.forked_message("SPDK's environment"))
        with _ACTIVE_LOCK:
            self._refuse_start()
            # Checks and preparation that can fail come before anything
            # process-wide changes: a start refused here leaves the process
            # as it was, and the next start works.
            try:
                if self.hugepages:
                    # Pages that killed SPDK processes still hold would make this start fail.
                    hugepages.reclaim_stale_files(self.hugedir)
                    self._check_hugepages()
                warn_if_held(self.cpu_mask, f"Runtime {self.name!r}", stacklevel=4)
                self._opts = self._app_opts()
                # SPDK's and DPDK's log go to `logging` (log.py), and to
                # stderr only when asked; what this start logs goes with a
                # StartError.
                install_log(self._opts)
                lib.pyspdk_log_set_stderr(self.options.log_to_stderr)
                lib.pyspdk_engine_set_linger_us(round(self.interrupt_linger_us))
                self._start_log = Capture()
            except BaseException:
                self._forget_opts()  # the config file written for SPDK, if any
                raise
            _HOST.used = True
            self.state = State.STARTING
            _ACTIVE = self
            try:
                _HOST.run(self)
            except BaseException:
                _HOST.used = False
                self.state = State.NEW
                _ACTIVE = None
                self._forget_opts()
                raise
        if not self._wait_started(timeout):
            raise TimeoutError(
                f"SPDK did not finish starting within {timeout} s; it is still starting "
                "(call stop() to stop it)"
            )
        return self

    def _refuse_start(self) -> None:
        """RuntimeStateError when this object, or this process, cannot start SPDK now."""
        if self.state is not State.NEW:
            raise RuntimeStateError(f"this Runtime is {self.state.value}; create a new one")
        if _ACTIVE is not None:
            raise RuntimeStateError(
                f"another Runtime is {_ACTIVE.state.value} in this process; stop it first"
            )
        if _HOST.used:
            raise RuntimeStateError(RESTART_REFUSED)

    def _check_config_methods(self) -> None:
        """ValueError naming a config entry whose method SPDK does not have.

        SPDK would find it only half-way through its start, with every
        subsystem up, and fail the whole start with a bare return code.
        """
        config = self._config
        if config is None:
            return
        if isinstance(config, Path):
            config = json.loads(config.read_text())
        state = ffi.new("uint32_t *")
        for subsystem in config.get("subsystems") or []:
            if not isinstance(subsystem, dict):
                raise ValueError(f"config: a subsystem entry is not an object: {subsystem!r:.80}")
            for entry in subsystem.get("config") or []:
                method = entry.get("method") if isinstance(entry, dict) else None
                if not isinstance(method, str) or not method or "\0" in method:
                    raise ValueError(
                        f"config: subsystem {subsystem.get('subsystem')!r} has an entry "
                        f"without a method name: {entry!r:.80}"
                    )
                if lib.spdk_rpc_get_method_state_mask(method.encode(), state) != 0:
                    raise ValueError(
                        f"config: subsystem {subsystem.get('subsystem')!r} calls {method!r}, "
                        "which is not an SPDK RPC method"
                    )

    def _forget_opts(self) -> None:
        self._keepalive.clear()
        if self._config_file is not None:
            Path(self._config_file).unlink(missing_ok=True)
            self._config_file = None

    def _check_hugepages(self) -> None:
        """HugepagesError, before DPDK tries, when hugepages=True cannot be met."""
        pool = hugepages.page_size()
        if self.hugedir is None and not pool.mounts:
            raise HugepagesError(
                f"hugepages=True but no hugetlbfs is mounted for {pool.size_label} pages: "
                "mount one (pyspdk_sys.hugepages.mount() as root) or pass hugedir"
            )
        needed = -(-self.mem_size_mb * 1024 // pool.size_kb)
        if pool.available < needed:
            raise HugepagesError(
                f"hugepages=True needs {needed} free {pool.size_label} pages for "
                f"mem_size_mb={self.mem_size_mb}, and {pool.available} of {pool.total} are "
                "free: reserve more (pyspdk_sys.hugepages.reserve() as root, or "
                "nr_hugepages under /sys/kernel/mm/hugepages) or lower mem_size_mb"
            )

    def _wait_started(self, timeout: float) -> bool:
        started = self._started.wait(timeout)
        if self.state is State.FAILED:
            lines = self._start_log.lines() if self._start_log is not None else []
            errors = [str(line) for line in lines if line.levelno >= logging.ERROR][-5:]
            said = "".join(f"\n  {text}" for text in errors)
            error = StartError(
                f"SPDK failed to start (spdk_app_start returned {self._rc}): for example a "
                "config entry SPDK refused, or pools that do not fit in "
                f"mem_size_mb={self.mem_size_mb}; its log is the exception's `log` and the "
                "pyspdk_sys.spdk logger. SPDK keeps state from a failed start, so it cannot "
                f"start again in this process: start it in a new one.{said}"
            )
            attach(error, lines)
            raise error
        return started

    def stop(self, timeout: float = 60.0) -> None:
        """Stop SPDK: shut every subsystem down and wait. Safe to call more than once.

        Work queued before stop() runs first; work queued after it is refused.
        Called on the SPDK thread, it starts the shutdown and returns at once.
        """
        check_timeout("timeout", timeout)
        with self._lock:
            state = self.state
            if state in (State.NEW, State.STOPPED, State.FAILED, State.FORKED):
                return
            if state is State.RUNNING:
                self.state = State.STOPPING
                self._work.append((SpdkFuture(), self._shutdown_on_spdk_thread, ()))
                lib.pyspdk_work_notify()
        if state is State.STARTING:
            # The start callback sees STOPPING and shuts down as soon as it runs.
            with self._lock:
                if self.state is State.STARTING:
                    self.state = State.STOPPING
            if self._started.wait(timeout) and self.state is State.RUNNING:
                self.stop(timeout)
                return
        if _HOST.is_current():
            return  # On the SPDK thread the shutdown proceeds after this callback returns.
        if not self._returned.wait(timeout):
            raise TimeoutError(f"SPDK did not stop within {timeout} s")

    # ------------------------------------------------------------ work

    def submit(self, fn: Callable[..., T], *args: Any) -> SpdkFuture:
        """Run fn(*args) on the SPDK app thread; its result or exception goes to the future."""
        if not callable(fn):
            raise TypeError(f"submit() needs a callable, not {type(fn).__name__}")
        future = SpdkFuture()
        with self._lock:
            if self.state is not State.RUNNING:
                if self.state is State.FORKED:
                    raise RuntimeStateError(_fork.forked_message("this Runtime"))
                raise RuntimeStateError(
                    f"the SPDK runtime is {self.state.value}: it takes no work now"
                )
            self._work.append((future, fn, args))
        lib.pyspdk_work_notify()
        return future

    def call(self, fn: Callable[..., T], *args: Any, timeout: float | None = None) -> T:
        """Run fn(*args) on the SPDK app thread and return its result.

        On the SPDK thread itself it simply calls fn: waiting would deadlock.
        """
        if _HOST.is_current():
            return fn(*args)
        result: T = self.submit(fn, *args).result(timeout)
        return result

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Awaitable form of call(), for asyncio programs."""
        return await asyncio.wrap_future(self.submit(fn, *args))

    def service(self, kind: type[S], make: Callable[[Runtime], S]) -> S:
        """The runtime's one `kind` service, made by make(self) on first use.

        Modules above the runtime keep their per-runtime state here instead of
        setting attributes on it: each service is a class they own.
        """
        found: S | None = self._services.get(kind)
        if found is None:
            with self._services_lock:
                found = self._services.get(kind)
                if found is None:
                    found = make(self)
                    self._services[kind] = found
        return found

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        self._services_lock = threading.Lock()
        if self.state is not State.NEW:
            self.state = State.FORKED

    def on_spdk_thread(self) -> bool:
        """Whether the caller is running on the SPDK app thread."""
        return _HOST.is_current()

    def add_stop_hook(self, hook: Callable[[], None]) -> None:
        """Run hook() on the SPDK thread when stop() begins, before subsystems shut down."""
        self._stop_hooks.append(hook)

    def add_teardown_hook(self, hook: Callable[[], None]) -> None:
        """Run hook() once SPDK's reactors have stopped, before its environment goes.

        Every I/O is over by then and DMA memory is still valid: the place to
        free it.
        """
        self._teardown_hooks.append(hook)

    def adopt(self, resource: Resource) -> None:
        """Take `resource` into stop and teardown, in its stages' order (_resource.py)."""
        with self._lock:
            self._resources.append(resource)

    def disown(self, resource: Resource) -> None:
        """Forget a resource closed early; nothing of it is left for stop or teardown."""
        with self._lock:
            if resource in self._resources:
                self._resources.remove(resource)

    def _resources_by(self, stage: str) -> list[Resource]:
        """Adopted resources in the order of `stage` (a class attribute), newest first
        within one stage."""
        with self._lock:
            newest_first = self._resources[::-1]
        return sorted(newest_first, key=lambda resource: getattr(resource, stage))

    def discard_hooks(self, *hooks: Callable[[], None]) -> None:
        """Forget stop and teardown hooks that are no longer needed."""
        for hook in hooks:
            for hooks_list in (self._stop_hooks, self._teardown_hooks):
                if hook in hooks_list:
                    hooks_list.remove(hook)

    def rpc(
        self, method: str, params: Mapping[str, Any] | None = None, timeout: float = 60.0
    ) -> Any:
        """Call an SPDK JSON-RPC method in-process and return its result (RpcError on error).

        No rpc_socket needed: see pyspdk_sys.rpc for how. Not on the SPDK thread.
        """
        return provided("rpc")(self).call(method, params, timeout)

    async def arpc(
        self, method: str, params: Mapping[str, Any] | None = None, timeout: float = 60.0
    ) -> Any:
        """asyncio form of rpc()."""
        return await provided("rpc")(self).acall(method, params, timeout)

    def open_bdev(self, name: str, **options: Any) -> Any:
        """Open the block device `name` (see pyspdk_sys.bdev.BlockDevice)."""
        return provided("open_bdev")(self, name, **options)

    def _run_teardown_hooks(self) -> None:
        _run_in_order(self._teardown_hooks[::-1], "teardown")
        _run_in_order([r.on_teardown for r in self._resources_by("TEARDOWN_STAGE")], "teardown")

    def _mark_polled_cpus(self, polled: bool) -> None:
        """Tell adaptive waits which CPUs reactors busy-poll, so they do not spin there.

        This runtime's cores, and other SPDK processes' as their core locks show
        at start; unmarked again when the runtime's app returns. Reactors in
        interrupt mode sleep when idle: their cores are left unmarked.
        """
        if polled and self.interrupt_mode:
            return
        if polled:
            self._polled_cpus = sorted({*self.options.cores, *all_held_cores()})
        for cpu in self._polled_cpus:
            lib.pyspdk_mark_polled_cpu(cpu, polled)
        if not polled:
            self._polled_cpus = []

    # ------------------------------------------------------------ SPDK thread side

    def _run_app(self) -> None:
        """On the host thread: spdk_app_start blocks here until the app stops."""
        self._handle = ffi.new_handle(self)
        _callbacks.work_owner = self
        rc = -1
        self._mark_polled_cpus(True)
        try:
            rc = lib.spdk_app_start(self._opts, lib.pyspdk_app_started, self._handle)
            self._run_teardown_hooks()
            lib.spdk_app_fini()
            # spdk_app_fini closed SPDK's log and DPDK's stream: keep what comes later.
            lib.pyspdk_log_install(ffi.NULL)
        finally:
            self._mark_polled_cpus(False)
            self._rc = rc
            self._after_app_returned()

    def _on_app_started(self) -> None:
        # See _app_opts: the requested level applies from here on.
        lib.spdk_log_set_print_level(_LOG_LEVELS[self.log_level])
        self.app_thread = lib.spdk_get_thread()
        self._poller = lib.pyspdk_work_poller_register()
        if self.interrupt_mode:
            # SPDK's iSCSI target would keep the reactors busy (intr.c).
            rc = lib.pyspdk_intr_quiet()
            if rc != 0:
                _callbacks.log.warning(f"pyspdk_sys: iSCSI pollers stay busy (rc {rc})")
        with self._lock:
            stop_requested = self.state is State.STOPPING
            if not stop_requested:
                self.state = State.RUNNING
        if stop_requested:
            self._shutdown_on_spdk_thread()
        self._started.set()

    def _drain(self) -> None:
        work = self._work
        while work:
            future, fn, args = work.popleft()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args)
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)

    def _shutdown_on_spdk_thread(self) -> None:
        _run_in_order(self._stop_hooks[::-1], "stop")
        _run_in_order([r.on_stop for r in self._resources_by("STOP_STAGE")], "stop")
        if self.interrupt_mode:
            lib.pyspdk_intr_stop()
        if self._poller is not None:
            poller = ffi.new("struct spdk_poller **", self._poller)
            lib.pyspdk_work_poller_unregister(poller)
            self._poller = None
        lib.spdk_app_stop(0)

    def _after_app_returned(self) -> None:
        global _ACTIVE
        with self._lock:
            failed = self.state is State.STARTING or (
                self.state is State.STOPPING and not self._started.is_set()
            )
            self.state = State.FAILED if failed else State.STOPPED
            leftovers = list(self._work)
            self._work.clear()
        for future, _fn, _args in leftovers:
            if future.set_running_or_notify_cancel():
                future.set_exception(RuntimeStateError("the SPDK runtime stopped before this ran"))
        if _callbacks.work_owner is self:
            _callbacks.work_owner = None
        self._handle = None  # the start callback's handle: SPDK holds it no longer
        self.app_thread = ffi.NULL
        self._forget_opts()
        # DPDK leaves its runtime directory behind; nothing else of this process uses it.
        shutil.rmtree(dpdk_runtime_dir(os.getpid()), ignore_errors=True)
        with _ACTIVE_LOCK:
            _ACTIVE = None
        self._started.set()
        self._returned.set()

    # ------------------------------------------------------------ options

    def _cstr(self, text: str) -> Any:
        value = ffi.new("char[]", text.encode())
        self._keepalive.append(value)
        return value

    def _app_opts(self) -> Any:
        opts = ffi.new("struct spdk_app_opts *")
        lib.spdk_app_opts_init(opts, ffi.sizeof("struct spdk_app_opts"))
        opts.name = self._cstr(self.name)
        # The cores as a list ("[0,2]"): SPDK hands DPDK a mask as "-c", which
        # DPDK 25.11 warns about at every start, and a list as "-l".
        opts.reactor_mask = self._cstr(self.options.core_list)
        opts.mem_size = self.mem_size_mb
        opts.no_huge = not self.hugepages
        # One file per memory segment list instead of one per page: a
        # virtio-user initiator (pyspdk_sys.vhost) shares its memory with the
        # target by passing these files' descriptors, at most 8 of them.
        opts.hugepage_single_segments = self.hugepages
        opts.no_pci = not self.pci
        if self.hugedir is not None:
            opts.hugedir = self._cstr(self.hugedir)
        opts.rpc_addr = self._cstr(self.rpc_socket) if self.rpc_socket else ffi.NULL
        # Above WARN with a console on stderr, spdk_app_start sleeps 10 s to
        # show a notice; start at WARN and apply log_level once started.
        opts.print_level = min(_LOG_LEVELS[self.log_level], lib.SPDK_LOG_WARN)
        # Embedded in a Python process: leave signals, core dumps, CPU core
        # lock files and the trace shared-memory file to the host program.
        opts.disable_signal_handlers = True
        opts.disable_cpumask_locks = True
        opts.enable_coredump = False
        opts.num_entries = 0
        opts.shm_id = -1
        opts.interrupt_mode = self.options.interrupt_mode
        if self._config is not None or self.small_pools:
            opts.json_config_file = self._cstr(self._write_config())
        self._keepalive.append(opts)
        return opts

    def _write_config(self) -> str:
        config = self._config
        if isinstance(config, Path):
            if not self.small_pools:
                return str(config)
            config = json.loads(config.read_text())
        if self.small_pools:
            config = with_defaults(config, self.mem_size_mb)
        fd, path = tempfile.mkstemp(prefix="pyspdk-config-", suffix=".json")
        with os.fdopen(fd, "w") as out:
            json.dump(config, out)
        self._config_file = path
        return path


def _run_in_order(hooks: Iterable[Callable[[], None]], kind: str) -> None:
    """Run hooks in order; one that fails is logged and the rest still run."""
    for hook in hooks:
        try:
            hook()
        except Exception:
            _callbacks.log.exception(f"pyspdk_sys: {kind} hook failed")


@atexit.register
def _stop_at_exit() -> None:
    runtime = _ACTIVE
    if runtime is not None:
        try:
            runtime.stop(timeout=30)
        except Exception:
            _callbacks.log.exception("pyspdk_sys: SPDK did not stop cleanly at exit")
