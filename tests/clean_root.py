"""Install the wheel where SPDK was never built: the clean Debian root that
tests/root/prepare.sh caches, or another CPython of this machine.

The root is used through an overlay in a private mount namespace, so no test
writes into the cache: pip installs into the overlay, which goes when the
namespace does. /proc, /sys and /dev (with /dev/hugepages) come from the host.
Where the root or the other CPython is missing, the tests skip and say how to
get it; PYSPDK_REQUIRE_ROOTFS=1 (.ci/run sets it) turns that skip into a failure.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOTFS_DIR = Path(os.environ.get("PYSPDK_ROOTFS_DIR", "/var/cache/pyspdk-root"))
REQUIRE_ROOTFS = os.environ.get("PYSPDK_REQUIRE_ROOTFS", "") not in ("", "0")
HERE = Path(__file__).resolve().parent
PREPARE = HERE / "root" / "prepare.sh"
CHECKS = HERE / "root" / "wheel_checks.py"
# The CPythons, besides the root's 3.11, that prepare.sh fetches cffi for: a
# newer one, and the oldest that requires-python admits (the wheel's abi3 floor).
NEWER_PYTHONS = ("3.13", "3.12")
OLDEST_PYTHONS = ("3.10",)

# What a manylinux wheel may take from the system rather than carry: glibc,
# the GCC runtime and the few others the manylinux policies list (sonames).
MANYLINUX_SONAMES = frozenset(
    {
        "ld-linux-x86-64.so.2",
        "libc.so.6",
        "libm.so.6",
        "libmvec.so.1",
        "libdl.so.2",
        "librt.so.1",
        "libpthread.so.0",
        "libutil.so.1",
        "libnsl.so.1",
        "libanl.so.1",
        "libresolv.so.2",
        "libatomic.so.1",
        "libgcc_s.so.1",
        "libstdc++.so.6",
        "libz.so.1",
        "libexpat.so.1",
    }
)


def skip_or_fail(reason: str) -> None:
    """Skip, or fail when PYSPDK_REQUIRE_ROOTFS=1 says the wheel must be proven here."""
    if REQUIRE_ROOTFS:
        pytest.fail(f"PYSPDK_REQUIRE_ROOTFS=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def cffi_wheels() -> Path:
    return ROOTFS_DIR / "wheels"


def missing() -> str | None:
    """Why the clean root cannot be used here, or None."""
    if os.geteuid() != 0:
        return "the clean root needs root (chroot and mounts)"
    for path in (ROOTFS_DIR / "stamp", ROOTFS_DIR / "rootfs" / "usr" / "bin" / "python3"):
        if not path.exists():
            return (
                f"the clean root is not prepared ({path} is missing): run {PREPARE} "
                "(or set PYSPDK_ROOTFS_DIR)"
            )
    if shutil.which("unshare") is None:
        return "unshare is not installed (util-linux)"
    return None


def is_manylinux(path: str) -> bool:
    """The file is one of MANYLINUX_SONAMES, or a versioned name of one (libstdc++.so.6.0.30)."""
    name = os.path.basename(path)
    return any(re.fullmatch(re.escape(soname) + r"(\.\d+)*", name) for soname in MANYLINUX_SONAMES)


def foreign_libraries(report: dict[str, Any], site: str) -> list[str]:
    """Mapped ELF files that are neither the wheel's, nor cffi's (the one dependency,
    from its own wheel), nor in the manylinux set, nor the interpreter's own (what it
    maps without pyspdk_sys, with the same standard-library modules imported)."""
    own = tuple(os.path.join(site, d) + os.sep for d in ("pyspdk_sys", "pyspdk_sys.libs"))
    cffi = (os.path.join(site, "_cffi_backend"), os.path.join(site, "cffi.libs") + os.sep)
    interpreter = set(report["baseline"])
    return [
        path
        for path in report["mapped"]
        if not path.startswith(own + cffi) and not is_manylinux(path) and path not in interpreter
    ]


@dataclass
class RootRun:
    steps: dict[str, tuple[int, str]]  # step -> (exit status, output)
    seconds: float


# Steps run in the root, in order, each with a clean environment; a failed step stops.
ROOT_STEPS = (
    (
        "install",
        "python3 -m pip install --no-index --find-links /pyspdk-test/wheels "
        "--break-system-packages --disable-pip-version-check --no-warn-script-location "
        "--root-user-action=ignore /pyspdk-test/{wheel}",
    ),
    ("info", "cd / && python3 -m pyspdk_sys"),
    ("checks", "cd / && python3 /pyspdk-test/wheel_checks.py"),
)


def run_in_root(wheel: Path, scratch: Path, timeout: float = 240) -> RootRun:
    """Install the wheel in an overlay of the clean root and run ROOT_STEPS there."""
    import time

    merged = scratch / "merged"
    for name in ("upper", "work", "merged", "out"):
        (scratch / name).mkdir(parents=True)
    env = "/usr/bin/env -i PATH=/usr/bin:/bin HOME=/root LANG=C.UTF-8"
    lines = [
        "set -eu",
        f"mount -t overlay overlay -o lowerdir={ROOTFS_DIR / 'rootfs'},"
        f"upperdir={scratch / 'upper'},workdir={scratch / 'work'} {merged}",
        f"mount -t proc proc {merged}/proc",
        f"mount --rbind /sys {merged}/sys",
        f"mount --rbind /dev {merged}/dev",
        f"mount -t tmpfs tmpfs {merged}/tmp",
        f"mkdir -p {merged}/pyspdk-test/wheels",
        f"cp {cffi_wheels()}/*.whl {merged}/pyspdk-test/wheels/",
        f"cp {shlex.quote(str(wheel))} {CHECKS} {merged}/pyspdk-test/",
    ]
    for step, command in ROOT_STEPS:
        command = command.format(wheel=shlex.quote(wheel.name))
        out = scratch / "out" / step
        lines.append(
            f"chroot {merged} {env} sh -c {shlex.quote(command)} >{out}.txt 2>&1 "
            f"&& echo 0 >{out}.rc || {{ echo $? >{out}.rc; exit 0; }}"
        )
    started = time.monotonic()
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "bash", "-c", "\n".join(lines)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=scratch,
    )
    seconds = time.monotonic() - started
    assert done.returncode == 0, f"setting up the root failed:\n{done.stdout}\n{done.stderr}"
    steps = {}
    for step, _ in ROOT_STEPS:
        rc = scratch / "out" / f"{step}.rc"
        if rc.exists():
            steps[step] = (int(rc.read_text()), (scratch / "out" / f"{step}.txt").read_text())
    return RootRun(steps, seconds)


def last_json(output: str) -> dict[str, Any]:
    lines = [line for line in output.splitlines() if line.startswith("{")]
    assert lines, f"no JSON report in:\n{output[-4000:]}"
    report: dict[str, Any] = json.loads(lines[-1])
    return report


def other_python(versions: tuple[str, ...], variable: str) -> Path | None:
    """Another CPython to install the same wheel into: the one $variable names, else
    the first of `versions` on PATH, else pyenv's."""
    given = os.environ.get(variable)
    if given:
        return Path(given)
    for version in versions:
        found = shutil.which(f"python{version}")
        if found and _runs(found):
            return Path(found)
    try:
        root = subprocess.run(
            ["pyenv", "root"], capture_output=True, text=True, timeout=30, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    for version in versions:
        candidates = sorted(
            glob.glob(os.path.join(root, "versions", f"{version}.*", "bin", f"python{version}")),
            key=lambda p: [int(x) for x in re.findall(r"\d+", p.rsplit("versions", 1)[1])],
        )
        for candidate in reversed(candidates):
            if _runs(candidate):
                return Path(candidate)
    return None


def _runs(python: str) -> bool:
    try:
        done = subprocess.run([python, "-c", "pass"], capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0
