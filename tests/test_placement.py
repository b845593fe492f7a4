"""CPU placement: a core another SPDK process holds is reported before a reactor goes there."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import Any

import pytest

from conftest import run_python

# Holds SPDK's lock for one core, as spdk_tgt does, until its stdin closes.
HOLDER = textwrap.dedent(
    """
    import fcntl, os, sys
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    print("held", flush=True)
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

    core = 1
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, LOCK_PATH.format(core)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        if holder.stdout.readline().strip() != "held":
            pytest.skip(f"core {core}'s SPDK lock is held by another program already")
        assert held_cores("0x3") == {core: holder.pid}
        assert held_cores("0x1") == {}
        code = f"""
import warnings
from pyspdk_sys.placement import CoreSharingWarning
from pyspdk_sys.runtime import Runtime
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    with Runtime(cpu_mask="0x2", name="placement-test"):
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
