"""`python -m pyspdk_sys`: inspect the fat library, manage hugepages, serve SPDK.

- `info` (the default): the loaded fat library and every registration made
  at load time. Needs no root, no hugepages and no running SPDK application.
- `hugepages [--reserve N]`: the kernel's hugepage pools and mounts; reserving
  and mounting need root.
- `serve`: an SPDK target hosted by this Python process in the foreground
  (an in-process Runtime), managed over its RPC socket by SPDK's own tools;
  SIGINT or SIGTERM stop it cleanly. With the fat library no spdk_tgt is needed.
- `devices`: this machine's NVMe controllers (PCI address, ids, driver, the
  kernel's disks and what uses them), as SPDK's setup.sh status shows them.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from types import FrameType

from . import BUILD_INFO, DPDK_VERSION, LIBRARY_PATH, SPDK_VERSION, __version__, registry

COMMANDS = ("info", "hugepages", "serve", "devices")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pyspdk_sys",
        description="Inspect the SPDK fat library, manage hugepages, serve SPDK in the "
        "foreground. Without a command: info.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"pyspdk_sys {__version__} (SPDK {SPDK_VERSION}, DPDK {DPDK_VERSION})",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    info = commands.add_parser(
        "info",
        help="the loaded fat library and its registrations (the default)",
        description="Show the loaded SPDK fat library and every registration made at load time.",
    )
    info.add_argument("--list", action="store_true", help="list the names, not only counts")
    info.add_argument("--json", action="store_true", help="print JSON (always with names)")
    info.add_argument(
        "--kind",
        action="append",
        choices=registry.KIND_KEYS,
        metavar="KIND",
        help=f"only this kind (repeatable): {', '.join(registry.KIND_KEYS)}",
    )

    huge = commands.add_parser(
        "hugepages",
        help="hugepage pools and mounts; reserve more (root)",
        description="Show the kernel's hugepage pools and hugetlbfs mounts. --reserve makes "
        "sure at least N pages are reserved (never fewer than now) and mounts hugetlbfs "
        "where no mount serves that page size. Reserving and mounting need root.",
    )
    huge.add_argument("--reserve", type=int, metavar="N", help="pages to have reserved")
    huge.add_argument(
        "--page-size-kb", type=int, metavar="KB", help="page size (default: the kernel's)"
    )
    huge.add_argument(
        "--mount-point",
        default=None,
        metavar="PATH",
        help="where to mount hugetlbfs if needed (default: /dev/hugepages)",
    )
    huge.add_argument("--json", action="store_true", help="print JSON")

    serve = commands.add_parser(
        "serve",
        help="run an SPDK target in this process until SIGINT or SIGTERM",
        description="Run SPDK in this Python process (an in-process Runtime) with an RPC "
        "server on --rpc-socket, until SIGINT or SIGTERM (or the spdk_kill_instance RPC). "
        "Manage it with spdk-rpc -s PATH or spdk.rpc.client.JSONRPCClient.",
    )
    serve.add_argument("--rpc-socket", required=True, metavar="PATH", help="RPC socket path")
    serve.add_argument("--config", metavar="FILE", help="SPDK JSON config to load at start")
    serve.add_argument("--cpu-mask", default="0x1", help="reactor core mask (default 0x1)")
    serve.add_argument(
        "--mem-size-mb", type=int, default=1024, help="memory for SPDK in MiB (default 1024)"
    )
    serve.add_argument(
        "--log-level",
        default="WARNING",
        choices=("ERROR", "WARNING", "NOTICE", "INFO", "DEBUG"),
        help="SPDK log print level (default WARNING)",
    )
    serve.add_argument("--hugepages", action="store_true", help="use hugepages (reserve first)")
    serve.add_argument("--hugedir", metavar="DIR", help="hugetlbfs mount to use (--hugepages)")
    serve.add_argument("--name", default="pyspdk", help="SPDK application name")
    serve.add_argument(
        "--interrupt-mode",
        action="store_true",
        help="reactors sleep when idle instead of busy-polling their cores",
    )
    serve.add_argument(
        "--start-timeout", type=float, default=120.0, help="seconds to wait for SPDK to start"
    )

    devices = commands.add_parser(
        "devices",
        help="NVMe controllers: PCI address, ids, driver, what uses them",
        description="List this machine's NVMe controllers (PCI class 01:08:02) with their "
        "vendor:device ids, NUMA node, current driver, the kernel's disks of their "
        "namespaces and what uses them. pyspdk_sys.nvme.bind() hands one to a userspace "
        "driver for SPDK; unbind() gives it back.",
    )
    devices.add_argument("--json", action="store_true", help="print JSON")
    devices.add_argument(
        "--sysfs", default="/sys", metavar="DIR", help="sysfs to read (default /sys)"
    )
    devices.add_argument(
        "--proc", default="/proc", metavar="DIR", help="procfs to read (default /proc)"
    )
    # --help lists every command with all of its options, not only their names.
    parser.epilog = "\n".join(
        f"--- {name} ---\n{command.format_help()}" for name, command in commands.choices.items()
    )
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse argv; without a command (or with only info's options) the command is info."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or (args[0] not in COMMANDS and args[0] not in ("-h", "--help", "--version")):
        args.insert(0, "info")
    return build_parser().parse_args(args)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = {
        "hugepages": hugepages_command,
        "serve": serve_command,
        "devices": devices_command,
    }.get(args.command, info_command)
    try:
        status = command(args)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`... | head -1`): what it wanted, it has. Point
        # stdout at /dev/null so that the interpreter's own flush at exit is quiet.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 141  # as a shell reports a command ended by SIGPIPE
    return status


# ------------------------------------------------------------------ info


def info_command(args: argparse.Namespace) -> int:
    kinds = [registry.kind(key) for key in args.kind] if args.kind else list(registry.KINDS)
    found = {k.key: k.list_names() for k in kinds}
    if args.json:
        report = {
            "pyspdk_sys": __version__,
            "library": LIBRARY_PATH,
            "spdk_version": SPDK_VERSION,
            "dpdk_version": DPDK_VERSION,
            "build": BUILD_INFO,
            "registered": found,
        }
        json.dump(report, sys.stdout, indent=2)
        print()
        return 0
    print(f"pyspdk_sys {__version__}")
    print(f"library       {LIBRARY_PATH}")
    print(f"SPDK          {SPDK_VERSION}")
    print(f"DPDK          {DPDK_VERSION}")
    print(f"CPU baseline  {BUILD_INFO.get('cpu_baseline', '?')}")
    print("registered at load time:")
    for k in kinds:
        names = found[k.key]
        print(f"  {k.title:<22} {len(names):>4}   ({k.macro})")
        if args.list:
            for name in names:
                print(f"      {name}")
    return 0


# ------------------------------------------------------------------ hugepages


def hugepages_command(args: argparse.Namespace) -> int:
    from . import hugepages
    from .errors import HugepagesError

    try:
        if args.reserve is not None:
            hugepages.reserve(args.reserve, args.page_size_kb)
            if args.reserve > 0:
                hugepages.mount(
                    args.mount_point or hugepages.DEFAULT_MOUNT_POINT, args.page_size_kb
                )
        pools = hugepages.status()
    except (PermissionError, HugepagesError) as exc:
        print(f"python -m pyspdk_sys hugepages: {exc}", file=sys.stderr)
        return 1
    except (TypeError, ValueError) as exc:
        print(f"python -m pyspdk_sys hugepages: {exc}", file=sys.stderr)
        return 2
    if args.json:
        report = [
            {
                "size_kb": p.size_kb,
                "total": p.total,
                "free": p.free,
                "reserved": p.reserved,
                "surplus": p.surplus,
                "mounts": list(p.mounts),
            }
            for p in pools
        ]
        json.dump(report, sys.stdout, indent=2)
        print()
        return 0
    if not pools:
        print("this kernel offers no hugepages")
        return 0
    print(f"{'size':>5} {'total':>7} {'free':>7} {'reserved':>9} {'surplus':>8}  mounts")
    for p in pools:
        mounts = ", ".join(p.mounts) or "-"
        print(
            f"{p.size_label:>5} {p.total:>7} {p.free:>7} {p.reserved:>9} {p.surplus:>8}  {mounts}"
        )
    return 0


# ------------------------------------------------------------------ devices


def devices_command(args: argparse.Namespace) -> int:
    from . import nvme

    found = [
        (d, nvme.in_use(d.address, sysfs=args.sysfs, proc=args.proc))
        for d in nvme.list_devices(sysfs=args.sysfs)
    ]
    if args.json:
        report = [
            {
                "address": d.address,
                "vendor": f"{d.vendor:#06x}",
                "device": f"{d.device:#06x}",
                "driver": d.driver,
                "numa_node": d.numa_node,
                "iommu_group": d.iommu_group,
                "block_devices": list(d.block_devices),
                "in_use": users,
            }
            for d, users in found
        ]
        json.dump(report, sys.stdout, indent=2)
        print()
        return 0
    if not found:
        print("no NVMe controllers")
        return 0
    print(f"{'address':<13} {'ids':<9} {'numa':>4}  {'driver':<16} {'disks':<16} in use")
    for d, users in found:
        disks = ",".join(d.block_devices) or "-"
        print(
            f"{d.address:<13} {d.ids:<9} {d.numa_node:>4}  {d.driver or '-':<16} {disks:<16} "
            f"{'; '.join(users) or '-'}"
        )
    return 0


# ------------------------------------------------------------------ serve


def serve_command(args: argparse.Namespace) -> int:
    """Host SPDK here until a signal; exit 0 after a clean stop, 1 if SPDK failed."""
    from .errors import StartError
    from .runtime import Runtime, State

    prog = "python -m pyspdk_sys serve"
    try:
        runtime = Runtime(
            mem_size_mb=args.mem_size_mb,
            hugepages=args.hugepages,
            hugedir=args.hugedir,
            cpu_mask=args.cpu_mask,
            rpc_socket=args.rpc_socket,
            log_level=args.log_level,
            config=args.config,
            name=args.name,
            interrupt_mode=args.interrupt_mode,
            # A server's console shows SPDK's log, as spdk_tgt's does.
            log_to_stderr=True,
        )
    except (TypeError, ValueError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2

    # Runtime leaves signals to its host (disable_signal_handlers): here, the
    # main thread waits on an Event that the handler sets; a signal interrupts
    # that wait, the handler runs, and the wait returns.
    stop = threading.Event()
    received: list[str] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        received.append(signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            runtime.start(timeout=args.start_timeout)
        except (StartError, TimeoutError) as exc:
            print(f"{prog}: {exc}", file=sys.stderr)
            runtime.stop()
            return 1
        print(
            f"{prog}: SPDK {SPDK_VERSION} running in pid {os.getpid()}, RPC socket "
            f"{runtime.rpc_socket}; stop with SIGINT or SIGTERM",
            flush=True,
        )
        while not stop.wait(1.0):
            if runtime.state is not State.RUNNING:
                break  # SPDK stopped by itself
        runtime.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    why = f"on {received[0]}" if received else "by itself"
    print(f"{prog}: SPDK stopped {why}", flush=True)
    return 0 if runtime.state is State.STOPPED else 1


if __name__ == "__main__":
    sys.exit(main())
