"""pyspdk_sys.ublk on this host: argument checks and the errors when ublk cannot work.

The ublk round trips themselves need a kernel with ublk_drv; they run in a
QEMU guest (tests/test_ublk_guest.py).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from conftest import require_tool, skip_or_fail


def test_arguments_are_checked_before_the_kernel(runtime: Any) -> None:
    from pyspdk_sys import ublk

    with pytest.raises(TypeError, match="Runtime or an SpdkProcess"):
        ublk.create_target(object())
    with pytest.raises(ValueError, match="cpumask"):
        ublk.create_target(runtime, cpumask="all")
    with pytest.raises(ValueError, match="num_queues"):
        ublk.start_disk(runtime, "Malloc0", 0, num_queues=0)
    with pytest.raises(ValueError, match="num_queues"):
        ublk.start_disk(runtime, "Malloc0", 0, num_queues=ublk.MAX_QUEUES + 1)
    with pytest.raises(ValueError, match="queue_depth"):
        ublk.start_disk(runtime, "Malloc0", 0, queue_depth=4096)
    with pytest.raises(ValueError, match="ublk_id"):
        ublk.start_disk(runtime, "Malloc0", -1)
    with pytest.raises(TypeError, match="ublk_id"):
        ublk.stop_disk(runtime, "0")
    with pytest.raises(ValueError, match="bdev name"):
        ublk.start_disk(runtime, "", 0)
    # Listing needs no kernel driver: SPDK has no target, so no disks.
    assert ublk.get_disks(runtime) == []
    assert ublk.get_disks(runtime, 3) == []


def test_no_driver_is_a_clear_error(
    runtime: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without /dev/ublk-control (here a path that does not exist stands for it, so the
    test runs on a kernel with ublk too), every call that needs the driver says so."""
    from pyspdk_sys import ublk
    from pyspdk_sys.errors import UblkUnavailableError

    monkeypatch.setattr(ublk, "CONTROL", tmp_path / "ublk-control")
    with pytest.raises(UblkUnavailableError, match="ublk-control") as info:
        ublk.create_target(runtime)
    assert "no_driver" in info.value.reasons
    with pytest.raises(UblkUnavailableError):
        ublk.start_disk(runtime, "Malloc0", 0)
    with pytest.raises(UblkUnavailableError):
        ublk.recover_disk(runtime, "Malloc0", 0)
    # Nothing reached SPDK: no target was created.
    assert ublk.get_disks(runtime) == []


@pytest.mark.usefixtures("spdk")
def test_without_cap_sys_admin_the_error_says_so() -> None:
    code = textwrap.dedent(
        """
        from pyspdk_sys import ublk
        from pyspdk_sys.errors import UblkUnavailableError
        try:
            ublk.check_available()
        except UblkUnavailableError as exc:
            print(",".join(exc.reasons), "|", exc)
        else:
            print("available")
        """
    )
    drop = [require_tool("setpriv"), "--bounding-set=-sys_admin", "--inh-caps=-sys_admin"]
    result = subprocess.run(
        [*drop, sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd="/"
    )
    if result.returncode != 0 and "setpriv" in result.stderr:
        skip_or_fail(f"cannot drop CAP_SYS_ADMIN here: {result.stderr.strip()}")
    assert result.returncode == 0, result.stderr
    reasons, _, message = result.stdout.partition("|")
    assert "not_privileged" in reasons.strip().split(",")
    assert "CAP_SYS_ADMIN" in message
