"""`python -m pyspdk_sys`: show the loaded fat library and what registered in it.

Needs no root, no hugepages and no running SPDK application.
"""

from __future__ import annotations

import argparse
import json
import sys

from . import BUILD_INFO, DPDK_VERSION, LIBRARY_PATH, SPDK_VERSION, __version__, registry


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m pyspdk_sys",
        description="Show the loaded SPDK fat library and every registration made at load time.",
    )
    parser.add_argument("--list", action="store_true", help="list the names, not only counts")
    parser.add_argument("--json", action="store_true", help="print JSON (always with names)")
    parser.add_argument(
        "--kind",
        action="append",
        choices=registry.KIND_KEYS,
        metavar="KIND",
        help=f"only this kind (repeatable): {', '.join(registry.KIND_KEYS)}",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(main())
