"""pyspdk_sys.hugepages against this machine's kernel: read, reserve, mount, refuse.

Reading needs nothing. Reserving and mounting need root: those tests skip
without it (not an SPDK skip; CI runs as root). The machine may be shared, so
nothing here lowers a pool: reserving leaves 1024 pages of the default size
(2 GiB with 2 MiB pages), which vhost tests need anyway. Mounting a new point
happens in a private mount namespace, so it works whatever is mounted. The
non-root cases run in a subprocess as the unprivileged user 65534, not as a
mock, keeping only the capability to read files (CAP_DAC_READ_SEARCH), so that
an interpreter in a private directory still loads.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import pytest
from processes import no_core_dumps  # noqa: F401 (an autouse fixture: no core files)

from conftest import PROJECT_DIR, skip_or_fail

RESERVE = 1024

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="reserving and mounting need root")


def meminfo(name: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    raise KeyError(name)


def test_status_matches_the_kernel(spdk: Any) -> None:
    from pyspdk_sys import hugepages

    pools = {p.size_kb: p for p in hugepages.status()}
    default = hugepages.default_size_kb()
    assert default == meminfo("Hugepagesize")
    assert default in pools
    counts = ("HugePages_Total", "HugePages_Free", "HugePages_Rsvd", "HugePages_Surp")
    for _ in range(50):  # other processes take and free pages: compare a quiet moment
        before = [meminfo(name) for name in counts]
        pool = hugepages.page_size()
        if before == [meminfo(name) for name in counts]:
            break
    assert [pool.total, pool.free, pool.reserved, pool.surplus] == before
    assert pool.size_kb == pools[default].size_kb and pool.mounts == pools[default].mounts
    assert pool.size_label == {2048: "2M", 1048576: "1G"}.get(default, pool.size_label)
    mounts = hugepages.hugetlbfs_mounts()
    for p in pools.values():
        assert set(p.mounts) == {m for m, size in mounts.items() if size == p.size_kb}


def test_bad_arguments(spdk: Any) -> None:
    from pyspdk_sys import hugepages

    with pytest.raises(ValueError, match="count"):
        hugepages.reserve(-1)
    with pytest.raises(TypeError, match="count"):
        hugepages.reserve("8")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="size_kb 3 is not a hugepage size"):
        hugepages.reserve(8, size_kb=3)
    with pytest.raises(ValueError, match="not a hugetlbfs mount point"):
        hugepages.unmount("/")


@needs_root
def test_reserve_never_lowers_and_mounts(spdk: Any) -> None:
    from pyspdk_sys import hugepages

    pool = hugepages.reserve(RESERVE)
    assert pool.total >= RESERVE
    assert hugepages.page_size().total == pool.total
    assert hugepages.reserve(1).total == pool.total  # never lowered
    point = hugepages.mount()
    assert point in hugepages.page_size().mounts
    assert hugepages.mount() == point  # an existing mount is reused


@needs_root
def test_cli_reserve(spdk: Any) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pyspdk_sys", "hugepages", "--reserve", str(RESERVE), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=PROJECT_DIR / "tests",
    )
    assert result.returncode == 0, result.stderr
    from pyspdk_sys import hugepages

    (pool,) = [p for p in json.loads(result.stdout) if p["size_kb"] == hugepages.default_size_kb()]
    assert pool["total"] >= RESERVE
    assert pool["mounts"]


@needs_root
def test_short_memory_changes_nothing(spdk: Any) -> None:
    from pyspdk_sys import hugepages
    from pyspdk_sys.errors import HugepagesError

    before = hugepages.page_size()
    too_many = before.total + meminfo("MemTotal") // before.size_kb + 1
    with pytest.raises(HugepagesError, match=r"only \d+ MiB of memory is available"):
        hugepages.reserve(too_many)
    assert hugepages.page_size().total == before.total


@needs_root
def test_mount_and_unmount_a_new_point(spdk: Any, tmp_path: Path) -> None:
    """In a mount namespace of its own, where the size's existing mounts are taken away
    first: mount() makes a new point there, unmount() removes it; the host sees nothing."""
    from pyspdk_sys import hugepages

    before = hugepages.hugetlbfs_mounts()
    point = str(tmp_path / "huge")
    code = textwrap.dedent(f"""
        import json
        from pyspdk_sys import hugepages
        size = hugepages.default_size_kb()
        for old in [m for m, s in hugepages.hugetlbfs_mounts().items() if s == size]:
            hugepages.unmount(old)  # in this namespace only
        found = {{"gone": hugepages.page_size(size).mounts}}
        found["mounted"] = hugepages.mount({point!r}, size_kb=size)
        found["mounts"] = hugepages.hugetlbfs_mounts()
        found["listed"] = {point!r} in hugepages.page_size(size).mounts
        found["again"] = hugepages.mount("/nonexistent", size_kb=size)  # reused
        hugepages.unmount({point!r})
        found["after"] = hugepages.hugetlbfs_mounts()
        print(json.dumps(found))
    """)
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=PROJECT_DIR / "tests",
    )
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    size = hugepages.default_size_kb()
    assert found["gone"] == []
    assert found["mounted"] == point and found["again"] == point
    assert found["mounts"][point] == size and found["listed"]
    assert point not in found["after"]
    assert hugepages.hugetlbfs_mounts() == before  # the host's mounts never changed


@needs_root
def test_non_root_gets_permission_error(spdk: Any, request: pytest.FixtureRequest) -> None:
    from pyspdk_sys import hugepages

    target = hugepages.page_size().total + 1
    point = Path(tempfile.mkdtemp(prefix="pyspdk-huge-"))  # reachable by user 65534
    point.chmod(0o755)
    request.addfinalizer(lambda: point.rmdir())
    code = textwrap.dedent(f"""
        import json
        from pyspdk_sys import hugepages
        found = {{"status": len(hugepages.status())}}
        for name, call in (("reserve", lambda: hugepages.reserve({target})),
                           ("mount", lambda: hugepages.mount({str(point)!r}, size_kb=1048576))):
            try:
                call()
                found[name] = "no error"
            except PermissionError as exc:
                found[name] = "PermissionError: " + str(exc)
        print(json.dumps(found))
    """)
    # User 65534 keeps CAP_DAC_READ_SEARCH only: the interpreter and package may sit in a
    # directory only root may read (CI's virtual environment, for one).
    as_nobody = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all,+dac_read_search",
        "--ambient-caps=+dac_read_search",
        sys.executable,
    ]
    probe = subprocess.run(
        [*as_nobody, "-c", "import os, pyspdk_sys; print(os.geteuid())"],
        capture_output=True,
        text=True,
        cwd="/",
        timeout=60,
    )
    assert (probe.returncode, probe.stdout.strip()) == (0, "65534"), probe.stderr
    result = subprocess.run(
        [*as_nobody, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd="/",
    )
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["status"] == len(hugepages.status())
    assert found["reserve"].startswith("PermissionError: [Errno 13] reserving hugepages needs root")
    assert found["mount"].startswith("PermissionError: [Errno 1] mounting hugetlbfs")
    assert "needs root" in found["mount"]
    assert hugepages.page_size().total == target - 1
    cli = subprocess.run(
        [*as_nobody, "-m", "pyspdk_sys", "hugepages", "--reserve", str(target)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd="/",
    )
    assert cli.returncode == 1
    assert "needs root" in cli.stderr


@needs_root
def test_spdk_process_on_hugepages(spdk: Any) -> None:
    """spdk_tgt on hugepage memory: it takes pages while it runs and gives them back."""
    from processes import assert_same_release, new_process

    from pyspdk_sys import hugepages

    from conftest import spdk_tool

    spdk_tgt = spdk_tool("spdk_tgt")
    pool = hugepages.reserve(RESERVE)
    mem_mb = 256  # a quarter of the pool: other programs may hold some of it
    pages = mem_mb * 1024 // pool.size_kb
    if pool.available < pages:
        skip_or_fail(f"only {pool.available} free hugepages: another program uses the rest")
    point = hugepages.mount()
    with new_process(spdk_tgt, hugepages=True, hugedir=point, mem_size_mb=mem_mb) as process:
        assert "--no-huge" not in process.command()
        assert_same_release(process.rpc("spdk_get_version")["version"])
        pid = process.pid
        # The process's own count, not the machine's free count: other programs
        # (earlier tests' processes still exiting) take and give back pages meanwhile.
        assert _hugetlb_kb(pid) >= pages * pool.size_kb
        files = sorted(Path(point).glob(f"spdk_pid{pid}map_*"))
        assert files, f"no hugepage files of pid {pid} in {point}"
    assert not [path for path in files if path.exists()], "spdk_tgt left its hugepage files"


def _hugetlb_kb(pid: int) -> int:
    """The hugetlb memory a process maps, from its /proc status (kB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("HugetlbPages:"):
            return int(line.split()[1])
    raise AssertionError(f"/proc/{pid}/status has no HugetlbPages line")


def test_reclaim_removes_only_dead_processes_unlocked_files(spdk: Any, tmp_path: Path) -> None:
    """A killed SPDK process's hugepage files are removed; a live or locked one's never."""
    import fcntl

    from pyspdk_sys import hugepages

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"spdk_pid{dead.pid}map_0"
    live = tmp_path / f"spdk_pid{os.getpid()}map_0"
    locked = tmp_path / f"spdk_pid{dead.pid}map_1"
    unrelated = tmp_path / f"other_pid{dead.pid}map_0"
    for path in (stale, live, locked, unrelated):
        path.write_bytes(b"")
    with open(locked, "rb") as holder:
        fcntl.flock(holder, fcntl.LOCK_SH)  # as DPDK holds the files it maps
        removed = hugepages.reclaim_stale_files(tmp_path)
    assert removed == [str(stale)]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in (live, locked, unrelated)
    )
