"""Options of an SPDK application, checked once for Runtime, SpdkProcess and the CLI.

An SPDK application in this process (Runtime) and one in its own process
(SpdkProcess) take the same options. They are checked here, at construction,
with errors that name the parameter and the value; then turned into what
each needs: `spdk_app_opts` fields (runtime.py) or spdk_tgt's argv (argv()).

interrupt_mode makes reactors sleep on file descriptors when idle instead of
busy-polling a core. SPDK allows it only when every poller can wake on an
event, so the config then also picks what can: INTERRUPT_DEFAULTS.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._checks import check_bool, check_config, check_int, check_local_cpu_mask, mask_of

__all__ = ["INTERRUPT_DEFAULTS", "LOG_LEVELS", "AppOptions", "dpdk_runtime_dir"]

LOG_LEVELS = ("ERROR", "WARNING", "NOTICE", "INFO", "DEBUG")
"""Values of log_level, as SPDK's log_set_print_level RPC names them."""

MAX_MEM_SIZE_MB = 1 << 30  # far beyond any machine; spdk_app_opts.mem_size is an int

INTERRUPT_DEFAULTS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    # The uring sock implementation, SPDK's default where io_uring works,
    # cannot wake a reactor ("Interrupt mode is not supported in the uring
    # sock implementation"); posix can (its sock groups are epoll sets).
    ("sock", "sock_set_default_impl", {"impl_name": "posix"}),
)
"""(subsystem, method, params) added to the config of an interrupt-mode
application, each unless the config calls that method itself."""


def with_interrupt_defaults(config: Any) -> dict[str, Any]:
    """A checked config (None, dict or Path) with INTERRUPT_DEFAULTS added, as a dict."""
    if isinstance(config, Path):
        config = json.loads(config.read_text())
    merged: dict[str, Any] = dict(config or {})
    subsystems = [dict(s) for s in merged.get("subsystems") or []]
    called = {
        entry.get("method")
        for subsystem in subsystems
        for entry in subsystem.get("config") or []
        if isinstance(entry, dict)
    }
    for name, method, params in INTERRUPT_DEFAULTS:
        if method in called:
            continue
        entry = {"method": method, "params": dict(params)}
        for subsystem in subsystems:
            if subsystem.get("subsystem") == name:
                subsystem["config"] = [entry, *(subsystem.get("config") or [])]
                break
        else:
            subsystems.append({"subsystem": name, "config": [entry]})
    merged["subsystems"] = subsystems
    return merged


@dataclass(frozen=True)
class AppOptions:
    """What both kinds of SPDK application are started with, already checked.

    cores: the reactor cores of cpu_mask, each one that this machine has.
    config: None, a JSON-ready dict, or the absolute Path of a JSON file.
    """

    mem_size_mb: int
    hugepages: bool
    hugedir: str | None
    pci: bool
    cpu_mask: str
    cores: tuple[int, ...]
    log_level: str
    config: Any
    interrupt_mode: bool = False
    log_to_stderr: bool = False

    @classmethod
    def check(
        cls,
        *,
        mem_size_mb: Any = 1024,
        hugepages: Any = False,
        hugedir: Any = None,
        pci: Any = False,
        cpu_mask: Any = "0x1",
        log_level: Any = "WARNING",
        config: Mapping[str, Any] | str | os.PathLike[str] | None = None,
        interrupt_mode: Any = False,
        log_to_stderr: Any = False,
    ) -> AppOptions:
        """The options, or TypeError/ValueError naming the first one that is wrong."""
        check_int("mem_size_mb", mem_size_mb, 1, MAX_MEM_SIZE_MB)
        check_bool("hugepages", hugepages)
        check_bool("pci", pci)
        check_bool("interrupt_mode", interrupt_mode)
        check_bool("log_to_stderr", log_to_stderr)
        cores = check_local_cpu_mask("cpu_mask", cpu_mask)
        if log_level not in LOG_LEVELS:
            raise ValueError(f"log_level must be one of {', '.join(LOG_LEVELS)}, not {log_level!r}")
        if pci and not hugepages:
            raise ValueError("pci=True needs hugepages=True: devices DMA into hugepage memory")
        if hugedir is not None:
            if not isinstance(hugedir, (str, os.PathLike)):
                raise TypeError(f"hugedir must be a path or None, not {type(hugedir).__name__}")
            if not hugepages:
                raise ValueError("hugedir needs hugepages=True")
            if not Path(hugedir).is_dir():
                raise ValueError(f"hugedir {os.fspath(hugedir)!r} is not a directory")
            hugedir = os.fspath(hugedir)
        config = check_config(config)
        if interrupt_mode:
            config = with_interrupt_defaults(config)
        return cls(
            mem_size_mb=mem_size_mb,
            hugepages=hugepages,
            hugedir=hugedir,
            pci=pci,
            cpu_mask=cpu_mask,
            cores=cores,
            log_level=log_level,
            config=config,
            interrupt_mode=interrupt_mode,
            log_to_stderr=log_to_stderr,
        )

    @property
    def reactor_mask(self) -> str:
        """The mask SPDK is handed: hexadecimal, whichever form the caller wrote."""
        return mask_of(self.cores)

    @property
    def core_list(self) -> str:
        """The cores as SPDK's list form, "[0,2]": SPDK gives it to DPDK as "-l"."""
        return "[" + ",".join(str(core) for core in self.cores) + "]"

    def argv(self, rpc_socket: str, config_path: str | None) -> list[str]:
        """spdk_tgt's options for these settings (without the binary and extra args)."""
        # The cores as a list: DPDK 25.11 warns at every start about a mask.
        argv = ["-m", self.core_list, "-s", str(self.mem_size_mb)]
        if not self.hugepages:
            argv.append("--no-huge")
        else:
            # One file per memory segment list, as a Runtime on hugepages: a
            # vhost-user initiator shares its memory through those files.
            argv.append("--single-file-segments")
        if self.hugedir is not None:
            argv += ["--huge-dir", self.hugedir]
        if not self.pci:
            argv.append("--no-pci")
        argv += ["-r", rpc_socket]
        if config_path is not None:
            argv += ["--json", config_path]
        if self.log_level in ("ERROR", "WARNING"):
            argv.append("--silence-noticelog")
        if self.interrupt_mode:
            argv.append("--interrupt-mode")
        return argv


def dpdk_runtime_dir(pid: int) -> str:
    """DPDK's runtime directory of the SPDK application in process `pid`.

    SPDK names DPDK's file prefix spdk_pid<pid> (shm_id -1), and DPDK leaves
    that directory behind when the application ends: its owner removes it.
    """
    base = (
        "/var/run/dpdk"
        if os.geteuid() == 0
        else os.path.join(os.environ.get("XDG_RUNTIME_DIR", "/tmp"), "dpdk")
    )
    return os.path.join(base, f"spdk_pid{pid}")
