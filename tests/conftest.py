"""Test policy: SPDK tests run wherever the fat library is installed.

Where pyspdk_sys cannot be imported (no fat library), those tests skip with
the reason; PYSPDK_REQUIRE_SPDK=1 turns each such skip into a failure.
SPDK starts once per process (pyspdk_sys.runtime.RESTART_REFUSED), so the
in-process tests share one session runtime; tests that start or stop SPDK
themselves run it in a subprocess.

Where reactors run is decided in one place, cores.py (the session runtime on
the first CPU, every reactor a test starts elsewhere on cores.reactor_mask());
how long a test may wait is decided in timing.py (correctness bounds, or a
bound from a baseline the test measures first).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cores import SESSION_MASK

PROJECT_DIR = Path(__file__).resolve().parents[1]
REQUIRE_SPDK = os.environ.get("PYSPDK_REQUIRE_SPDK", "") not in ("", "0")

# A run started in the background by a shell without job control (`cmd &` in a
# script) inherits SIGINT ignored, and so would every interpreter the tests
# start: their Ctrl-C tests would send SIGINT into the void ('completed'
# instead of 'interrupted'). A handled signal is reset to the default at exec,
# an ignored one is not: so handle it here, and every child gets Python's
# KeyboardInterrupt again.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def skip_or_fail(reason: str) -> None:
    """Skip, or fail when PYSPDK_REQUIRE_SPDK=1 says SPDK must be exercised."""
    if REQUIRE_SPDK:
        pytest.fail(f"PYSPDK_REQUIRE_SPDK=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def require_tool(name: str) -> str:
    """The path of a command a test needs: a skip where it is missing, a failure under
    PYSPDK_REQUIRE_SPDK=1 (CI installs every one of them)."""
    path = shutil.which(name)
    if path is None:
        skip_or_fail(f"{name} is not installed")
    assert path is not None
    return path


def ensure_hugepages(mb: int) -> None:
    """Free 2 MiB hugepages for `mb` MiB (and some spare) and a hugetlbfs mount, reserved
    and mounted here as root; else skip, or fail under PYSPDK_REQUIRE_SPDK=1."""
    from pyspdk_sys import hugepages

    pool = hugepages.page_size()
    needed = mb * 1024 // pool.size_kb + 64
    if pool.available < needed and os.geteuid() == 0:
        pool = hugepages.reserve(pool.total + needed - pool.available)
    if not pool.mounts and os.geteuid() == 0:
        hugepages.mount()
        pool = hugepages.page_size()
    if pool.available < needed or not pool.mounts:
        skip_or_fail(
            f"vhost-user initiators need {needed} free hugepages and a hugetlbfs mount; "
            f"{pool.available} are free, mounts {list(pool.mounts)} (run as root to reserve)"
        )


def _import_error() -> str | None:
    try:
        import pyspdk_sys  # noqa: F401
    except ImportError as exc:
        return str(exc)
    return None


@pytest.fixture(scope="session")
def spdk() -> Any:
    """The pyspdk_sys package, or a skip saying why it is not usable here."""
    error = _import_error()
    if error is not None:
        skip_or_fail(f"pyspdk_sys is not importable (no fat library installed?): {error}")
    import pyspdk_sys

    return pyspdk_sys


@pytest.fixture(scope="session")
def short_tmp() -> Iterator[Path]:
    """A short directory for Unix sockets (sun_path holds 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="pyspdk-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def guest(spdk: Any) -> dict[str, dict[str, Any]]:
    """The QEMU guest's check results (tests/guest_vm.py): one boot for the session,
    running the ublk and the NVMe checks. Without a prepared guest: a skip saying
    how to prepare it, or a failure under PYSPDK_REQUIRE_GUEST=1."""
    import guest_vm

    reason = guest_vm.missing()
    if reason is not None:
        if guest_vm.REQUIRE_GUEST:
            pytest.fail(f"PYSPDK_REQUIRE_GUEST=1 but {reason}", pytrace=False)
        pytest.skip(reason)
    # The guest imports the pyspdk_sys this process imported (its directory is
    # shared with the guest), wherever that comes from.
    where = str(Path(spdk.__file__).resolve().parents[1])
    boot, results = guest_vm.run_checks(where)
    if boot.rc is None:
        pytest.fail(
            f"the guest did not run the checks ({boot.attempts} boots, {boot.seconds:.0f} s); "
            f"serial log:\n{boot.serial[-4000:]}",
            pytrace=False,
        )
    results["_boot"] = {"seconds": boot.seconds, "attempts": boot.attempts, "output": boot.output}
    print(f"guest: {boot.attempts} boot(s), {boot.seconds:.1f} s in all")
    return results


def guest_check(guest: dict[str, dict[str, Any]], name: str) -> str:
    """The detail of the guest's check `name`, which must have run and passed."""
    found = guest.get(name)
    assert found is not None, f"check {name} did not run; guest output:\n{guest['_boot']['output']}"
    assert found["ok"], found["detail"]
    print(f"{name}: {found['seconds']} s: {found['detail']}")
    return str(found["detail"])


@pytest.fixture(scope="session")
def runtime(spdk: Any, short_tmp: Path) -> Iterator[Any]:
    """SPDK running in this test process, with an RPC socket, for the whole session.

    Its reactor polls SESSION_MASK's core; reactors the tests start in other
    processes go elsewhere (cores.reactor_mask: the placement policy)."""
    from pyspdk_sys.runtime import Runtime

    rt = Runtime(
        cpu_mask=SESSION_MASK,
        rpc_socket=short_tmp / "spdk.sock",
        mem_size_mb=1024,
        name="pyspdk-tests",
    )
    rt.start()
    yield rt
    rt.stop()


def run_threads(
    work: Callable[[int], None], count: int, timeout: float | None = 120
) -> list[BaseException]:
    """Run work(0) .. work(count - 1) on threads at once; what they raised.

    A thread still running after `timeout` seconds (None: no limit) fails the
    test: a hang must not pass.
    """
    errors: list[BaseException] = []

    def guarded(index: int) -> None:
        try:
            work(index)
        except BaseException as exc:  # handed to the test
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    assert not any(thread.is_alive() for thread in threads), "a thread did not finish"
    return errors


def wait_until(condition: Callable[[], object], what: str, timeout: float = 30) -> None:
    """Wait for a state, not for a time: poll condition() until it holds; a test
    failure naming `what` if it does not within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"never: {what} (waited {timeout} s)")
        time.sleep(0.005)


def run_python(code: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """Run code in a fresh interpreter, so a crash or a hang fails a test, not the run."""
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=PROJECT_DIR / "tests",
    )


def spdk_tool(name: str) -> Path:
    """A reference tool build.sh installed (spdk_tgt, bdevperf), or skip/fail."""
    variable = f"PYSPDK_{name.upper()}"
    if os.environ.get(variable):
        return Path(os.environ[variable])
    try:
        toolsdir = subprocess.run(
            ["pkg-config", "--variable=toolsdir", "spdk_fat"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        toolsdir = ""
    path = Path(toolsdir) / name
    if not toolsdir or not path.is_file():
        skip_or_fail(f"{name} not found (build.sh installs it, or set {variable})")
    return path


@pytest.fixture(scope="session")
def rpc(runtime: Any) -> Any:
    """Call an RPC method of the session runtime (through its public socket)."""
    try:
        from spdk.rpc.client import JSONRPCClient
    except ImportError:
        skip_or_fail("the official SPDK client is not installed (pip install 'spdk==26.1.*')")
    client = JSONRPCClient(runtime.rpc_socket)

    def call(method: str, params: dict[str, Any] | None = None) -> Any:
        return client.call(method, params or {})

    yield call
    client.close()


_names = iter(range(1_000_000))


@pytest.fixture
def malloc(rpc: Any) -> Iterator[str]:
    """A fresh 16 MiB malloc bdev (512-byte blocks), deleted afterwards."""
    name = f"Malloc{next(_names)}"
    rpc("bdev_malloc_create", {"name": name, "num_blocks": 32768, "block_size": 512})
    yield name
    rpc("bdev_malloc_delete", {"name": name})


@pytest.fixture(scope="session")
def manylinux_wheel(spdk: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The manylinux wheel of `build.sh wheel` against the library the suite tests.

    Built once per session from a copy of the project; PYSPDK_WHEEL names one
    already built (.ci/run builds it once per library), which must carry that
    same library.
    """
    from wheel_build import build_wheel, wheel_names

    given = os.environ.get("PYSPDK_WHEEL", "")
    if not given:
        return build_wheel(tmp_path_factory.mktemp("wheel"))
    wheel = Path(given)
    library = Path(os.path.realpath(spdk.LIBRARY_PATH)).name
    if not wheel.is_file() or f"pyspdk_sys/_lib/{library}" not in wheel_names(wheel):
        pytest.fail(f"PYSPDK_WHEEL={given} is not a wheel carrying {library}", pytrace=False)
    return wheel
