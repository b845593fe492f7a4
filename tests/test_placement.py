"""CPU placement: a core another SPDK process holds is reported before a reactor goes there."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from conftest import run_python, skip_or_fail

# Holds SPDK's lock for the first core of argv[2:] it can lock, as spdk_tgt does,
# until its stdin closes; prints "held N", or "busy" when another program holds
# every one. Anything else it prints (a traceback) is a failure of the test.
HOLDER = textwrap.dedent(
    """
    import fcntl, os, sys
    for core in sys.argv[2:]:
        fd = os.open(sys.argv[1].format(int(core)), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except (BlockingIOError, PermissionError):
            os.close(fd)
            continue
        print("held", core, flush=True)
        break
    else:
        print("busy", flush=True)
    sys.stdin.read()
    """
)


def test_cores_of_reads_both_mask_forms(spdk: Any) -> None:
    from pyspdk_sys.placement import cores_of

    assert cores_of("0x5") == [0, 2]
    assert cores_of("[0, 2-3]") == [0, 2, 3]
    with pytest.raises(ValueError, match="CPU mask"):
        cores_of("5")
    with pytest.raises(ValueError, match="range"):
        cores_of("[3-1]")


def test_held_core_is_reported_and_runtime_warns(spdk: Any) -> None:
    from pyspdk_sys.placement import LOCK_PATH, held_cores

    cores = sorted(os.sched_getaffinity(0))
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, LOCK_PATH, *map(str, cores)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        said = holder.stdout.readline().split()
        if said == ["busy"]:
            skip_or_fail(f"another program holds the SPDK lock of every core of {cores}")
        if said[:1] != ["held"]:
            holder.stdin.close()  # type: ignore[union-attr]
            holder.wait(10)
            pytest.fail(f"the lock holder failed (rc {holder.returncode}): {holder.stderr.read()}")
        core = int(said[1])
        assert held_cores(hex(sum(1 << c for c in cores)))[core] == holder.pid
        assert held_cores(hex(1 << core)) == {core: holder.pid}
        code = f"""
import warnings
from pyspdk_sys.placement import CoreSharingWarning
from pyspdk_sys.runtime import Runtime
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    with Runtime(cpu_mask="{hex(1 << core)}", name="placement-test"):
        pass
found = [w for w in caught if issubclass(w.category, CoreSharingWarning)]
assert len(found) == 1, caught
assert "core {core} by pid {holder.pid}" in str(found[0].message), found[0].message
print("warned")
"""
        result = run_python(code)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "warned" in result.stdout
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(10)
    # Released with its holder: the core is no longer reported.
    assert held_cores(hex(1 << core)) == {}
